"""Step-0 diagnostics against outcomes: Spearman's rho against known answers and scipy, its bootstrap interval's
coverage and false-positive rate by simulation, and the report's section on a real sweep."""

import json
import math
import textwrap

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from initbench.cli import main
from initbench.report.predictors import outcomes, relate, spearman, spearman_ci


def test_spearman_matches_known_answers_and_scipy():
    assert spearman(np.array([1, 2, 3, 4, 5.0]), np.array([5, 6, 7, 8, 7.0])) == pytest.approx(0.8207826816681233)
    assert spearman(np.arange(6.0), -np.arange(6.0) ** 3) == pytest.approx(-1)
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 5, (7, 30)).astype(float), rng.normal(size=(7, 30))  # ties in x
    rows = spearman(x, y, axis=1)
    assert rows == pytest.approx([stats.spearmanr(a, b).statistic for a, b in zip(x, y, strict=True)])
    assert math.isnan(spearman(np.ones(5), np.arange(5.0)))



def test_resamples_where_a_figure_is_constant_are_left_out_without_a_warning(recwarn):
    x = np.array([0.0] * 11 + [1.0])  # one run differs: about a third of the resamples leave x constant
    low, high = spearman_ci(x, np.arange(12.0))
    assert 0 < low <= high <= 1
    assert not [w for w in recwarn if issubclass(w.category, (stats.DegenerateDataWarning, RuntimeWarning))]


def test_the_bootstrap_interval_covers_the_true_rho_and_rarely_excludes_zero_under_independence():
    """Bivariate normal with Pearson r has Spearman's rho (6/pi) asin(r/2); 95% intervals should cover it about 95% of
    the time, and with independent pairs exclude 0 about 5% of the time."""
    rng = np.random.default_rng(7)
    r, n, sims = 0.6, 40, 200
    true = 6 / math.pi * math.asin(r / 2)
    covered = 0
    for i in range(sims):
        z = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=n)
        low, high = spearman_ci(z[:, 0], z[:, 1], resamples=999, seed=i)
        covered += low <= true <= high
    assert 0.90 <= covered / sims <= 0.985, covered / sims
    false = 0
    for i in range(sims):
        low, high = spearman_ci(rng.normal(size=30), rng.normal(size=30), resamples=999, seed=i)
        false += low > 0 or high < 0
    assert false / sims <= 0.09, false / sims


def test_a_runs_outcome_counts_a_divergence_as_chance_and_leaves_failures_out():
    runs = pd.DataFrame({"status": ["ok", "diverged", "collapsed", "failed"], "val_acc_final": [0.9, None, 0.1, None],
                         "num_classes": [10, 4, 10, 10]})
    assert outcomes(runs, "val_acc_final").tolist()[:3] == [0.9, 0.25, 0.1]
    assert math.isnan(outcomes(runs, "val_acc_final").iloc[3])


def test_findings_follow_their_intervals():
    rng = np.random.default_rng(3)
    n = 24
    score = rng.uniform(0.5, 1, n)
    runs = pd.DataFrame({"problem": "p", "status": "ok", "num_classes": 10, "val_acc_final": score,
                         "step0_loss": -score + rng.normal(0, 0.05, n),  # a lower loss: a higher score
                         "step0_grad_norm_total": rng.normal(size=n),  # unrelated
                         "step0_dead_frac": 0.25})  # the same for every run
    related = relate(runs, "val_acc_final").set_index("diagnostic")
    assert related.loc["loss", "ci_high"] < 0 and related.loc["loss", "finding"].startswith("a lower loss went with")
    excludes = (related["ci_low"] > 0) | (related["ci_high"] < 0)
    assert all(related.loc[excludes, "finding"].str.contains("went with"))
    assert all(~related.loc[~excludes, "finding"].str.contains("went with"))
    assert related.loc["dead_frac", "finding"] == "the same for every run: says nothing here"


def test_the_report_says_what_predicted_the_outcome_on_a_real_sweep(tmp_path):
    """normal(std=1) starts with a huge loss and activations and fails to learn at this lr; the others learn: the
    table relates each diagnostic to the outcome, its words follow its intervals, and the failures are listed with
    their step-0 figures."""
    (tmp_path / "s.yaml").write_text(textwrap.dedent("""
        name: predict
        datasets: [digits]
        models: ["mlp(hidden=[64, 64, 64])"]
        inits: [kaiming_normal, xavier_uniform, "normal(std=1)", orthogonal]
        seeds: 3
        train: {epochs: 2, batch_size: 32, limit_train: 512, limit_val: 128, limit_test: 128, lr: 0.05,
                accelerator: cpu}
    """))
    out = tmp_path / "out"
    assert main(["sweep", str(tmp_path / "s.yaml"), "--out", str(out), "--no-progress"]) in (0, 1)
    runs = pd.read_csv(out / "runs.csv")
    assert runs[[c for c in runs if c.startswith("step0_")]].notna().all().all()
    table = pd.read_csv(out / "diagnostics.csv")
    assert set(table["diagnostic"]) == {"act_rms_ratio", "dead_frac", "grad_norm_spread", "grad_norm_total", "loss"}
    loss = table.set_index("diagnostic").loc["loss"]
    assert loss["runs"] == 12 and loss["rho"] < 0  # a larger loss at step 0 went with a worse run
    assert loss["ci_low"] <= loss["rho"] <= loss["ci_high"]
    excludes = (table["ci_low"] > 0) | (table["ci_high"] < 0)
    assert (table["finding"].str.contains("went with") == excludes).all()  # the words follow the intervals
    worst = runs.nsmallest(3, "val_acc_final")
    assert set(worst["init"]) == {"normal"} and worst["step0_loss"].min() > runs["step0_loss"].nlargest(4).min()
    report = (out / "report.md").read_text()
    assert "## What predicted the outcome" in report and "digits_mlp(hidden=[64, 64, 64]): " in report
    bad = runs[runs["status"].isin(["diverged", "collapsed"])]
    assert len(bad) and set(bad["init"]) == {"normal"}  # normal(std=1), named canonically
    assert "### Diverged and collapsed runs at step 0" in report
    assert (out / "step0_digits_mlp_hidden=_64_64_64.png").stat().st_size > 10_000  # each diagnostic against the score
    record = next(out.glob("digits_*/normal*seed0*/diagnostics.json"))
    assert json.loads(record.read_text())["summary"]["loss"] > 10
