"""Bad values are refused before any work (one line, exit 2, nothing written); what fails inside a run is
recorded and the sweep goes on; a run another process holds is left alone."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from initbench.cli import main

INITBENCH = Path(sys.executable).parent / "initbench"


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip()


RUN_CASES = {
    "negative std": (["--init", "normal(std=-1)"], "init 'normal': std must be >= 0, got -1.0"),
    "uniform a above b": (["--init", "uniform(a=1, b=0)"], "init 'uniform': needs a < b, got a=1.0, b=0.0"),
    "truncation bounds reversed": (["--init", "trunc_normal(a=2, b=-2)"], "init 'trunc_normal': needs a < b"),
    "negative scale": (["--init", "variance_scaling(scale=-1)"], "init 'variance_scaling': scale must be > 0"),
    "bad nested fallback": (["--init", "sparse(fallback=normal(std=-1))"],
                            "fallback of init 'sparse': init 'normal': std must be >= 0, got -1.0"),
    "duplicate key": (["--init", "normal(std=1, std=2)"], "'std' is given twice"),
    "sparsity above 1": (["--init", "sparse(sparsity=2)"], "init 'sparse': sparsity must be in [0, 1), got 2.0"),
    "lsuv tol 0": (["--init", "lsuv(tol=0)"], "init 'lsuv': tol must be > 0, got 0.0"),
    "bad rule value": (["--init", "kaiming_normal", "--init-rule", "*.bias=normal(std=-1)"],
                       "rule '*.bias' of init 'kaiming_normal': init 'normal': std must be >= 0"),
    "infinite lr": (["--lr", "inf"], "learning rate (lr) must be finite, got inf"),
    "zero lr": (["--lr", "0"], "learning rate (lr) must be positive, got 0.0"),
    "negative momentum": (["--momentum", "-1"], "momentum must be at least 0, got -1.0"),
    "momentum 1": (["--momentum", "1"], "momentum must be below 1, got 1.0"),
    "negative weight decay": (["--weight-decay", "-1"], "weight decay (weight_decay) must be at least 0, got -1.0"),
    "huge seed": (["--seed", "9223372036854775807"], "seed must be below 4294967296, got 9223372036854775807"),
    "negative seed": (["--data-seed", "-1"], "data seed must be at least 0, got -1"),
    "four devices": (["--devices", "4"], "devices must be auto or 1, got '4': initbench trains each run on one"),
    "val fraction 1": (["--val-fraction", "1"], "val fraction (val_fraction) must be below 1, got 1.0"),
    "bad precision": (["--precision", "8-true"], "unknown precision '8-true'"),
    "zero-width layer": (["--model", "simplecnn(channels=[0, 8])"],
                         "model 'simplecnn': channels must be a list of positive integers, got [0, 8]"),
    "negative width": (["--model", "mlp(hidden=[16, -1])"], "model 'mlp': hidden must be a list of positive integers"),
    "no training split": (["--val-fraction", "0.9999"], "--val-fraction 0.9999 leaves 0 training examples of digits, "
                                                        "fewer than one batch (128)"),
    "training split under a batch": (["--limit-train", "10", "--batch-size", "32"],
                                     "--limit-train 10 leaves 10 training examples of digits, fewer than one batch"),
    "zero threads": (["--threads", "0"], "--threads must be a whole number of at least 1, got 0"),
    "more threads than cores": (["--threads", "999"], "--threads 999: this machine lets initbench use "),
}


@pytest.mark.parametrize("case", RUN_CASES)
def test_run_refuses_before_any_work(case, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("INITBENCH_DATA_DIR", str(tmp_path / "data"))
    args, message = RUN_CASES[case]
    code, err = _cli(capsys, "run", "--dataset", "digits", "--out", tmp_path / "out", *args)
    assert code == 2 and err.startswith("initbench: error: ") and message in err, err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


SWEEP_CASES = {
    "fractional epochs": ("epochs: 1.5", "epochs must be a whole number, got 1.5"),
    "epochs as a word": ("epochs: two", "epochs must be a whole number, got 'two'"),
    "lr as a string": ("lr: '0.1'", "learning rate (lr) must be a number, got '0.1'"),
    "negative momentum": ("momentum: -1", "momentum must be at least 0, got -1"),
    "two devices": ("devices: 2", "devices must be auto or 1, got 2"),
    "more validation examples than the split has": ("limit_val: 256",
                                                    "--limit-val 256 is more than the 144 examples digits has there"),
    "a bad init in the grid": ("{}", "init 'normal': std must be >= 0, got -0.5"),
    "tuning seed of 2^32": ("}\ntune: {lr: [0.1], seeds: [4294967296]", "tune seeds must be a non-empty list of "
                                                                       "seeds (whole numbers in [0, 2^32))"),
    "threads of 0": ("}\nresources: {threads: 0", "resources threads must be a whole number of at least 1, got 0"),
    "more threads than cores": ("}\nresources: {threads: 999", "resources threads 999: this machine lets initbench"),
}


@pytest.mark.parametrize("case", SWEEP_CASES)
def test_sweep_refuses_the_whole_grid_before_the_first_run(case, capsys, tmp_path):
    setting, message = SWEEP_CASES[case]
    inits = "[kaiming_normal, normal(std=-0.5)]" if case == "a bad init in the grid" else "[kaiming_normal]"
    train = "" if setting == "{}" else f"train: {{{setting}}}"
    (tmp_path / "s.yaml").write_text(f"name: s\ndatasets: [digits]\nmodels: [mlp]\ninits: {inits}\nseeds: 2\n{train}\n")
    code, err = _cli(capsys, "sweep", tmp_path / "s.yaml", "--out", tmp_path / "out")
    assert (code == 2 and err == f"initbench: error: {tmp_path / 's.yaml'}: {message}") or message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["list", "inits", "zzz*"], "no init matches 'zzz*'; valid: constant"),
    (["bench", "--steps", "0"], "--steps must be at least 1, got 0"),
    (["bench", "--repeats", "0"], "--repeats must be at least 1, got 0"),
    (["bench", "--fixed-cost", "--lockstep", "4"], "--fixed-cost and --lockstep measure different things; give one"),
    (["bench", "--fixed-cost", "--steps", "40"], "--fixed-cost times whole runs of 2 and 6 epochs; --steps is for"),
    (["report", "results/quickstart", "--target", "-1"],
     "--target is a validation accuracy in points, (0, 100], got -1.0"),
    (["report", "results/quickstart", "--margin", "-1"], "--margin is in accuracy points, 0 to 100, got -1.0"),
    (["sweep", "experiments/mnist-mlp.yaml", "--emit-wandb-sweep", "/proc/nope.yaml"],
     "cannot write the W&B sweep config to /proc/nope.yaml: No such file or directory"),
    (["sweep", "experiments/quickstart.yaml", "--emit-wandb-sweep", "/tmp/never-written.yaml"],
     "a W&B grid cannot run the two stages of a tune block"),
])
def test_other_commands_refuse_bad_values(args, message, capsys):
    code, err = _cli(capsys, *args)
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_a_study_keeps_the_thread_count_it_recorded(capsys, tmp_path):
    (tmp_path / "s.yaml").write_text("name: s\ndatasets: [digits]\nmodels: ['mlp(hidden=[8])']\ninits: [zeros]\n"
                                     "seeds: 1\ntrain: {epochs: 1, batch_size: 32, limit_train: 64, limit_val: 32, "
                                     "limit_test: 32}\n")
    out = tmp_path / "out"
    assert _cli(capsys, "sweep", tmp_path / "s.yaml", "--out", out, "--threads", "1", "--no-progress")[0] == 0
    assert json.loads((out / "sweep.json").read_text())["threads"] == 1
    assert json.loads(next(out.rglob("config.json")).read_text())["threads"] == 1
    records = sorted(p.relative_to(out) for p in out.rglob("*"))
    code, err = _cli(capsys, "sweep", tmp_path / "s.yaml", "--out", out, "--threads", "2", "--no-progress")
    assert code == 2 and "--threads 2: the study in" in err and "trains with 1 torch threads" in err, err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == records
    code, _ = _cli(capsys, "sweep", tmp_path / "s.yaml", "--out", out, "--no-progress")  # a rerun keeps the study's
    assert code == 0 and json.loads((out / "sweep.json").read_text())["threads"] == 1


MODELS = '''
import torch
from torch import nn


class Fussy(nn.Module):
    """Fails on any forward pass: LSUV cannot calibrate it, training cannot run it."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        raise RuntimeError("this model refuses to run")
