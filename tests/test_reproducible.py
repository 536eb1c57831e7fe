"""Same command, same records: a study trained twice on this machine, the second time beside a process that burns a
core, gives byte-identical curves, the same summaries (timings aside) and the same ranking."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd

from initbench.cli import main
from initbench.record import TIMINGS

STUDY = textwrap.dedent("""
    name: twice
    datasets: [digits]
    models: ['mlp(hidden=[32])', 'simplecnn(channels=[4, 8], fc=[16])']
    inits: [kaiming_normal, orthogonal, xavier_uniform]
    seeds: 2
    tune: {lr: [0.01, 0.1], seeds: [100]}
    train: {epochs: 1, batch_size: 64, limit_train: 512, limit_val: 128, limit_test: 128, accelerator: cpu}
""")


def _records(out):
    records = {}
    for summary in sorted(out.glob("*/*/summary.json")):
        run = summary.parent
        numbers = {k: v for k, v in json.loads(summary.read_text()).items() if k not in TIMINGS}
        config = json.loads((run / "config.json").read_text())
        records[run.relative_to(out).as_posix()] = ((run / "metrics.csv").read_bytes(), numbers,
                                                    config.get("engine"), config.get("lockstep_mode"))
    return records


def test_a_study_trained_twice_once_beside_a_busy_core_gives_the_same_records(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text(STUDY)
    assert main(["sweep", str(path), "--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    try:
        assert main(["sweep", str(path), "--out", str(tmp_path / "busy"), "--no-progress"]) == 0
    finally:
        os.killpg(burner.pid, signal.SIGKILL)
        burner.wait()
    quiet, busy = _records(tmp_path / "quiet"), _records(tmp_path / "busy")
    assert len(quiet) == 2 * 3 * (2 + 2) and quiet.keys() == busy.keys()  # tuning (2 lrs) and comparison runs
    assert {engine for _, _, engine, _ in quiet.values()} == {"lockstep"}
    for run in quiet:
        assert quiet[run] == busy[run], run
    columns = ["problem", "init", "lr", "n", "mean", "delta", "p_holm", "verdict"]
    rankings = [pd.read_csv(tmp_path / d / "ranking.csv")[columns] for d in ("quiet", "busy")]
    pd.testing.assert_frame_equal(*rankings)
