"""How fast the `initbench` command answers: wall time of each command as a user types it, in fresh processes,
interleaved round-robin (the machine's load hits every command alike); prints median and range per command.

    python scripts/cli_times.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = [
    ["--help"],
    ["run", "--help"],
    ["sweep", "--help"],
    ["list", "inits"],
    ["list", "models"],
    ["list", "datasets"],
    ["run", "--init", "kaiming_nromal", "--dataset", "digits"],  # a typo: refused
    ["run", "--model", "mlp(hiden=[8])", "--dataset", "digits"],  # a wrong model parameter: refused
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    exe = shutil.which("initbench") or str(Path(sys.executable).parent / "initbench")
    times: dict[int, list[float]] = {i: [] for i in range(len(COMMANDS))}
    codes: dict[int, int] = {}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeats):
            for i, argv in enumerate(COMMANDS):
                full = [exe, *argv] + (["--out", out] if argv[0] == "run" and "--help" not in argv else [])
                start = time.perf_counter()
                codes[i] = subprocess.run(full, capture_output=True).returncode
                times[i].append(time.perf_counter() - start)
    print(f"initbench command wall time, {args.repeats} fresh processes each, interleaved (s)")
    print(f"{'command':<56} {'median':>7} {'min':>7} {'max':>7}  exit")
    for i, argv in enumerate(COMMANDS):
        t, name = times[i], "initbench " + " ".join(argv)
        print(f"{name:<56} {statistics.median(t):7.3f} {min(t):7.3f} {max(t):7.3f}  {codes[i]}")


if __name__ == "__main__":
    main()
