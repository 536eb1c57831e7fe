"""The GPU code paths, each test run on the CPU in every suite (so it cannot rot between GPU loans) and on CUDA with
`pytest -m gpu` (make gpu-check; never in CI, which has no GPU): a run, a divergence, a lockstep group in vmap mode
with a diverging member, bf16-mixed, two identical runs bit-equal, a sweep with a tuning stage, no host reads of the
device's values beyond the logged points."""

import dataclasses
import json
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from initbench.cli import main
from initbench.execute.units import claim_and_run_group, run
from initbench.spec import RunSpec

DEVICES = [pytest.param("gpu", marks=pytest.mark.gpu), "cpu"]
TIMING = ("wall_time_s", "images_per_s", "train_time_s")


def _device(accelerator: str) -> str:
    if accelerator == "gpu":
        assert torch.cuda.is_available(), "the gpu marker is for machines with CUDA"
        return "cuda"
    return "cpu"


@pytest.mark.parametrize("accelerator", DEVICES)
def test_a_run_trains_and_records_its_device(accelerator, tiny_spec, tmp_path):
    device = _device(accelerator)
    run_dir, summary = run(tiny_spec(model="simplecnn", accelerator=accelerator, init="lsuv"), tmp_path,
                           progress=False)
    assert summary["status"] == "ok" and summary["test_acc"] > 0.2
    recorded = json.loads((run_dir / "config.json").read_text())["device"]
    assert recorded.startswith(device) and (device == "cpu" or "cudnn deterministic" in recorded)


@pytest.mark.parametrize("accelerator", DEVICES)
def test_divergence_is_found(accelerator, tiny_spec, tmp_path):
    _device(accelerator)
    _, summary = run(tiny_spec(init="normal(std=100)", lr=1e8, accelerator=accelerator), tmp_path, progress=False)
    assert summary["status"] == "diverged" and summary["diverged_step"] >= 0


@pytest.mark.parametrize("accelerator", DEVICES)
def test_a_vmap_group_keeps_its_diverging_member_apart(accelerator, tmp_path):
    """Identity-activation MLPs at lr 1e6: kaiming_normal diverges, zeros and normal(std=0) do not; trained as one
    vmap group, the survivors' records match their runs trained alone."""
    _device(accelerator)
    wild = dict(model="mlp(hidden=[8], activation=identity)", dataset="digits", epochs=2, batch_size=32,
                limit_train=256, limit_val=64, limit_test=64, accelerator=accelerator, log_every=4, lr=1e6)
    survivors = [RunSpec(init=i, **wild) for i in ("zeros", "normal(std=0.0)")]
    diverging = RunSpec(init="kaiming_normal", **wild)
    group = claim_and_run_group([survivors[0], diverging, survivors[1]], tmp_path / "group", progress=False,
                                lockstep_mode="vmap")
    outcome = {spec.init: (summary["status"], path) for spec, path, summary, _ in group}
    assert outcome["kaiming_normal"][0] == "diverged"
    assert json.loads((outcome["zeros"][1] / "config.json").read_text())["lockstep_mode"] == "vmap"
    for spec in survivors:
        _, alone = run(spec, tmp_path / "alone", progress=False)
        assert outcome[spec.init][0] == alone["status"] != "diverged"
        together = pd.read_csv(outcome[spec.init][1] / "metrics.csv")
        single = pd.read_csv(next((tmp_path / "alone").glob(f"*/{spec.name}")) / "metrics.csv")
        assert together["train/loss"].to_numpy() == pytest.approx(single["train/loss"].to_numpy(), rel=1e-4,
                                                                     nan_ok=True)


@pytest.mark.parametrize("accelerator", DEVICES)
def test_bf16_mixed_trains_and_is_recorded(accelerator, tiny_spec, tmp_path):
    _device(accelerator)
    run_dir, summary = run(tiny_spec(accelerator=accelerator, precision="bf16-mixed", lr=0.1), tmp_path,
                           progress=False)
    assert summary["status"] == "ok" and summary["val_acc_final"] > 0.3
    assert json.loads((run_dir / "config.json").read_text())["spec"]["precision"] == "bf16-mixed"


