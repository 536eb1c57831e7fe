"""`initbench report`: statistics with known answers and by simulation, verdicts that follow from their
numbers, numbers recomputed from runs.csv, separate problems for separate settings, damaged records."""

import json
import math
import shutil
import textwrap

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from initbench.cli import main
from initbench.execute.local import execute
from initbench.execute.units import run
from initbench.plan.sweep import load_sweep
from initbench.report import (
    holm,
    iqm,
    load_study,
    mean_ci,
    paired_test,
    prob_improvement,
    rank,
    rank_problem,
    seed_note,
    seeds_needed,
    smallest_wilcoxon_p,
    write_report,
)
from initbench.report.plots import on_scale
from initbench.report.stats import VERDICTS


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
    assert math.isnan(prob_improvement([], [1, 2]))  # a scheme whose every run failed: no runs to compare
    half = 2.7764451051977987 * math.sqrt(2.5 / 5)  # t(0.975, 4) x s / sqrt(n) for 1..5
    assert mean_ci(np.arange(1.0, 6.0)) == pytest.approx((3 - half, 3 + half))
    assert mean_ci(np.full(5, 0.7)) == pytest.approx((0.7, 0.7))
    assert all(np.isnan(mean_ci(np.array([0.4]))))


def test_mean_ci_covers_95_percent_at_five_seeds():
    """Simulation: nominal-95% intervals of the mean of 5 normal values cover the true mean >= 92% of the time
    (the percentile bootstrap it replaces covers about 86% at n = 5)."""
    rng = np.random.default_rng(1)
    samples = rng.normal(0.9, 0.02, (4000, 5))
    covered = [lo <= 0.9 <= hi for lo, hi in map(mean_ci, samples)]
    assert 0.93 <= np.mean(covered) <= 0.97


