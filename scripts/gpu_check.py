"""make gpu-check: the GPU path checked and measured in one short script, run from the source tree with the packages
the machine already has (no pip, no venv: the repository root goes on the import path). Prints one Markdown table
ready for the README: the `gpu` tests, training throughput through initbench against the plain PyTorch loop (MLP
and SimpleCNN on CIFAR-shaped tensors), and lockstep groups (MLP x12 and x60, SimpleCNN x16) against the same runs
one by one, with the device, peak memory and the bound the device's matmul peak puts on any lockstep speedup; and
whether torch.compile speeds up a large group's step (the engine runs eager; a later change would adopt compiling only
where this row shows a gain).

    python3 scripts/gpu_check.py          # on a machine with CUDA, under 8 minutes
    python3 scripts/gpu_check.py --cpu    # the same at toy sizes on the CPU, skipping what needs CUDA (the suite
                                          # runs this form, so the script cannot rot between GPU loans)

Exit 0 when every check ran and the tests passed (a figure below its target is said in the table, not an error);
exit 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # initbench from this source tree

# What each figure is measured on and aims at: (model, K, target) for lockstep; initbench within 5% of the loop.
LOCKSTEP = {"gpu": [("mlp", 12, None), ("mlp", 60, 10.0), ("simplecnn", 16, 4.0)],
            "cpu": [("mlp", 3, None), ("simplecnn", 2, None)]}
SIZES = {"gpu": {"bench_steps": {"mlp": 1000, "simplecnn": 300}, "repeats": 3, "lockstep_steps": 200,
                 "lockstep_repeats": 1, "peak_size": 2048},
         "cpu": {"bench_steps": {"mlp": 20, "simplecnn": 4}, "repeats": 1, "lockstep_steps": 4,
                 "lockstep_repeats": 1, "peak_size": 512}}
# torch.compile on a large group's step (model, K, passes, backend): worth adopting only where this shows a gain. The
# CPU form traces the same step with the eager backend (no C++ compiler needed), so the code path cannot rot.
COMPILE_GAIN = 1.05  # a gain beyond the noise of one interleaved measurement
COMPILE = {"gpu": ("simplecnn", 16, 100, "inductor"), "cpu": ("mlp", 3, 4, "eager")}
RATIO_TARGET = 0.95


def cifar_shaped() -> dict[str, Any]:
    """10,000 random 3x32x32 images in 10 classes (1,024 with GPU_CHECK_SMALL=1): CIFAR-10's shapes, no files."""
    import torch

    n = 1024 if os.environ.get("GPU_CHECK_SMALL") else 10_000
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n + 512, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    y = torch.randint(0, 10, (n + 512,), generator=g)
    return {"x_train": x[:n], "y_train": y[:n], "x_test": x[n:], "y_test": y[n:]}


DATASET = "gpu_check:cifar_shaped"


def gpu_tests() -> tuple[str, bool]:
    """`pytest -m gpu tests/test_gpu.py` in a fresh process: ('N passed', all passed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                           "tests/test_gpu.py"], cwd=ROOT, env=env, capture_output=True, text=True)
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-200:]
    summary = re.sub(r"=+", "", tail).strip()
    return summary, done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="toy sizes on the CPU, skipping what needs CUDA")
    args = parser.parse_args(argv)
    if args.cpu:
        os.environ["GPU_CHECK_SMALL"] = "1"
    import torch

    from initbench.bench import bench, bench_lockstep, compile_gain
    from initbench.train.trainer import use_threads

    kind = "cpu" if args.cpu else "gpu"
    if kind == "gpu" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; run `python3 scripts/gpu_check.py --cpu` for the CPU form",
              file=sys.stderr)
        return 1
    if kind == "cpu":
        use_threads(1)  # toy sizes: one thread, the same figures whatever the machine's load
    device = torch.cuda.get_device_name(0) if kind == "gpu" else "CPU"
    sizes, rows, ok, start = SIZES[kind], [], True, time.perf_counter()
    accelerator = "gpu" if kind == "gpu" else "cpu"
    if kind == "gpu":
        summary, passed = gpu_tests()
        ok &= passed
        rows.append(("`pytest -m gpu` (run, divergence, vmap group with a diverging member, bf16-mixed, bit-equal "
                     "reruns, tuning sweep)", summary, "all pass", "ok" if passed else "**FAILED**"))
    else:
        rows.append(("`pytest -m gpu`", "skipped: needs CUDA", "all pass", "-"))
    for model in ("mlp", "simplecnn"):
        (r,) = bench([model], DATASET, sizes["bench_steps"][model], sizes["repeats"], 128, accelerator)
        met = r["ratio"] >= RATIO_TARGET
        rows.append((f"{r['model']}: initbench / plain loop ({r['steps']} steps, batch 128)",
                     f"{r['ratio']:.3f} ({r['ratio_min']:.3f}-{r['ratio_max']:.3f}); {r['initbench_img_s']:,.0f} "
                     f"against {r['plain_img_s']:,.0f} img/s", f">= {RATIO_TARGET}", "met" if met else "below"))
    peaks = []
    for model, k, target in LOCKSTEP[kind]:
        r = bench_lockstep(model, DATASET, k, sizes["lockstep_steps"], sizes["lockstep_repeats"], 128, accelerator,
                           peak_size=sizes["peak_size"])
        floor = r["step_flops"] * r["steps"] / r["matmul_peak"]
        bound = r["sequential_s"] / floor if floor else float("nan")
        if r["peak_mib"] is not None:
            peaks.append(r["peak_mib"])
        memory = f"; peak {r['peak_mib']:,.0f} MiB" if r["peak_mib"] is not None else ""
        rows.append((f"{model} x{k} in lockstep ({r['mode']}) / one by one ({r['steps']} steps)",
                     f"{r['speedup']:.2f}x; {r['lockstep_s']:.2f} s against {r['sequential_s']:.2f} s{memory}; "
                     f"bound {bound:.1f}x", f">= {target:g}x" if target else "-",
                     "-" if target is None else "met" if r["speedup"] >= target else "below"))
    model, k, passes, backend = COMPILE[kind]
    try:
        r = compile_gain(model, DATASET, k, passes, sizes["lockstep_repeats"] + 1, 128, accelerator, backend)
        figure = (f"{r['gain']:.2f}x ({r['mode']}, batch 128); {r['compiled_s']:.3f} s against {r['eager_s']:.3f} s; "
                  f"the first 3 passes, compile included, {r['compile_s']:.0f} s")
        verdict = "-" if kind == "cpu" else "gain" if r["gain"] >= COMPILE_GAIN else "no gain"  # cpu: a trace only
    except Exception as exc:  # a compiler that cannot take the step is a finding, not a crash of the check
        figure, verdict = f"failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}", "failed"
    rows.append((f"{model} x{k} lockstep forward and backward, torch.compile ({backend}) / eager ({passes} passes)",
                 figure, f">= {COMPILE_GAIN}x to adopt it" if kind == "gpu" else "-", verdict))
    when = datetime.date.today().isoformat()
    torch_version = torch.__version__
    print(f"GPU check, {when}: {device}, torch {torch_version}"
          + (f", peak GPU memory {max(peaks):,.0f} MiB" if peaks else "")
          + f", {time.perf_counter() - start:.0f} s\n")
    print("| check | figure | target | |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
