"""`initbench sweep`: grid expansion, bad files, real runs, resume after kill -9, concurrent shards."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from polling import finished

from initbench.cli import main
from initbench.errors import InitbenchError
from initbench.plan.sweep import load_sweep
from initbench.record import FILES

TINY_TRAIN = "train: {epochs: 2, batch_size: 64, limit_train: 256, limit_val: 128, limit_test: 128, log_every: 2, " \
             "accelerator: cpu}"


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_grid_expansion_with_overrides(tmp_path):
    path = write(tmp_path, """
        name: grid
        datasets: [digits, {name: mnist, train: {lr: 0.1}}]
        models: [mlp, {name: simplecnn, train: {batch_size: 32}}, "mlp(hidden=[16])"]
        inits: [kaiming_normal, {name: normal, std: 0.02}]
        seeds: [0, 5]
        train: {epochs: 3, lr: 0.01}
    """)
    sweep = load_sweep(path)
    assert sweep.name == "grid" and len(sweep.runs) == 2 * 3 * 2 * 2
    assert [r.seed for r in sweep.runs[:12]] == [0] * 12  # seed-major: complete paired blocks first
    assert {r.init for r in sweep.runs} == {"kaiming_normal", "normal(std=0.02)"}
    assert {r.model for r in sweep.runs} == {"mlp", "simplecnn", "mlp(hidden=[16])"}
    for r in sweep.runs:
        assert r.epochs == 3 and r.log.experiment == "grid"
        assert r.lr == (0.1 if r.dataset == "mnist" else 0.01)
        assert r.batch_size == (32 if r.model == "simplecnn" else 128)
    shards = [sweep.shard(i, 3) for i in (1, 2, 3)]
    assert sorted(r.run_id for s in shards for r in s) == sorted(r.run_id for r in sweep.runs)
    for key in {r.group_key for r in sweep.runs}:  # a lockstep group is never split across shards
        assert sum(any(r.group_key == key for r in s) for s in shards) == 1
    for problem in {(r.dataset, r.model) for r in sweep.runs}:  # and each shard gets its share of each problem
        counts = [sum((r.dataset, r.model) == problem for r in s) for s in shards]
        assert max(counts) - min(counts) <= 2, (problem, counts)


@pytest.mark.parametrize(("text", "message"), [
    ("datasets: [digits\nmodels: [mlp]\n", "malformed YAML in"),
    ("- just\n- a list\n", "a sweep file must be a YAML mapping"),
    ("datasets: [digits]\nmodels: [mlp]\ninits: [zeros]\nseeds: 2\nepochs: 3\n",
     "unknown key epochs; valid: name, description, datasets, models, inits, seeds, train, tune, baseline, logger"),
    ("datasets: [digits]\nmodels: [mlp]\ninits: [zeros]\nseeds: 2\ntrain: {epoch: 3}\n",
     "train: unknown key epoch; did you mean epochs? valid: init_seed, data_seed, optimizer"),
    ("datasets: [digits]\nmodels: [mlp]\ninit: [zeros]\nseeds: 1\n", "unknown key init; did you mean inits? valid: "),
    ("datasets: [digits]\nmodels: [mlp]\ninits: [kaiming, xavir_normal, zeros]\nseeds: 1\n",
     "2 bad entries: (1) unknown init 'kaiming'; did you mean "),
    ("datasets: [digits]\nmodels: [mlp]\ninits: [zeros]\nseeds: 1\ntrain: {optimizer: sgdd}\n",
     "unknown optimizer 'sgdd'; did you mean sgd? valid: sgd, adam, adamw"),
    ("datasets: [digits]\nmodels: [mlp]\ninits: []\nseeds: 2\n", "empty grid: 'inits' is an empty list"),
    ("datasets: [digits]\nmodels: [mlp]\ninits: [zeros]\nseeds: 0\n", "empty grid: 'seeds' must be at least 1"),
    ("datasets: [digits]\ninits: [zeros]\nseeds: 1\n", "missing 'models'"),
    ("datasets: [digits]\nmodels: [mlp]\ninits: [kaiming]\nseeds: 1\n", "unknown init 'kaiming'"),
    ("datasets: [digits]\nmodels: [mlp]\ninits: [zeros, zeros]\nseeds: 1\n", "the same run twice"),
    ("datasets: [digits]\nmodels: [mlp]\ninits: [zeros]\nseeds: 1\nlogger: tensorboard\n", "unknown logger"),
    ("datasets: [digits]\nmodels: [mlp]\ninits: [zeros, lsuv]\nseeds: 1\nbaseline: orthogonal\n",
     "baseline 'orthogonal' is not one of the inits; valid: zeros, lsuv"),
    ("datasets: [digits]\nmodels: [mlp]\ninits: [zeros]\nseeds: 1\ntrain: {wandb_project: p}\n",
     "train: unknown key wandb_project"),
    ("datasets: [digits]\nmodels: [mlp]\ninits: [zeros]\nseeds: 1\nresources: {cpus: 2}\n",
     "resources: unknown key cpus; valid: cpus_per_task, gpus_per_task"),
    ("datasets: [digits]\nmodels: [mlp]\ninits: [zeros]\nseeds: 1\nresources: {gpus_per_task: half}\n",
     "resources gpus_per_task must be a number, got 'half'"),
])
def test_bad_sweep_files_are_one_line_errors(text, message, tmp_path, capsys):
    path = write(tmp_path, text)
    with pytest.raises(InitbenchError, match="") as err:
        load_sweep(path)
    assert message in str(err.value)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_sweep_runs_the_grid_then_skips_it(tmp_path, capsys):
    path = write(tmp_path, f"""
        name: small
        datasets: [digits]
        models: ["mlp(hidden=[32])"]
        inits: [kaiming_normal, zeros]
        seeds: 2
        baseline: zeros
        {TINY_TRAIN}
    """)
    out = tmp_path / "res"
    assert main(["sweep", str(path), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "small: 2 ok, 0 diverged, 2 collapsed, 0 failed, 0 already done" in printed and "report:" in printed
    summaries = sorted(out.rglob("summary.json"))
    assert len(summaries) == 4 and (out / "report.html").exists() and (out / "sweep.json").exists()
    assert main(["sweep", str(path), "--out", str(out), "--no-progress", "--no-report"]) == 0
    assert "0 ok, 0 diverged, 0 collapsed, 0 failed, 4 already done" in capsys.readouterr().out
    # the sweep file's baseline reaches the report (zeros never trains; it stays the reference, with a note),
    # unless the report asks for the best
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"] == "zeros" and "failed in every run" in " ".join(*report["notes"].values())
    assert main(["report", str(out), "--out", str(tmp_path / "best"), "--baseline", "best"]) == 0
    report = json.loads((tmp_path / "best" / "report.json").read_text())
    assert report["baseline"] is None and "winner's curse" in " ".join(*report["notes"].values())
    ranking = pd.read_csv(tmp_path / "best" / "ranking.csv")
    assert ranking["reference"].tolist() == ["kaiming_normal"] * 2 and ranking["verdict"].tolist() == ["best", "failed"]
    assert main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("done   ") == 4 and "4 runs (4 done) of 4" in listing


def test_unwritable_results_folder_is_one_line(tmp_path, capsys):
    path = write(tmp_path, "datasets: [digits]\nmodels: [mlp]\ninits: [zeros]\nseeds: 1\n")
    (tmp_path / "file").write_text("")
    assert main(["sweep", str(path), "--out", str(tmp_path / "file" / "res"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot write to the results folder" in err and err.count("\n") == 1


def _sweep_cmd(path: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "initbench.cli", "sweep", str(path), "--out", str(out), "--no-progress",
            "--no-report", *extra]


def test_resume_after_kill_9_records_every_run_exactly_once(tmp_path):
    path = write(tmp_path, """
        name: killed
        datasets: [digits]
        models: ["mlp(hidden=[64])"]
        inits: [kaiming_normal, xavier_uniform, orthogonal, lecun_normal]
        seeds: 2
        train: {epochs: 6, batch_size: 32, limit_train: 512, limit_val: 128, limit_test: 128, accelerator: cpu}
    """)
    out = tmp_path / "res"
    proc = subprocess.Popen(_sweep_cmd(path, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while len(finished(out)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.parent.name: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    assert 2 <= len(before) < 8, "the kill must land in the middle of the sweep"
    assert main(["sweep", str(path), "--out", str(out), "--no-progress", "--no-report"]) == 0
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    assert len(after) == 8
    assert all(after[name] == stamp for name, stamp in before.items())  # finished runs were not rerun
    run_dirs = [p for p in (out / "digits_mlp").iterdir() if p.is_dir()]
    assert len(run_dirs) == 8 and not list(out.rglob("*.lock"))
    for d in run_dirs:
        assert {f.name for f in d.iterdir()} == set(FILES)


def test_ctrl_c_stops_cleanly_and_the_same_command_finishes(tmp_path):
    path = write(tmp_path, """
        name: interrupted
        datasets: [digits]
        models: ["mlp(hidden=[64])"]
        inits: [kaiming_normal, xavier_uniform, orthogonal]
        seeds: 8
        train: {epochs: 8, batch_size: 32, limit_train: 512, limit_val: 128, limit_test: 128, accelerator: cpu}
    """)
    out = tmp_path / "res"
    # Ctrl-C's default action in the child even when the tests run as a background job (which ignores SIGINT)
    proc = subprocess.Popen(_sweep_cmd(path, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not finished(out) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next run's training
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert "runs complete; rerun the same command to finish the rest" in err
    done = len(list(out.rglob("summary.json")))
    assert 1 <= done < 24 and not list(out.rglob("*.lock"))
    assert main(["sweep", str(path), "--out", str(out), "--no-progress", "--no-report"]) == 0
    assert len(list(out.rglob("summary.json"))) == 24


def _two_sweeps_at_once(tmp_path, name: str, *extra: list[str]) -> tuple[Path, list[tuple[str, str]]]:
    """Two sweep processes over the same 6-run grid and results folder, at once; (folder, their outputs)."""
    path = write(tmp_path, f"""
        name: {name}
        datasets: [digits]
        models: ["mlp(hidden=[16])"]
        inits: [kaiming_normal, zeros, orthogonal]
        seeds: 2
        {TINY_TRAIN}
    """)
    out = tmp_path / "res"
    procs = [subprocess.Popen(_sweep_cmd(path, out, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for args in extra]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    return out, outputs


def test_concurrent_shards_share_one_folder(tmp_path):
    out, outputs = _two_sweeps_at_once(tmp_path, "sharded", ["--shard", "1/2"], ["--shard", "2/2"])
    assert all("2 ok, 0 diverged, 1 collapsed" in o for o, _ in outputs)  # the zeros runs never train
    summaries = list(out.rglob("summary.json"))
    assert len(summaries) == 6
    statuses = {s.parent.name.split("-")[0]: json.loads(s.read_text())["status"] for s in summaries}
    assert statuses == {"kaiming_normal": "ok", "zeros": "collapsed", "orthogonal": "ok"}
    assert main(["report", str(out)]) == 0


def test_two_identical_sweeps_on_one_folder_train_and_count_each_run_once(tmp_path):
    out, outputs = _two_sweeps_at_once(tmp_path, "twice", [], [])
    trained = 0
    for stdout, _ in outputs:
        counts = re.search(r"(\d+) ok, (\d+) diverged, (\d+) collapsed, (\d+) failed", stdout).groups()
        trained += sum(map(int, counts))
    assert trained == 6 and len(list(out.rglob("summary.json"))) == 6


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("experiments/*.yaml")), ids=lambda p: p.stem)
def test_shipped_experiment_files_are_valid(path):
    sweep = load_sweep(path)
    assert sweep.name == path.stem
    assert len(sweep.runs) >= 40 or (sweep.tune is not None and len(sweep.tuning) >= 8)  # a study, not a toy
    if path.stem == "quickstart":
        inits = {r.init for r in sweep.runs}
        assert len(inits) >= 8 and {"zeros", "pytorch_default", "normal(std=1)"} <= inits
        assert any(i.startswith("constant") for i in inits)
        assert {r.dataset for r in sweep.runs} == {"digits"} and {r.model for r in sweep.runs} == {"mlp", "simplecnn"}
        assert len({r.seed for r in sweep.runs}) >= 3


AXIS_SWEEP = """
    name: depth
    datasets: [digits]
    models:
      - {name: mlp, vary: {depth: [1, 4, 16]}, width: 16, train: {batch_size: 32}}
      - simplecnn
    inits: [kaiming_normal, zeros]
    seeds: 3
    baseline: kaiming_normal
    tune: {lr: [0.01, 0.1], seeds: [100]}
    train: {epochs: 1, limit_train: 256, limit_val: 128, limit_test: 128, accelerator: cpu}
