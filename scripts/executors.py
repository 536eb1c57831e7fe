"""A whole sweep trained by each executor, interleaved: `--executor sequential` against `--executor ray` (a local Ray
on this machine's cores), each into a fresh results folder, as a user runs it; prints wall times, medians, ranges and
the ratio, and checks that both recorded the same runs.

    python scripts/executors.py [--sweep experiments/quickstart.yaml] [--repeats 2] [-- extra sweep flags]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXECUTORS = {"sequential": [], "ray": ["--executor", "ray"]}


def recorded(out: Path) -> dict[str, str]:
    """problem/run folder -> status, from the records' summaries."""
    return {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text())["status"]
            for p in out.glob("*/*/summary.json")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, default=Path("experiments/quickstart.yaml"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="more `initbench sweep` flags for both executors")
    args = parser.parse_args()
    exe = shutil.which("initbench") or str(Path(sys.executable).parent / "initbench")
    times: dict[str, list[float]] = {name: [] for name in EXECUTORS}
    runs: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = list(EXECUTORS) if repeat % 2 == 0 else list(reversed(EXECUTORS))  # neither always goes first
            for name in order:
                out = Path(tmp) / f"{name}-{repeat}"
                start = time.perf_counter()
                subprocess.run([exe, "sweep", str(args.sweep), "--out", str(out), "--no-progress", "--no-report",
                                *EXECUTORS[name], *args.extra], check=True, stdout=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - start)
                runs[name] = recorded(out)
                print(f"  {name:<10} repeat {repeat + 1}: {times[name][-1]:.1f} s, {len(runs[name])} runs", flush=True)
    same = runs["sequential"].keys() == runs["ray"].keys()
    agree = sum(runs["sequential"][k] == runs["ray"][k] for k in runs["sequential"].keys() & runs["ray"].keys())
    print(f"{args.sweep} ({len(runs['sequential'])} runs), {args.repeats} interleaved repeats:")
    for name, ts in times.items():
        print(f"  {name:<10} median {statistics.median(ts):.1f} s (range {min(ts):.1f}-{max(ts):.1f})")
    for run in sorted(k for k in runs["sequential"].keys() & runs["ray"].keys()
                      if runs["sequential"][k] != runs["ray"][k]):
        print(f"  status differs: {run}: sequential {runs['sequential'][run]}, ray {runs['ray'][run]}")
    ratio = statistics.median(times["sequential"]) / statistics.median(times["ray"])
    print(f"  ray speedup over sequential: {ratio:.2f}x; same run ids: {same}; same status: {agree}/"
          f"{len(runs['sequential'])}")


if __name__ == "__main__":
    main()
