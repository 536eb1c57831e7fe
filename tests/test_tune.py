"""The learning-rate-fair protocol: the tune block, the selection rule (known answers: ties, a diverged lr, a failed
one), real two-stage sweeps (the comparison at the chosen lr on comparison seeds only, lockstep groups that mix lrs,
resume across stages, a changed grid, shards, the shared protocol) and the report of a tuned study."""

import json
import math
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from initbench.cli import main
from initbench.errors import InitbenchError
from initbench.plan.sweep import load_sweep
from initbench.plan.tune import choose, lr_grid, parse_tune, score, within
from initbench.record import RunRecord

INITBENCH = Path(sys.executable).parent / "initbench"
STUDY = """
name: tuned
datasets: [digits]
models: ["mlp(hidden=[16])"]
inits: [kaiming_normal, orthogonal, zeros]
seeds: 3
tune: {{lr: {lrs}, seeds: [100, 101]{extra}}}
train: {{epochs: 2, batch_size: 32, limit_train: 256, limit_val: 128, limit_test: 128, accelerator: cpu,
         log_every: 4}}
"""
GRID = [0.01, 0.1, 1e12]  # 1e12: the MLP diverges (its loss turns non-finite)


def write(tmp_path: Path, lrs=GRID, extra: str = "", name: str = "tuned.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(STUDY.format(lrs=json.dumps(lrs), extra=extra)))
    return path


def records(out: Path) -> pd.DataFrame:
    """Every complete record under `out`, read back from its own files."""
    rows = []
    for summary in out.rglob("summary.json"):
        record = RunRecord(summary.parent)
        spec, s = record.config()["spec"], record.summary()
        rows.append({"init": spec["init"], "seed": spec["seed"], "lr": spec["lr"], "status": s["status"],
                     "val": s.get("val_acc_final"), "engine": record.config()["engine"],
                     "group_size": record.config().get("group_size"), "path": summary.parent})
    return pd.DataFrame(rows)


def best_lr_by_hand(tuning: pd.DataFrame) -> dict[str, float]:
    """The selection written out plainly: per init, the lr with the highest mean validation accuracy over the
    tuning seeds, where a diverged run counts as chance (0.1 on digits); the smaller lr on a tie."""
    chosen = {}
    for init, g in tuning.groupby("init"):
        val = g["val"].where(g["status"] != "diverged", 0.1)
        means = val.groupby(g["lr"]).mean().round(9)
        chosen[init] = float(min(means[means == means.max()].index))
    return chosen


# --- the rule, on known answers ---

def test_the_best_mean_wins_and_ties_go_to_the_smaller_lr():
    assert choose({0.01: [0.5, 0.7], 0.1: [0.8, 0.9], 1.0: [0.9, 0.7]}) == 0.1
    assert choose({0.3: [0.8, 0.6], 0.03: [0.7, 0.7], 3.0: [0.6, 0.8]}) == 0.03  # three-way tie
    assert choose({0.1: [0.1 + 0.2, 0.3], 0.01: [0.3, 0.1 + 0.2]}) == 0.01  # equal up to float rounding: a tie


def test_a_diverged_lr_scores_chance_and_a_failed_one_is_ruled_out():
    assert score("diverged", 0.97, 10) == pytest.approx(0.1) and score("ok", 0.8, 10) == 0.8
    assert score("failed", None, 10) == -math.inf and score("collapsed", 0.1, 10) == 0.1
    diverged_once = {0.01: [0.50, 0.52], 1.0: [score("diverged", 0.9, 10), 0.95]}  # (0.1 + 0.95) / 2 > 0.51
    assert choose(diverged_once) == 1.0
    diverged_twice = {0.01: [0.50, 0.52], 1.0: [score("diverged", 0.9, 10)] * 2}
    assert choose(diverged_twice) == 0.01
    assert choose({0.01: [0.2, 0.2], 0.1: [score("failed", None, 10), 0.99]}) == 0.01
    assert choose({0.01: [-math.inf], 0.1: [-math.inf]}) == 0.01  # nothing trained: the smallest lr


def test_tuneability_is_the_width_in_decades_within_one_point_of_the_best():
    scores = {0.001: [0.80], 0.01: [0.905], 0.1: [0.91], 1.0: [0.902], 10.0: [0.5]}
    assert within(scores) == (0.01, 1.0, pytest.approx(2.0))
    assert within({0.01: [0.5], 0.1: [0.9], 1.0: [0.7]}) == (0.1, 0.1, 0.0)
    gap = {0.001: [0.905], 0.01: [0.5], 0.1: [0.91]}  # within a point, but not next to the best on the grid
    assert within(gap) == (0.1, 0.1, 0.0)


def test_a_log_range_grid_is_log_spaced_to_three_digits():
    assert lr_grid({"log_range": [1e-3, 1], "points": 7}, "f") == (0.001, 0.00316, 0.01, 0.0316, 0.1, 0.316, 1.0)
    assert lr_grid([0.3, 0.01, 0.1], "f") == (0.01, 0.1, 0.3) and lr_grid(0.1, "f") == (0.1,)
    as_yaml = yaml.safe_load("lr: {log_range: [1e-3, 1], points: 4}\nlist: [3e-4, 1e-2]")  # YAML 1.1: strings
    assert as_yaml["list"] == ["3e-4", "1e-2"]
    assert lr_grid(as_yaml["lr"], "f") == (0.001, 0.01, 0.1, 1.0) and lr_grid(as_yaml["list"], "f") == (0.0003, 0.01)


@pytest.mark.parametrize(("train", "message"), [
    ("train: {lr: 0.1}", "train sets lr, which a tune block does not allow: the tuning stage chooses each run's lr"),
    ("train: {init_seed: 3}", "train sets init_seed, which a tune block does not allow"),
    ("models: [{name: mlp, train: {data_seed: 3}}]", "mlp train sets data_seed, which a tune block does not allow"),
])
def test_a_tune_block_refuses_settings_that_would_undo_it(train, message, tmp_path):
    path = tmp_path / "f.yaml"
    models = "" if train.startswith("models") else "models: [mlp]\n"
    path.write_text(f"datasets: [digits]\n{models}inits: [zeros]\nseeds: 2\ntune: {{lr: [0.1], seeds: [9]}}\n{train}\n")
    with pytest.raises(InitbenchError, match=re.escape(message)):
        load_sweep(path)


@pytest.mark.parametrize(("tune", "message"), [
    ({"lr": [], "seeds": [100]}, "empty grid: tune lr is an empty list"),
    ({"lr": [0.1, 0], "seeds": [100]}, "every tune lr must be a positive number, got 0"),
    ({"lr": [0.1, -1], "seeds": [100]}, "every tune lr must be a positive number, got -1"),
    ({"lr": [0.1], "seeds": [1, 100]}, "tune seed 1 is also a comparison seed"),
    ({"lr": [0.1], "seeds": [0, 1, 100]}, "tune seeds 0, 1 are also comparison seeds"),
    ({"lr": [0.1], "seeds": [100], "budget": 3}, "unknown key budget in tune; valid: lr, seeds, per_init, metric"),
    ({"lr": [0.1], "seeds": []}, "tune seeds must be a non-empty list"),
    ({"lr": [0.1]}, "tune needs lr (the grid) and seeds"),
    ({"lr": {"log_range": [1, 0.1], "points": 3}, "seeds": [100]}, "log_range must be [low, high] with 0 < low"),
    ({"lr": {"log_range": [0.01, 1], "points": 1}, "seeds": [100]}, "points must be a whole number from 2 to 1000"),
    ({"lr": [0.1, 0.1], "seeds": [100]}, "the same learning rate twice"),
    ({"lr": [0.1], "seeds": [100], "per_init": "yes"}, "per_init must be true, false or both"),
    ({"lr": [0.1], "seeds": [100], "metric": "test_acc"}, "unknown tune metric 'test_acc'; valid: val_acc_final"),
])
def test_bad_tune_blocks_are_one_line_errors_before_any_work(tune, message, tmp_path):
    with pytest.raises(InitbenchError) as err:
        parse_tune(tune, "f.yaml", comparison_seeds=[0, 1, 2])
    assert message in str(err.value) and "\n" not in str(err.value)
    path = tmp_path / "bad.yaml"
    path.write_text(f"datasets: [digits]\nmodels: [mlp]\ninits: [zeros]\nseeds: 3\ntune: {json.dumps(tune)}\n")
    probe = ("import sys\nfrom initbench.cli import main\n"
             f"code = main(['sweep', {str(path)!r}, '--out', {str(tmp_path / 'out')!r}])\n"
             "print('CODE', code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.split() == ["CODE", "2", "False"], done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr
    assert not (tmp_path / "out").exists()


# --- real two-stage sweeps ---

@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    out = root / "out"
    done = subprocess.run([str(INITBENCH), "sweep", write(root), "--out", out, "--no-progress"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    return root, out, done.stdout


def test_the_comparison_runs_at_the_lr_the_tuning_records_choose_on_comparison_seeds_only(study):
    _, out, said = study
    runs = records(out)
    tuning, comparison = runs[runs["seed"] >= 100], runs[runs["seed"] < 100]
    assert len(tuning) == 3 * 3 * 2 and set(tuning["lr"]) == set(GRID)
    assert (tuning.loc[tuning["lr"] == 1e12, "status"] == "diverged").sum() >= 4  # the lr that diverges
    chosen = best_lr_by_hand(tuning)
    assert chosen["kaiming_normal"] != 1e12 and chosen["orthogonal"] != 1e12
    assert len(comparison) == 3 * 3 and sorted(comparison["seed"].unique()) == [0, 1, 2]
    for row in comparison.itertuples():
        assert row.lr == chosen[row.init], row
    # each stage's (problem, seed) trained as one lockstep group whose members differ in init and lr
    assert set(tuning["engine"]) == {"lockstep"} and set(tuning["group_size"]) == {9}
    assert set(comparison["engine"]) == {"lockstep"} and set(comparison["group_size"]) == {3}
    assert "27/27 complete" in said


def test_the_report_shows_the_chosen_lr_the_sensitivity_and_that_tuning_seeds_stayed_out(study):
    _, out, _ = study
    ranking = pd.read_csv(out / "ranking.csv")
    chosen = best_lr_by_hand(records(out).query("seed >= 100"))
    assert dict(zip(ranking["init"], ranking["lr"], strict=True)) == chosen
    assert set(pd.read_csv(out / "runs.csv")["seed"]) == {0, 1, 2}  # the comparison's runs only
    assert ranking["n"].tolist() == [3, 3, 3]
    tuning = pd.read_csv(out / "tuning.csv")
    assert dict(zip(tuning["init"], tuning["lr"], strict=True)) == chosen
    assert (tuning.set_index("init")["diverged"][["kaiming_normal", "orthogonal"]] == 2).all()
    assert (tuning["decades"] >= 0).all()
    assert (tuning["at_edge"] == tuning["lr"].isin([min(GRID), max(GRID)])).all()
    assert (out / "sensitivity_digits_mlp_hidden=_16.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "The tuning seeds were not used for the comparison" in md and "| rank | init | lr |" in md
    assert "![sensitivity_digits_mlp_hidden=_16](sensitivity_digits_mlp_hidden=_16.png)" in md


def test_a_rerun_resumes_either_stage_and_meanwhile_the_report_ranks_what_is_recorded(study, tmp_path):
    root, base, _ = study
    out = tmp_path / "out"
    shutil.copytree(base, out)
    runs = records(out).sort_values(["init", "seed", "lr"])
    lost_tuning = runs[(runs["seed"] == 101) & (runs["init"] == "orthogonal")]["path"].iloc[0]
    for path in [lost_tuning, *runs[(runs["seed"] == 2) & (runs["init"] != "orthogonal")]["path"]]:
        shutil.rmtree(path)  # one tuning run and two comparison runs lost (an interrupted sweep leaves no more)
    assert main(["report", str(out)]) == 0  # orthogonal's lr is not known now: its runs are not ranked
    ranking = pd.read_csv(out / "ranking.csv")
    assert "orthogonal" not in set(ranking["init"]) and ranking["n"].tolist() == [2, 2]
    md = (out / "report.md").read_text()
    assert "3 comparison runs wait for their lr" in md and "5/6 (missing)" in md
    again = subprocess.run([str(INITBENCH), "sweep", write(root), "--out", out, "--no-progress"],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert ", 24 already done" in again.stdout and "27/27 complete" in again.stdout, again.stdout
    now = records(out)
    chosen = best_lr_by_hand(now[now["seed"] >= 100])
    assert dict(zip(*pd.read_csv(out / "ranking.csv")[["init", "lr"]].T.values, strict=True)) == chosen


def test_a_changed_grid_reuses_what_still_applies_and_the_report_ranks_only_the_plan(tmp_path):
    out = tmp_path / "out"
    narrow = subprocess.run([str(INITBENCH), "sweep", write(tmp_path, [0.01, 1e12]), "--out", out,
                             "--no-progress"], capture_output=True, text=True)
    assert narrow.returncode == 0, narrow.stderr
    before = records(out)
    assert set(before.loc[(before["seed"] < 100) & (before["init"] != "zeros"), "lr"]) == {0.01}
    wider = subprocess.run([str(INITBENCH), "sweep", write(tmp_path, GRID), "--out", out, "--no-progress"],
                           capture_output=True, text=True)  # 0.1 added: it wins, so the comparison moves to it
    assert wider.returncode == 0, wider.stderr
    trained = re.search(r": (\d+) ok, (\d+) diverged, (\d+) collapsed, 0 failed, 15 already done", wider.stdout)
    assert trained and sum(map(int, trained.groups())) == 12, wider.stdout  # the new lr's tuning runs, and the
    # comparison runs that moved to it (zeros' lr did not move: its runs, and the old tuning runs, are reused)
    after = records(out)
    chosen = best_lr_by_hand(after[after["seed"] >= 100])
    assert chosen["kaiming_normal"] == chosen["orthogonal"] == 0.1
    ranked = pd.read_csv(out / "runs.csv")
    assert len(ranked) == 9 and all(r.lr == chosen[r.init] for r in ranked.itertuples())
    md = (out / "report.md").read_text()
    assert "Records outside this study's protocol" in md and md.count("an lr no longer chosen") >= 6
    moved = tmp_path / "moved.yaml"  # other tuning seeds: the old tuning runs are never ranked as comparisons
    moved.write_text(write(tmp_path, GRID).read_text().replace("seeds: [100, 101]", "seeds: [5, 6]"))
    assert subprocess.run([str(INITBENCH), "sweep", moved, "--out", out, "--no-progress"], capture_output=True,
                          text=True).returncode == 0
    ranked = pd.read_csv(out / "runs.csv")
    assert set(ranked["seed"]) == {0, 1, 2} and len(ranked) == 9
    assert "tuning seeds 5, 6" in (out / "report.md").read_text()


def test_shards_wait_for_the_tuning_runs_of_the_other_shards(tmp_path):
    path = write(tmp_path, [0.01, 0.1])
    out = tmp_path / "out"
    first = subprocess.run([str(INITBENCH), "sweep", path, "--out", out, "--shard", "1/2", "--no-progress"],
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "6 waiting for tuning runs" in first.stdout and "rerun this command" in first.stderr
    assert set(records(out)["seed"]) == {100}  # its tuning seed's group; no comparison run yet
    for shard in ("2/2", "1/2"):
        done = subprocess.run([str(INITBENCH), "sweep", path, "--out", out, "--shard", shard, "--no-progress"],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    runs = records(out)
    assert len(runs) == 12 + 9 and "report:" in done.stdout
    chosen = best_lr_by_hand(runs[runs["seed"] >= 100])
    assert all(r.lr == chosen[r.init] for r in runs[runs["seed"] < 100].itertuples())


def test_the_shared_protocol_and_both_side_by_side(tmp_path):
    out = tmp_path / "out"
    path = write(tmp_path, GRID, ", per_init: both")
    sweep = load_sweep(path)
    assert sweep.tune.protocols == ("per_init", "shared") and sweep.reference == "kaiming_normal"
    done = subprocess.run([str(INITBENCH), "sweep", path, "--out", out, "--no-progress"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    runs = records(out)
    chosen = best_lr_by_hand(runs[runs["seed"] >= 100])
    comparison = runs[runs["seed"] < 100]
    for init in ["orthogonal", "zeros"]:  # each at its own lr and at kaiming_normal's (one run where they agree)
        assert set(comparison.loc[comparison["init"] == init, "lr"]) == {chosen[init], chosen["kaiming_normal"]}
    protocols = pd.read_csv(out / "protocols.csv")
    assert set(protocols["lr_shared"]) == {chosen["kaiming_normal"]}
    assert dict(zip(protocols["init"], protocols["lr_per_init"], strict=True)) == chosen
    assert (protocols["rank_change"] == protocols["rank_shared"] - protocols["rank_per_init"]).all()
    shared = tmp_path / "shared"  # per_init: false alone: every comparison run at the reference's lr
    path = write(tmp_path, GRID, ", per_init: false", "shared.yaml")
    shutil.copytree(out, shared)
    done = subprocess.run([str(INITBENCH), "sweep", path, "--out", shared, "--no-progress"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert re.search(r": 0 ok, 0 diverged, 0 collapsed, 0 failed, \d+ already done", done.stdout), done.stdout
    ranking = pd.read_csv(shared / "ranking.csv")
    assert set(ranking["lr"]) == {chosen["kaiming_normal"]} and not (shared / "protocols.csv").exists()


def test_the_dry_run_shows_both_stages_and_the_counts(tmp_path, capsys):
    path = write(tmp_path)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert said.count("pending  tuning  ") == 18 and said.count("waiting  comparison  ") == 9
    assert ("stage 1 (tuning, lr 0.01, 0.1, 1e+12 on tuning seeds 100, 101, chosen by the mean val_acc_final): 18 runs "
            "(0 done); stage 2 (comparison on seeds 0, 1, 2, per_init lr): 9 runs (0 done, 9 waiting for their lr)"
            ) in said
    assert not (tmp_path / "out").exists()