def _runs(values: dict[str, np.ndarray], status: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """A problem's runs from per-seed values of the ranking metric (val_acc_final), one column per scheme."""
    rows = []
    for init, vals in values.items():
        for seed, v in enumerate(vals):
            st = (status or {}).get(init, ["ok"] * len(vals))[seed]
            rows.append({"run_id": f"{init}-{seed}", "problem": "p", "init": init, "seed": seed, "status": st,
                         "val_acc_final": v, "test_acc": v, "best_val_acc": v, "auc_val_acc": v,
                         "steps_to_target": 10.0, "images_per_s": 100.0, "num_classes": 10})
    return pd.DataFrame(rows)


def test_one_hundredth_below_on_every_seed_is_worse():
    base = np.random.default_rng(0).uniform(0.85, 0.95, 10)
    runs = _runs({"ref": base, "lower": base - 0.01})
    table, _ = rank_problem(runs, baseline="ref")
    lower = table.set_index("init").loc["lower"]
    assert lower["verdict"] == "worse" and lower["p_holm"] < 0.005
    assert lower["delta"] == pytest.approx(-0.01) and lower["delta_ci_high"] < 0
    # The same with the best as the reference and more rivals: still worse, never "tied".
    runs = _runs({"ref": base, "lower": base - 0.01, "a": base - 0.1, "b": base - 0.2})
    by = rank_problem(runs)[0].set_index("init")
    assert by.loc["ref", "verdict"] == "best" and by.loc["lower", "verdict"] == "worse"


def test_issue_example_seed_floor_is_said_with_holm_and_zeros():
    """6 seeds, 3 rivals, perfectly ordered: p_holm = 3 x 2/2^6 = 0.094 for all, and the report says so."""
    base = np.linspace(0.90, 0.95, 6)
    runs = _runs({"a": base, "b": base - 0.01, "c": base - 0.02, "d": base - 0.03})
    table, notes = rank_problem(runs, test="wilcoxon")
    assert table["p_holm"].dropna().tolist() == pytest.approx([0.09375] * 3)
    assert not table["verdict"].isin(["better", "worse"]).any()
    floor = [n for n in notes if "smallest p_holm" in n]
    assert floor and "0.0938" in floor[0] and "not below 0.05" in floor[0] and "7 seeds" in floor[0]
    # Zero differences do not count: 10 seeds with 4 ties leave 6 non-zero differences.
    assert "not below" in seed_note([6, 6, 6], "wilcoxon") and "not below" not in seed_note([10, 10, 10], "wilcoxon")
    assert seeds_needed(1) == 6 and seeds_needed(3) == 7 and seeds_needed(9) == 9


def test_equal_distributions_are_not_called_worse():
    """Simulation: 5 schemes with identical distributions (a shared seed effect plus noise), 10 seeds.
    Against a declared baseline, Holm keeps the rate of studies with any better/worse near alpha."""
    rng = np.random.default_rng(2)
    flagged = 0
    for _ in range(200):
        seed_effect = rng.normal(0.9, 0.02, 10)
        runs = _runs({k: seed_effect + rng.normal(0, 0.01, 10) for k in "ABCDE"})
        verdicts = rank_problem(runs, baseline="A")[0]["verdict"]
        flagged += verdicts.isin(["better", "worse"]).any()
    assert flagged / 200 <= 0.09


def test_verdicts_never_contradict_their_numbers():
    """Random problems (equal, shifted, noisy, failing schemes): every word follows from the row's numbers."""
    rng = np.random.default_rng(3)
    margin, alpha = 0.005, 0.05
    seen = set()
    for trial in range(150):
        n = int(rng.integers(3, 12))
        base = rng.uniform(0.6, 0.95, n)
        values, status = {}, {}
        for k in range(int(rng.integers(2, 7))):
            values[f"s{k}"] = np.clip(base + rng.normal(rng.choice([0, 0, -0.01, 0.01, -0.1]), rng.uniform(0, .02), n),
                                      0, 1)
            status[f"s{k}"] = list(rng.choice(["ok", "ok", "ok", "collapsed"] if k % 3 else ["ok"], n))
        status["s1"] = ["collapsed"] * n if trial % 5 == 0 else status["s1"]
        baseline = "s0" if trial % 2 else None
        table, _ = rank_problem(_runs(values, status), test=["wilcoxon", "ttest"][trial % 2], baseline=baseline,
                                margin=margin, alpha=alpha)
        for _, row in table.iterrows():
            v = row["verdict"]
            seen.add(v)
            assert v in VERDICTS
            if row["init"] == row["reference"]:
                assert v == ("baseline" if baseline == row["init"] else "best") or row["failure_rate"] == 1
                continue
            if v in ("better", "worse", "equivalent"):
                assert row["paired_seeds"] >= 3
            assert (v == "failed") == (row["failure_rate"] == 1)
            if v == "better":
                assert row["p_holm"] < alpha and row["delta_ci_low"] > 0
            if v == "worse":
                assert row["p_holm"] < alpha and row["delta_ci_high"] < 0
            if v == "equivalent":
                assert row["p_holm"] >= alpha and -margin < row["delta_ci_low"] <= row["delta_ci_high"] < margin
            if not row["p_holm"] < alpha:
                assert v not in ("better", "worse")
    assert {"worse", "better", "equivalent", "inconclusive", "failed"} <= seen


def test_failed_schemes_and_a_zoom_that_leaves_them_out():
    base = np.random.default_rng(4).uniform(0.9, 0.95, 8)
    runs = _runs({"a": base, "b": base - 0.003, "c": base - 0.004, "zeros": np.full(8, 0.1),
                  "crashes": np.full(8, np.nan)}, {"zeros": ["collapsed"] * 8, "crashes": ["failed"] * 8})
    table, _ = rank_problem(runs)
    by = table.set_index("init")
    assert by.loc["zeros", "verdict"] == "failed" and by.loc["zeros", "failure_rate"] == 1
    assert by.loc["crashes", "verdict"] == "failed" and by.loc["crashes", "failed"] == 8
    assert np.isnan(by.loc["crashes", "p_holm"]) and table.iloc[-1]["init"] == "crashes"
    assert by.loc["zeros", "collapsed"] == 8 and by.loc["a", "failure_rate"] == 0
    assert on_scale(table, 0.005).tolist() == [i not in ("zeros", "crashes") for i in table["init"]]


def test_a_reference_must_have_trained():
    """A declared baseline that failed in every run stays the reference (its runs score as they ended, so the
    differences exist); the best scheme is never one with one lucky run."""
    base = np.random.default_rng(5).uniform(0.9, 0.95, 10)
    lucky = np.full(10, np.nan)
    lucky[0] = 0.99
    runs = _runs({"a": base, "b": base - 0.01, "dead": np.full(10, 0.1), "lucky": lucky},
                 {"dead": ["collapsed"] * 10, "lucky": ["ok"] + ["failed"] * 9})
    table, notes = rank_problem(runs, baseline="dead")
    by = table.set_index("init")
    assert by.loc["dead", "verdict"] == "failed" and (table["reference"] == "dead").all()
    assert any("failed in every run" in n and "best scheme here is a" in n for n in notes)
    assert by.loc["a", "verdict"] == "better" and by.loc["b", "verdict"] == "better"
    assert by.loc["a", "delta"] == pytest.approx((base - 0.1).mean())
    table, notes = rank_problem(runs)
    by = table.set_index("init")
    assert (table["reference"] == "a").all()
    assert by.loc["lucky", "rank"] == 3 and by.loc["lucky", "verdict"] == "inconclusive"  # 1 pair: no word
    assert by.loc["a", "verdict"] == "best" and by.loc["b", "verdict"] == "worse"
    few = _runs({"a": base[:2], "b": base[:2] - 0.01})
    assert rank_problem(few, test="ttest")[0].set_index("init").loc["b", "verdict"] == "inconclusive"


def test_unknown_baseline_and_bad_margin_are_one_line_errors():
    runs = _runs({"a": np.full(3, 0.9), "b": np.full(3, 0.8)}).assign(target=0.5)
    from initbench.errors import InitbenchError

    with pytest.raises(InitbenchError, match="unknown baseline 'c'; valid: a, b"):
        rank(runs, baseline="c")
    with pytest.raises(InitbenchError, match="margin must be between"):
        rank(runs, margin=2.0)


def test_across_problems_known_answers():
    rows = []
    for problem, values in (("p1", (0.9, 0.5, 0.1)), ("p2", (0.8, 0.6, 0.1))):
        for init, value in zip(("top", "mid", "low"), values, strict=True):
            for seed in range(8):
                rows.append({"run_id": f"{problem}{init}{seed}", "problem": problem, "init": init, "seed": seed,
                             "status": "ok", "val_acc_final": value + 0.001 * seed, "test_acc": value,
                             "best_val_acc": value, "auc_val_acc": value, "steps_to_target": 1.0,
                             "images_per_s": 1.0, "num_classes": 10, "target": 0.5})
    ranking = rank(pd.DataFrame(rows), baseline="mid")
    overall = ranking.overall.set_index("init")
    assert overall.loc["top", "prob_improvement"] == 1.0 and overall.loc["low", "prob_improvement"] == 0.0
    assert overall.loc["mid", "prob_improvement"] == 0.5
    assert overall.loc["top", "iqm_norm"] == pytest.approx(1.0, abs=0.003)
    assert overall.loc["low", "iqm_norm"] == pytest.approx(0.0, abs=0.01)
    lo, hi = overall.loc["top", ["iqm_ci_low", "iqm_ci_high"]]
    assert lo <= overall.loc["top", "iqm_norm"] <= hi and hi - lo < 0.01
    profile = ranking.profile.set_index(["init", "tau"])["fraction"]
    assert profile[("top", 0.0)] == 1.0 and profile[("mid", 0.1)] == 0.0
    assert overall.loc["top", "wins"] == 2 and overall.loc["low", "worse"] == 2


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
    assert len(runs) == 12 and set(runs["status"]) == {"ok", "collapsed"}
    assert set(runs.loc[runs["status"] == "collapsed", "init"]) == {"zeros"}
    for init, g in runs.groupby("init"):
        row = ranking[ranking["init"] == init].iloc[0]
        assert row["n"] == 4
        assert row["mean"] == pytest.approx(g["val_acc_final"].mean())  # ranked on validation by default
        assert row["test_acc"] == pytest.approx(g["test_acc"].mean())  # reported beside it
        assert row["std"] == pytest.approx(g["val_acc_final"].std(ddof=1))
        assert row["median"] == pytest.approx(g["val_acc_final"].median())
        assert row["iqm"] == pytest.approx(stats.trim_mean(g["val_acc_final"], 0.25))
        assert row["best_val_acc"] == pytest.approx(g["best_val_acc"].mean())
        lo, hi = stats.t.interval(0.95, 3, g["val_acc_final"].mean(), stats.sem(g["val_acc_final"]))
        if g["val_acc_final"].std() > 0:
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((max(lo, 0), min(hi, 1)))
    assert ranking["mean"].is_monotonic_decreasing
    assert ranking.iloc[-1]["init"] == "zeros" and ranking.iloc[-1]["verdict"] == "failed"
    # paired differences to the reference, and Holm, recomputed from the runs
    wide = runs.pivot(index="seed", columns="init", values="val_acc_final")
    reference = ranking["reference"].iloc[0]
    assert reference == ranking.iloc[0]["init"]
    assert ranking.loc[ranking["verdict"] == "failed", "p_holm"].isna().all()  # not tested: outside Holm's family
    others = ranking[(ranking["init"] != reference) & (ranking["verdict"] != "failed")]
    raw = []
    for _, row in others.iterrows():
        d = wide[row["init"]] - wide[reference]
        assert row["delta"] == pytest.approx(d.mean())
        raw.append(1.0 if (d == 0).all() else stats.wilcoxon(d).pvalue)
    assert others["p_holm"].tolist() == pytest.approx(holm(raw))
    ranks = wide.rank(axis=1, ascending=False)
    for init, mean_rank in ranks.mean().items():
        assert ranking.set_index("init").loc[init, "mean_rank"] == pytest.approx(mean_rank)
    # steps to target recomputed from the curves on disk
    for _, run_ in runs.iterrows():
        m = pd.read_csv(study / run_["path"] / "metrics.csv").dropna(subset=["val/acc"])
        hit = m[m["val/acc"] >= run_["target"]]["step"]
        assert (run_["steps_to_target"] == hit.min()) if len(hit) else np.isnan(run_["steps_to_target"])
        assert run_["auc_val_acc"] == pytest.approx(m["val/acc"].mean())


def test_report_documents(study, tmp_path):
    (tmp_path / "curves_gone_problem.png").write_bytes(b"old plot")  # an earlier report's plot of another problem
    (tmp_path / "figure1.png").write_bytes(b"the user's own image")
    files = write_report(study, out=tmp_path, baseline="xavier_uniform")
    assert not (tmp_path / "curves_gone_problem.png").exists()
    assert (tmp_path / "figure1.png").read_bytes() == b"the user's own image"
    (tmp_path / "figure1.png").unlink()
    page = files["html"].read_text()
    # each problem opens with its answer, then its forest plot, then the main table; the other plots come later
    assert page.index("class='answer'") < page.index("<img class='forest'") < page.index("<table>") \
        < page.index("<img alt=")
    assert "<div class='scroll'><table>" in page and "max-width:1360px" in page  # wide tables scroll at 1400 px
    assert page.count("data:image/png;base64,") == 7 and " src='http" not in page  # step0_<problem>.png among them
    assert "class='v-baseline'" in page and "class='v-failed'" in page and "Versions" in page
    md = files["markdown"].read_text()
    lines = md.splitlines()
    assert "ranked on final validation accuracy (`val_acc_final`) in accuracy points (0-100)" in lines[2]
    assert lines[6].startswith("- Reference: **xavier_uniform** (the declared baseline): final validation accuracy ")
    assert "never used to choose" in md
    assert "| rank | init | lr | verdict | mean [95% CI] | delta [95% CI] | p_holm | failures | test |" in md
    assert "Wilcoxon" in md and "winner's curse" not in md
    assert all(f"**{word}**" in md for word in VERDICTS)  # the legend
    assert "Reference: **xavier_uniform**" in md and "smallest p_holm" in md
    ranking = pd.read_csv(files["ranking"])
    assert ranking.set_index("init").loc["xavier_uniform", "verdict"] == "baseline"
    assert {"delta", "delta_ci_low", "delta_ci_high", "p_holm", "failure_rate"} <= set(ranking.columns)
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name.split("_")[0] for p in tmp_path.glob("*.png")} == {"forest", "curves", "final", "gradnorm0",
                                                                       "grad", "update", "step0"}
    # choosing on the test set is allowed, and said in bold
    files = write_report(study, out=tmp_path / "t", metric="test_acc")
    assert "> Ranked on final test accuracy (`test_acc`): this selects on the test set" in files["markdown"].read_text()
    assert "winner's curse" in files["markdown"].read_text()