@pytest.mark.parametrize("accelerator", DEVICES)
def test_two_identical_runs_are_bit_equal(accelerator, tiny_spec, tmp_path):
    _device(accelerator)
    spec = tiny_spec(model="simplecnn", accelerator=accelerator)
    (first, a), (second, b) = (run(spec, tmp_path / name, progress=False) for name in ("a", "b"))
    assert (first / "metrics.csv").read_bytes() == (second / "metrics.csv").read_bytes()
    assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}


@pytest.mark.parametrize("accelerator", DEVICES)
def test_a_sweep_with_a_tuning_stage(accelerator, tmp_path, capsys):
    _device(accelerator)
    path = tmp_path / "tuned.yaml"
    path.write_text(textwrap.dedent(f"""
        name: tuned
        datasets: [digits]
        models: ['mlp(hidden=[16])']
        inits: [kaiming_normal, xavier_uniform]
        seeds: 2
        tune: {{lr: [0.03, 0.3], seeds: [100]}}
        train: {{epochs: 1, batch_size: 64, limit_train: 256, limit_val: 64, limit_test: 64,
                accelerator: {accelerator}}}
    """))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--no-progress"]) == 0
    assert "report:" in capsys.readouterr().out
    tuning = pd.read_csv(out / "tuning.csv")
    assert len(tuning) == 2 and set(tuning["lr"]) <= {0.03, 0.3} and set(tuning["tuning_runs"]) == {"2/2"}
    assert len(list(Path(out).glob("*/*/summary.json"))) == 4 + 4  # 2 inits x 2 lrs to tune, 2 x 2 seeds


class HostReads(torch.overrides.TorchFunctionMode):
    """Counts every read of a tensor's value by the host (item, tolist, bool, float, int, numpy): on CUDA each one waits
    for the device."""

    READS = frozenset({torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
                       torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.__format__,
                       torch.Tensor.__repr__})

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += func in self.READS
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("engine", ["sequential", "lockstep"])
@pytest.mark.parametrize("accelerator", DEVICES)
def test_training_reads_from_the_device_only_where_it_logs(accelerator, engine, tmp_path):
    """The same run for 6 and for 14 steps, logged at step 0 and at the last step only (validation too): the host
    reads tensor values as often in both, so no training step, evaluation batch or norm reading waits for the device
    (on CUDA, torch's sync debug mode counts the synchronizing calls too)."""
    device = _device(accelerator)
    counts = []
    for steps in (6, 14):
        spec = RunSpec(dataset="digits", model="simplecnn(channels=[4, 8], fc=[16])", epochs=1, max_steps=steps,
                       batch_size=16, limit_train=256, limit_val=64, limit_test=64, log_every=100,
                       accelerator=accelerator)
        out = tmp_path / f"{steps}"
        with warnings.catch_warnings(record=True) as caught, HostReads() as reads:
            warnings.simplefilter("always")
            if device == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            try:
                if engine == "lockstep":
                    group = [spec, dataclasses.replace(spec, init="orthogonal")]
                    ((_, path, summary, _), _) = claim_and_run_group(group, out, progress=False,
                                                                      note=pytest.fail)  # no fallback to one by one
                    assert json.loads((path / "config.json").read_text())["engine"] == "lockstep"
                else:
                    _, summary = run(spec, out, progress=False)
            finally:
                if device == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
        assert summary["steps"] == steps
        syncs = sum("synchroniz" in str(w.message) for w in caught)
        counts.append((reads.count, syncs))
    assert counts[0][0] > 0 and counts[0] == counts[1], counts


def test_the_gpu_check_runs_in_its_cpu_form():
    """make gpu-check's script at toy sizes on the CPU, as a fresh process from the source tree: its table has every
    row, each with a figure."""
    done = subprocess.run([sys.executable, "scripts/gpu_check.py", "--cpu"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("GPU check, ") and ": CPU, torch " in lines[0]
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| check")]
    assert [r.split(" | ")[0] for r in rows] == [
        "| `pytest -m gpu`", "| mlp: initbench / plain loop (20 steps, batch 128)",
        "| simplecnn: initbench / plain loop (4 steps, batch 128)",
        "| mlp x3 in lockstep (vmap) / one by one (4 steps)",
        "| simplecnn x2 in lockstep (loop) / one by one (4 steps)",
        "| mlp x3 lockstep forward and backward, torch.compile (eager) / eager (4 passes)"]
    assert all(re.search(r"\d", r.split(" | ")[1]) for r in rows[1:])
    assert "skipped: needs CUDA" in rows[0] and "failed" not in rows[-1]
