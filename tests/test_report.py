"""`initbench report`: statistics with known answers, numbers recomputed from runs.csv, damaged records."""

import json
import shutil
import textwrap

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from initbench.cli import main
from initbench.report import (
    bootstrap_ci,
    holm,
    iqm,
    paired_test,
    prob_improvement,
    rank_problem,
    smallest_wilcoxon_p,
    write_report,
)
from initbench.sweep import execute, load_sweep


def test_holm_adjustment_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def test_paired_tests_known_answers():
    x = np.arange(8) + 10.0
    y = x - np.arange(1, 9) * 0.1  # eight positive differences, no ties
    assert paired_test(x, y, "wilcoxon") == pytest.approx(2 / 2**8)  # the exact test's smallest p
    assert smallest_wilcoxon_p(8) == pytest.approx(2 / 2**8) and smallest_wilcoxon_p(3) == 0.25
    assert paired_test(x, x, "wilcoxon") == 1.0 and paired_test(x, x, "ttest") == 1.0
    assert paired_test(x, x - 1, "ttest") == 0.0
    noisy = x - np.array([0.3, -0.1, 0.2, 0.4, -0.2, 0.1, 0.5, 0.3])
    assert paired_test(x, noisy, "ttest") == pytest.approx(stats.ttest_rel(x, noisy).pvalue)


def test_small_statistics_known_answers():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)
    assert prob_improvement([3, 4], [1, 2]) == 1.0 and prob_improvement([1, 2], [1, 2]) == 0.5
    assert prob_improvement([1, 3], [2, 2]) == 0.5
    assert bootstrap_ci(np.full(5, 0.7)) == pytest.approx((0.7, 0.7))
    lo, hi = bootstrap_ci(np.array([0.0, 1.0] * 10))
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * 0.5 / np.sqrt(20), rel=0.15)
    assert all(np.isnan(bootstrap_ci(np.array([0.4]))))