def test_zeros_on_digits_is_collapsed(tmp_path, tiny_spec):
    """A run that never trained (loss at ln(10), accuracy at chance) ends as `collapsed`, not `ok`."""
    _, summary = run(tiny_spec(init="zeros"), tmp_path, progress=False)
    assert summary["status"] == "collapsed"
    assert summary["train_loss_final"] == pytest.approx(math.log(10), rel=0.05)
    assert summary["val_acc_final"] <= summary["chance_acc"] + 0.1
    _, summary = run(tiny_spec(init="kaiming_normal"), tmp_path, progress=False)
    assert summary["status"] == "ok"


def test_runs_with_different_settings_are_separate_problems(study, tmp_path, tiny_spec):
    mixed = tmp_path / "mixed"
    shutil.copytree(study, mixed)
    for seed in range(2):  # the same grid point at another learning rate, dropped into the same folder
        run(tiny_spec(init="kaiming_normal", seed=seed, epochs=3, batch_size=64, limit_train=384, lr=0.5,
                      limit_test=256), mixed, progress=False)
    loaded = load_study(mixed)
    problems = loaded.runs.groupby("problem")["run_id"].count().to_dict()
    assert problems == {"digits_mlp(hidden=[32]) [lr=0.05]": 12, "digits_mlp(hidden=[32]) [lr=0.5]": 2}
    assert loaded.split == {"digits_mlp(hidden=[32])": {"lr": [0.05, 0.5]}}
    files = write_report(mixed, out=tmp_path / "r")
    md = files["markdown"].read_text()
    assert "separate problems, never pooled" in md and "digits_mlp(hidden=[32]): lr = 0.05, 0.5" in md
    assert "## digits_mlp(hidden=[32]) [lr=0.5]" in md
    ranking = pd.read_csv(files["ranking"])
    assert ranking.groupby("problem")["n"].sum().to_dict() == problems
    assert (tmp_path / "r" / "ranks.png").exists() and (tmp_path / "r" / "profile.png").exists()


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
    assert "unknown metric 'loss'; valid: val_acc_final, best_val_acc, auc_val_acc, test_acc" in capsys.readouterr().err
    assert main(["report", str(study), "--out", str(tmp_path / "r"), "--baseline", "orthogonal"]) == 2
    assert "unknown baseline 'orthogonal'; valid: kaiming_normal, xavier_uniform, zeros" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # checked before any file is written
    (tmp_path / "file").write_text("")
    assert main(["report", str(study), "--out", str(tmp_path / "file" / "r")]) == 2
    assert "cannot write the report to" in capsys.readouterr().err