'''


def test_a_run_that_fails_inside_is_recorded_and_the_sweep_goes_on(tmp_path):
    (tmp_path / "mine.py").write_text(MODELS)
    (tmp_path / "s.yaml").write_text(textwrap.dedent("""
        name: s
        datasets: [digits]
        models:
          - mlp(hidden=[16])
          - mine:Fussy
        inits: [lsuv, kaiming_normal]
        seeds: 1
        train: {epochs: 1, limit_train: 128, limit_val: 64, limit_test: 64, accelerator: cpu}
    """))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([str(INITBENCH), "sweep", tmp_path / "s.yaml", "--out", tmp_path / "out", "--no-progress",
                           "--no-report"], capture_output=True, text=True, env=env)
    assert done.returncode == 1, done.stderr  # failures are recorded, and the exit code says there were some
    assert "s: 2 ok, 0 diverged, 0 collapsed, 2 failed" in done.stdout
    records = {p.parent.name.split("-")[0]: json.loads(p.read_text())
               for p in (tmp_path / "out").glob("digits_mine-Fussy/*/summary.json")}
    assert records["lsuv"]["status"] == "failed" and "forward pass failed" in records["lsuv"]["error"]
    assert records["kaiming_normal"]["status"] == "failed" and "refuses to run" in records["kaiming_normal"]["error"]
    assert not list((tmp_path / "out").rglob(".*.lock"))  # every lock released
    # a problem whose every run failed is reported as such, plots and all (it once broke the curves' legend)
    report = subprocess.run([str(INITBENCH), "report", tmp_path / "out"], capture_output=True, text=True, env=env)
    assert report.returncode == 0, report.stderr
    ranking = pd.read_csv(tmp_path / "out" / "ranking.csv")
    assert set(ranking.loc[ranking["problem"] == "digits_mine:Fussy", "verdict"]) == {"failed"}, ranking
    # the same failure through `initbench run` is one line, exit 2, nothing written
    alone = subprocess.run([str(INITBENCH), "run", "--model", "mine:Fussy", "--dataset", "digits", "--init", "lsuv",
                            "--out", tmp_path / "alone"], capture_output=True, text=True, env=env)
    assert alone.returncode == 2 and alone.stderr.startswith("initbench: error: init 'lsuv': the model's forward")
    assert not (tmp_path / "alone").exists()


def test_run_leaves_a_run_another_process_holds(tmp_path, tiny_spec):
    from initbench.record import run_dir_for

    spec = tiny_spec()
    run_dir = run_dir_for(spec, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from initbench.execute.claims import RunLock; "
                               "assert RunLock(Path(sys.argv[1])).acquire(); "
                               "print('held', flush=True); time.sleep(60)", str(run_dir)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["run", "--dataset", "digits", "--model", spec.model, "--epochs", str(spec.epochs), "--lr", str(spec.lr),
                "--batch-size",
                str(spec.batch_size), "--limit-train", "256", "--limit-val", "128", "--limit-test", "128",
                "--accelerator", "cpu", "--log-every", "2", "--out", str(tmp_path), "--no-progress"]
        busy = subprocess.run([str(INITBENCH), *args], capture_output=True, text=True)
        assert busy.returncode == 1, busy.stderr
        assert f"initbench: error: run {spec.run_id} is being trained by another process" in busy.stderr
        assert not run_dir.exists()
    finally:
        holder.kill()
        holder.wait()
    again = subprocess.run([str(INITBENCH), *args], capture_output=True, text=True)  # the holder is gone
    assert again.returncode == 0, again.stderr and (run_dir / "summary.json").exists()


def test_a_record_without_config_is_rerun(tmp_path, tiny_spec):
    from initbench.execute.units import run
    from initbench.record import RunRecord

    spec = tiny_spec()
    run_dir, _ = run(spec, tmp_path, progress=False)
    assert RunRecord(run_dir).complete
    (run_dir / "config.json").unlink()
    assert not RunRecord(run_dir).complete
    run_dir2, summary = run(spec, tmp_path, progress=False)
    assert run_dir2 == run_dir and summary["status"] == "ok" and (run_dir / "config.json").exists()


def test_the_sizes_known_before_torch_are_the_decoded_ones():
    """Limits and batch sizes are checked from `datasets.DATASET_SIZES` before torch loads: the table must hold what
    the datasets decode to (the two that decode offline here)."""
    from initbench.data import decode
    from initbench.datasets import DATASET_SIZES

    for name in ("digits", "fashion-mnist"):
        d = decode(name, download=False)
        assert DATASET_SIZES[name] == (len(d.y_train), len(d.y_test)), name


def test_a_failed_download_fails_fast_and_leaves_no_folder(tmp_path, monkeypatch):
    """A real download attempt through torchvision against a port nothing listens on: one line naming the cause,
    and the data folder it made is gone again."""
    from torchvision.datasets import MNIST

    from initbench.data import decode
    from initbench.errors import InitbenchError

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/mnist/"])
    with pytest.raises(InitbenchError) as error:
        decode("mnist", tmp_path / "cache" / "data", download=True)
    message = str(error.value)
    assert "MNIST not found in" in message and "the download failed (Error downloading train-images-idx3-ubyte.gz: " \
        "<urlopen error [Errno 111] Connection refused>)" in message, message
    assert list(tmp_path.iterdir()) == []
