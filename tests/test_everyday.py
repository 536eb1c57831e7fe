"""Everyday use: a repeated run says it was reused and --force trains it again; folder names show the init's
parameters."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from initbench.cli import main
from initbench.plan import RunSpec

TINY = ["--dataset", "digits", "--model", "mlp(hidden=[16])", "--epochs", "1", "--limit-train", "128",
        "--limit-val", "64", "--limit-test", "64", "--accelerator", "cpu", "--no-progress"]


def test_a_complete_run_is_said_to_be_reused_and_force_trains_it_again(tmp_path, capsys):
    out = ["--out", str(tmp_path)]
    assert main(["run", *TINY, *out]) == 0
    first = capsys.readouterr().out
    record = next(tmp_path.glob("digits_mlp/kaiming_normal-seed0-*"))
    assert main(["run", *TINY, *out]) == 0
    again = capsys.readouterr().out
    assert again.startswith("already complete (recorded ") and str(record) in again.splitlines()[0]
    assert "nothing was trained; --force trains it again" in again and "already" not in first
    before = (record / "summary.json").stat().st_mtime_ns
    assert main(["run", *TINY, *out, "--force"]) == 0
    assert "already complete" not in capsys.readouterr().out
    assert (record / "summary.json").stat().st_mtime_ns > before  # the same folder, a new record
    assert [p.name for p in tmp_path.glob("digits_mlp/*")] == [record.name]
    assert not list(tmp_path.glob("digits_mlp/.*"))  # no staging folder or lock left


@pytest.mark.parametrize(("init", "name"), [
    ("normal(std=0.02)", "normal_std-0.02-seed0-"),
    ("normal(std=1)", "normal-seed0-"),
    ("kaiming_uniform(mode=fan_out)", "kaiming_uniform_mode-fan_out-seed0-"),
    ("sparse(fallback=normal(std=0.5))", "sparse_fallback-normal-std-0.5-seed0-"),
    ("kaiming_normal(rules={'fc.*': zeros})", "kaiming_normal+rules-seed0-"),
])
def test_folder_names_show_the_init_and_its_parameters(init, name):
    spec = RunSpec(init=init)
    assert spec.name == name + spec.run_id[:8]


def test_a_sweep_without_a_terminal_prints_one_line_per_run(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "name: s\ndatasets: [digits]\nmodels: ['mlp(hidden=[16])']\ninits: [kaiming_normal, zeros]\nseeds: 2\n"
        "train: {epochs: 1, limit_train: 128, limit_val: 64, limit_test: 64, accelerator: cpu}\n")
    initbench = Path(sys.executable).parent / "initbench"
    done = subprocess.run([str(initbench), "sweep", tmp_path / "s.yaml", "--out", tmp_path / "out", "--no-report"],
                          capture_output=True, text=True)  # stdout and stderr are pipes, not a terminal
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()[:4]
    for i, line in enumerate(lines, 1):
        assert re.fullmatch(rf"\[{i}/4\] digits_mlp\(hidden=\[16\]\) (kaiming_normal|zeros) seed [01]: "
                            r"(ok|collapsed) val 0\.\d{3} \(\d+\.\d s\)", line), line
    assert "it/s" not in done.stderr and "run/s" not in done.stderr  # no progress bar in a log


def test_a_single_run_bar_shows_epoch_of_total_loss_and_validation_accuracy(tmp_path):
    initbench = Path(sys.executable).parent / "initbench"
    args = [a for a in TINY if a != "--no-progress"] + ["--epochs", "2", "--limit-train", "512"]
    done = subprocess.run([str(initbench), "run", *args, "--out", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    frames = done.stdout.replace("\r", "\n")  # Lightning draws its bars on stdout
    assert re.search(r"epoch 2/2: .*step=\d+, loss=\d+\.\d{3}, val acc=0\.\d{3}", frames), frames[-500:]