# Measures the rendered page from inside the browser, before adding its one line of output to the page.
PROBE = """<script>window.addEventListener("load", () => {
  const box = (sel) => { const r = document.querySelector(sel).getBoundingClientRect(); return [r.top, r.bottom]; };
  const images = [...document.images];
  const out = {answer: box(".answer"), forest: box("img.forest"),
               width: document.documentElement.clientWidth, scroll: document.documentElement.scrollWidth,
               images: images.length, broken: images.filter((i) => !(i.complete && i.naturalWidth > 0)).length};
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


def test_the_html_report_answers_on_its_first_screen_in_a_real_browser(study, tmp_path):
    """Headless Chromium at 1366x768: the first problem's answer and forest plot are on the first screen, every image
    decodes, and the page does not scroll sideways. A screenshot is left beside the page for a person to look at."""
    import re
    import subprocess

    files = write_report(study, out=tmp_path / "report", baseline="xavier_uniform")
    page = files["html"].read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"))
    chromium = [shutil.which("chromium") or "/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
                "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1366,768"]
    done = subprocess.run([*chromium, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout)
    assert found, done.stderr[-2000:]
    seen = json.loads(found.group(1).replace("&quot;", '"'))
    # The page's layout depends on its width only (no heights in its style), so the first screen is its top 768 px
    # (headless Chromium keeps part of a --dump-dom window's height for its own frame: innerHeight is less there).
    assert seen["width"] == 1366, seen
    assert 0 < seen["answer"][0] < seen["answer"][1] <= 768, seen
    assert seen["answer"][1] <= seen["forest"][0] < seen["forest"][1] <= 768, seen
    assert seen["images"] == page.count("<img") >= 7 and seen["broken"] == 0, seen
    assert seen["scroll"] <= seen["width"], seen
    subprocess.run([*chromium, f"--screenshot={tmp_path / 'first-screen.png'}", files["html"].as_uri()],
                   capture_output=True, timeout=120)
    assert (tmp_path / "first-screen.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