def _constructed_runs():
    """8 paired seeds: A best, C within noise of A (tied), B worse on every seed and diverged once."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.80, 0.85, 8)
    a = base + 0.05
    c = a + np.array([0.004, -0.003, 0.002, -0.004, 0.003, -0.002, 0.001, -0.002])
    b = base - 0.05
    rows = []
    for init, values in (("A", a), ("B", b), ("C", c)):
        for seed, v in enumerate(values):
            diverged = init == "B" and seed == 3
            rows.append({"run_id": f"{init}{seed}", "problem": "p", "init": init, "seed": seed,
                         "status": "diverged" if diverged else "ok", "test_acc": None if diverged else v,
                         "best_val_acc": v, "auc_val_acc": v, "steps_to_target": 10.0 if v > 0.8 else np.nan,
                         "images_per_s": 100.0, "num_classes": 10})
    return pd.DataFrame(rows), a, b, c


def test_ranking_on_constructed_data():
    runs, a, b, c = _constructed_runs()
    table, caveat = rank_problem(runs, "test_acc", "wilcoxon")
    assert table["init"].tolist() == ["A", "C", "B"] or table["init"].tolist() == ["C", "A", "B"]
    by = table.set_index("init")
    b_scored = b.copy()
    b_scored[3] = 0.1  # a diverged run without a measurement scores chance
    assert by.loc["B", "mean"] == pytest.approx(b_scored.mean())
    assert by.loc["B", "std"] == pytest.approx(b_scored.std(ddof=1))
    assert by.loc["B", "divergence_rate"] == pytest.approx(1 / 8) and by.loc["B", "diverged"] == 1
    assert by.loc["A", "median"] == pytest.approx(np.median(a)) and by.loc["A", "iqm"] == pytest.approx(iqm(a))
    assert by.loc["C", "mean"] == pytest.approx(c.mean()) and by.loc["C", "ci_low"] < c.mean() < by.loc["C", "ci_high"]
    assert by.loc["B", "p_value"] == pytest.approx(2 / 2**8)  # worse on all 8 paired seeds
    assert by.loc["B", "verdict"] == "worse (p<0.05)" and by.loc["B", "prob_best_better"] == 1.0
    winner = table.iloc[0]["init"]
    other = "C" if winner == "A" else "A"
    assert by.loc[winner, "verdict"] == "best" and by.loc[other, "verdict"] == "tied"
    assert by.loc["B", "mean_rank"] == 3.0
    assert caveat == ""  # 8 paired seeds are enough for the test to mean something
    few = runs[runs["seed"] < 3]
    assert "cannot go below p = 0.25" in rank_problem(few, "test_acc", "wilcoxon")[1]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    path = tmp / "s.yaml"
    path.write_text(textwrap.dedent("""
        name: study
        datasets: [digits]
        models: ["mlp(hidden=[32])"]
        inits: [kaiming_normal, xavier_uniform, zeros]
        seeds: 4
        train: {epochs: 3, batch_size: 64, limit_train: 384, limit_val: 128, limit_test: 256, log_every: 2,
                accelerator: cpu}
    """))
    execute(load_sweep(path), tmp / "res", progress=False)
    return tmp / "res"


def test_report_numbers_recomputed_from_runs_csv(study, tmp_path):
    out = tmp_path / "report"
    files = write_report(study, out=out)
    runs = pd.read_csv(files["runs"])
    ranking = pd.read_csv(files["ranking"])
    assert len(runs) == 12 and set(runs["status"]) == {"ok"}
    for init, g in runs.groupby("init"):
        row = ranking[ranking["init"] == init].iloc[0]
        assert row["n"] == 4
        assert row["mean"] == pytest.approx(g["test_acc"].mean())
        assert row["std"] == pytest.approx(g["test_acc"].std(ddof=1))
        assert row["median"] == pytest.approx(g["test_acc"].median())
        assert row["iqm"] == pytest.approx(stats.trim_mean(g["test_acc"], 0.25))
        assert row["best_val_acc"] == pytest.approx(g["best_val_acc"].mean())
    ranks = runs.pivot(index="seed", columns="init", values="test_acc").rank(axis=1, ascending=False)
    for init, mean_rank in ranks.mean().items():
        assert ranking.set_index("init").loc[init, "mean_rank"] == pytest.approx(mean_rank)
    assert ranking["mean"].is_monotonic_decreasing
    assert ranking.iloc[-1]["init"] == "zeros"
    # steps to target recomputed from the curves on disk
    for _, run in runs.iterrows():
        m = pd.read_csv(study / run["path"] / "metrics.csv").dropna(subset=["val/acc"])
        hit = m[m["val/acc"] >= run["target"]]["step"]
        assert (run["steps_to_target"] == hit.min()) if len(hit) else np.isnan(run["steps_to_target"])
        assert run["auc_val_acc"] == pytest.approx(m["val/acc"].mean())


def test_report_documents(study, tmp_path):
    files = write_report(study, out=tmp_path)
    page = files["html"].read_text()
    assert page.index("<table>") < page.index("<img")  # the ranking first, then the plots
    assert page.count("data:image/png;base64,") == 4 and " src='http" not in page
    assert "class='winner'" in page and "Versions" in page and "Study settings" in page
    md = files["markdown"].read_text()
    assert "| rank | init | verdict |" in md and "Caveat:" in md and "Wilcoxon" in md
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name.split("_")[0] for p in tmp_path.glob("*.png")} == {"curves", "final", "gradnorm0", "ranking"}


def test_damaged_records_are_reported_and_skipped(study, tmp_path, capsys):
    damaged = tmp_path / "res"
    shutil.copytree(study, damaged)
    run_dirs = sorted(p.parent for p in damaged.rglob("summary.json"))
    (run_dirs[0] / "summary.json").write_text('{"status": "ok", "test_a')  # torn write
    (run_dirs[1] / "summary.json").unlink()  # unfinished run
    (run_dirs[2] / "config.json").write_text("not json")
    assert main(["report", str(damaged)]) == 0
    report = json.loads((damaged / "report.json").read_text())
    assert len(report["skipped"]) == 3 and report["runs"] == 9
    assert any("unfinished run" in s for s in report["skipped"])
    assert "Skipped records" in (damaged / "report.md").read_text()


def test_report_bad_input(tmp_path, study, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no complete run records" in capsys.readouterr().err
    assert main(["report", str(study), "--out", str(tmp_path / "r"), "--metric", "loss"]) == 2
    assert "unknown metric 'loss'; valid: test_acc, best_val_acc" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["report", str(study), "--out", str(tmp_path / "file" / "r")]) == 2
    assert "cannot write the report to" in capsys.readouterr().err