"""


def test_an_axis_expands_into_one_problem_per_value():
    import yaml

    from initbench.plan.sweep import sweep_from_doc

    sweep = sweep_from_doc(yaml.safe_load(textwrap.dedent(AXIS_SWEEP)), Path("depth.yaml"), check=False)
    assert [(a.name, a.values, dict(a.fixed)) for a in sweep.axes] == [("mlp.depth", (1, 4, 16), {"width": 16})]
    models = list(dict.fromkeys(r.model for r in sweep.runs))
    assert models == ["mlp(width=16, depth=1)", "mlp(width=16, depth=4)", "mlp(width=16, depth=16)", "simplecnn"]
    assert all(r.batch_size == 32 for r in sweep.runs if r.model.startswith("mlp"))  # the entry's train: kept
    assert len(sweep.runs) == 3 * 4 * 2 and len(sweep.tuning) == 1 * 4 * 2 * 2  # an lr per scheme per depth
    halves = [sweep.shard(i, 2) for i in (1, 2)]  # shards deal each depth's problem out like any problem's
    assert sorted(r.run_id for h in halves for r in h) == sorted(r.run_id for r in sweep.runs)
    assert all({r.model for r in h} >= set(models[:3]) for h in halves)


@pytest.mark.parametrize(("vary", "message"), [
    ("{depth: [2, 4], width: [8, 16]}", "vary must map one parameter to its values"),
    ("{depth: []}", "vary depth must be a non-empty list of values, got []"),
    ("{depth: [2, 2]}", "vary depth lists a value twice: [2, 2]"),
    ("{width: [8]}", "width is both fixed and varied"),
    ("{depth: [2, 0]}", "model 'mlp': depth must be a positive integer, got 0"),
    ("{dpeth: [2]}", "model 'mlp' has no parameter 'dpeth'"),
])
def test_a_bad_axis_is_one_line_before_any_work(vary, message, tmp_path, capsys):
    path = write(tmp_path, f"datasets: [digits]\nmodels: [{{name: mlp, width: 8, vary: {vary}}}]\n"
                           "inits: [kaiming_normal]\nseeds: 2\n")
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_an_axis_study_trains_resumes_and_reports_its_scaling(tmp_path, capsys):
    path = write(tmp_path, AXIS_SWEEP.replace("      - simplecnn\n", ""))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "mlp.depth (scaling)" in said and "digits_mlp[depth=16]" in said
    assert said.index("digits_mlp[depth=1]\n") < said.index("digits_mlp[depth=4]\n") \
        < said.index("digits_mlp[depth=16]\n")  # in the axis's order
    assert main(["sweep", str(path), "--out", str(out), "--no-progress"]) == 0  # resumed: nothing left to train
    assert "0 ok, 0 diverged, 0 collapsed, 0 failed, 30 already done" in capsys.readouterr().out  # 18 + 12 tuning
    scaling = pd.read_csv(out / "scaling.csv")
    assert scaling["axis"].unique().tolist() == ["mlp.depth"] and sorted(scaling["value"].unique()) == [1, 4, 16]
    ranking = pd.read_csv(out / "ranking.csv")
    for _, row in scaling.iterrows():  # the scaling table holds each problem's own ranking row
        same = ranking[(ranking["problem"] == row["problem"]) & (ranking["init"] == row["init"])].iloc[0]
        assert row["mean"] == pytest.approx(same["mean"]) and row["verdict"] == same["verdict"]
    zeros = scaling[scaling["init"] == "zeros"]
    assert (zeros["failure_rate"] == 1).all()  # zeros never trains: it fails from the first depth on
    assert set(pd.read_csv(out / "tuning.csv")["problem"]) == {f"digits_mlp[depth={d}]" for d in (1, 4, 16)}
    md = (out / "report.md").read_text()
    assert md.index("## Scaling: mlp over depth") < md.index("## digits_mlp[depth=1]")
    assert "zeros from depth 1" in md and "![scaling_mlp.depth](scaling_mlp.depth.png)" in md
    assert (out / "scaling_mlp.depth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_training_setting_is_an_axis_too_and_twin_axes_keep_their_problems_apart(tmp_path, capsys):
    path = write(tmp_path, """
        name: settings
        datasets: [digits]
        models:
          - {name: mlp, hidden: [16], vary: {batch_size: [32, 64]}}
          - {name: mlp, vary: {depth: [1, 2]}, width: 8}
          - {name: mlp, vary: {depth: [1, 2]}, width: 16}
        inits: [kaiming_normal, zeros]
        seeds: 2
        train: {epochs: 1, limit_train: 128, limit_val: 64, limit_test: 64, accelerator: cpu}
    """)
    sweep = load_sweep(path)
    assert sorted({r.batch_size for r in sweep.runs if r.model == "mlp(hidden=[16])"}) == [32, 64]
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--no-progress"]) == 0
    scaling = pd.read_csv(out / "scaling.csv")
    assert list(dict.fromkeys(scaling["axis"])) == ["mlp(width=16).depth", "mlp(width=8).depth", "mlp.batch_size"]
    assert set(pd.read_csv(out / "ranking.csv")["problem"]) == {
        "digits_mlp[batch_size=32]", "digits_mlp[batch_size=64]", "digits_mlp(width=8)[depth=1]",
        "digits_mlp(width=8)[depth=2]", "digits_mlp(width=16)[depth=1]", "digits_mlp(width=16)[depth=2]"}
    assert (scaling.groupby("problem")["init"].count() == 2).all()  # each problem its own pair of schemes
    md = (out / "report.md").read_text()
    assert "## Scaling: mlp over batch_size" in md and "## Scaling: mlp(width=8) over depth" in md
