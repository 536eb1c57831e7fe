"""Claims declared in a sweep file: each word on constructed records with known answers, the false-positive rate by
simulation, bad claims refused before any work, the declaration time and the "declared after the data" mark, and a
small study with claims end to end."""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

from initbench.cli import main
from initbench.errors import InitbenchError
from initbench.plan.claims import METRICS, Claim
from initbench.plan.sweep import load_sweep
from initbench.report.claims import judge
from initbench.report.stats import METRICS_HIGHER_IS_BETTER

SETTINGS = json.dumps({"lr": 0.01, "epochs": 2})


def _runs(depths: dict[int, dict[str, tuple[np.ndarray, list[str] | None]]]) -> pd.DataFrame:
    """A study of `mlp(width=32, depth=D)` problems on digits: per depth, per scheme, the per-seed scores and the
    runs' statuses (None: all ok)."""
    rows = []
    for depth, schemes in depths.items():
        for init, (values, status) in schemes.items():
            for seed, v in enumerate(values):
                rows.append({"problem": f"digits_mlp[depth={depth}]", "dataset": "digits",
                             "model": f"mlp(width=32, depth={depth})", "settings": SETTINGS, "init": init,
                             "seed": seed, "status": (status or ["ok"] * len(values))[seed], "val_acc_final": v,
                             "best_val_acc": v, "auc_val_acc": v, "test_acc": v, "num_classes": 10})
    return pd.DataFrame(rows)


def _judge(runs: pd.DataFrame, *claims: Claim, margin: float = 0.005) -> pd.DataFrame:
    order = list(dict.fromkeys(runs["problem"]))
    return judge(claims, runs, order, "val_acc_final", "wilcoxon", 0.05, margin).set_index("id")


def _claim(id_: str, kind: str, *schemes: str, **kw) -> Claim:
    return Claim(id_, kind, schemes, **kw)


BASE = np.random.default_rng(0).uniform(0.85, 0.95, 10)
TIES = np.tile([0.001, -0.001], 5)  # a mean difference of 0, every pair 0.1 points apart


def test_paired_claims_give_each_word_on_known_answers():
    runs = _runs({2: {"he": (BASE + 0.05, None), "xavier": (BASE, None), "same": (BASE + TIES, None),
                      "low": (BASE - 0.05, None)}})
    for c, word in [(_claim("up", "better", "he", "xavier"), "supported"),
                    (_claim("down", "better", "low", "xavier"), "contradicted"),  # the other direction
                    (_claim("tie", "better", "same", "xavier"), "contradicted"),  # no difference: inside +-0.5
                    (_claim("worse", "worse", "low", "xavier"), "supported"),
                    (_claim("eq", "equivalent", "same", "xavier", margin=1.0), "supported"),
                    (_claim("eq-far", "equivalent", "he", "xavier", margin=1.0), "contradicted"),
                    (_claim("nw", "not_worse", "he", "xavier", margin=1.0), "supported"),
                    (_claim("nw-low", "not_worse", "low", "xavier", margin=1.0), "contradicted")]:
        row = _judge(runs, c).loc[c.id]
        assert row["word"] == word, (c.id, row.to_dict())
    # 10 pairs all one way: the exact Wilcoxon p is 2/2^10; alone in its family, p_holm is p
    row = _judge(runs, _claim("up", "better", "he", "xavier")).loc["up"]
    assert row["p_value"] == pytest.approx(2 / 2**10) and row["p_holm"] == pytest.approx(2 / 2**10)
    assert row["delta"] == pytest.approx(0.05) and row["pairs"] == 10 and "+5.00" in row["numbers"]
    # two tested claims: Holm multiplies the smaller p by 2 (an untested equivalence claim is not in the family)
    both = _judge(runs, _claim("up", "better", "he", "xavier"), _claim("w", "worse", "low", "xavier"),
                  _claim("eq", "equivalent", "same", "xavier", margin=1.0))
    assert both.loc["up", "p_holm"] == pytest.approx(2 * 2 / 2**10) and math.isnan(both.loc["eq", "p_holm"])
    # 4 seeds cannot reach p < 0.05 (2/2^4 = 0.125): not shown, however large the difference
    few = _runs({2: {"he": (BASE[:4] + 0.3, None), "xavier": (BASE[:4], None)}})
    row = _judge(few, _claim("up", "better", "he", "xavier")).loc["up"]
    assert row["word"] == "not shown" and row["p_value"] == pytest.approx(0.125)


def test_failure_claims_use_exact_tests_and_judge_a_scheme_that_always_failed():
    stalls = ["collapsed"] * 8
    runs = _runs({30: {"he": (BASE[:8], None), "xavier": (np.full(8, 0.1), stalls)}})
    judged = _judge(runs, _claim("stalls", "fails", "xavier", "he"), _claim("he-wins", "better", "he", "xavier"),
                    _claim("backwards", "fails", "he", "xavier"), _claim("alone", "fails", "xavier"),
                    _claim("trains", "trains", "he", "xavier"))
    fisher = 2 / special.comb(16, 8)  # 8/8 against 0/8: the two extreme tables of C(16, 8)
    assert judged.loc["stalls", "p_value"] == pytest.approx(fisher)
    assert judged.loc["stalls", "failures_a"] == "8/8" and judged.loc["stalls", "failures_b"] == "0/8"
    assert judged.loc["alone", "p_value"] == pytest.approx(2 / 2**8)  # binomial, 8 of 8 against one half
    assert judged["word"].to_dict() == {"stalls": "supported", "he-wins": "supported", "backwards": "contradicted",
                                        "alone": "supported", "trains": "supported"}
    assert judged.loc["he-wins", "delta"] == pytest.approx((BASE[:8] - 0.1).mean())  # the failed runs scored
    five = _runs({30: {"he": (BASE[:5], None), "xavier": (np.full(5, 0.1), stalls[:5])}})
    assert _judge(five, _claim("s", "fails", "xavier", "he")).loc["s", "p_value"] == pytest.approx(2 / 252)


def test_a_trend_is_tested_where_the_first_scheme_stops_training():
    dead = (np.full(8, 0.1), ["collapsed"] * 8)
    runs = _runs({2: {"he": (BASE[:8], None), "default": (BASE[:8], None)},
                  16: {"he": (BASE[:8], None), "default": dead},
                  32: {"he": dead, "default": dead}})
    judged = _judge(runs, _claim("first", "fails_sooner", "default", "he", along="depth"),
                    _claim("wrong", "fails_sooner", "he", "default", along="depth"))
    assert judged.loc["first", "word"] == "supported" and judged.loc["wrong", "word"] == "contradicted"
    assert judged.loc["first", "p_value"] == pytest.approx(2 / special.comb(16, 8))
    assert "at depth 16" in judged.loc["first", "failures_a"]
    same = _runs({2: {"he": (BASE[:8], None), "default": (BASE[:8], None)}, 16: {"he": dead, "default": dead}})
    assert _judge(same, _claim("tie", "fails_sooner", "default", "he", along="depth")).loc["tie", "word"] == "not shown"


def test_false_positive_rate_of_claims_under_the_null_by_simulation():
    """Two schemes from one distribution: a better claim, and a fails claim at equal failure rates, read supported
    in at most about alpha of studies (both tests are exact or conservative)."""
    rng = np.random.default_rng(1)
    supported = {"better": 0, "fails": 0}
    trials = 300
    for _ in range(trials):
        a, b = rng.normal(0.9, 0.02, 10), rng.normal(0.9, 0.02, 10)
        sa, sb = (["collapsed" if x else "ok" for x in rng.random(10) < 0.4] for _ in range(2))
        runs = _runs({2: {"a": (a, sa), "b": (b, sb)}})
        for kind in supported:
            supported[kind] += _judge(runs, _claim("c", kind, "a", "b")).loc["c", "word"] == "supported"
    # one-sided: half of alpha's two-sided share, plus sampling error (3 sd of a binomial of 300 at 0.05)
    assert supported["better"] / trials < 0.025 + 3 * math.sqrt(0.05 * 0.95 / trials)
    assert supported["fails"] / trials < 0.025 + 3 * math.sqrt(0.05 * 0.95 / trials)


def test_the_claims_metrics_are_the_reports():
    assert tuple(METRICS_HIGHER_IS_BETTER) == METRICS


STUDY = """\
    name: small
    datasets: [digits]
    models:
      - {name: mlp, vary: {depth: [1, 2]}, width: 16}
    inits: [kaiming_normal, zeros]
    seeds: 3
    baseline: zeros
    train: {epochs: 1, batch_size: 64, limit_train: 256, limit_val: 128, limit_test: 128, accelerator: cpu}
    claims:
"""
CLAIMS = """\
  - {id: zeros-stalls, fails: zeros, than: kaiming_normal, where: {depth: 2}}
  - {id: he-better, better: kaiming_normal, than: zeros, where: {depth: 1}}
"""


def _study(claims: str) -> str:
    return textwrap.dedent(STUDY) + claims

BAD = {
    "unknown scheme": ("- {id: a, better: lsuv, than: zeros, where: {depth: 1}}",
                       "claim a: lsuv is not one of the study's inits; valid: kaiming_normal, zeros"),
    "misspelt kind": ("- {id: a, beter: kaiming_normal, than: zeros}", "unknown key beter; did you mean better?"),
    "unknown where key": ("- {id: a, fails: zeros, where: {deep: 1}}", "where names 'deep', which no problem has "
                          "(did you mean depth?)"),
    "absent axis value": ("- {id: a, fails: zeros, where: {depth: 3}}", "where depth=3 matches no problem; depth is "
                          "one of 1, 2"),
    "two problems": ("- {id: a, fails: zeros}", "where picks 2 problems; tell them apart with depth"),
    "no than": ("- {id: a, better: zeros, where: {depth: 1}}", "better needs than:"),
    "margin on better": ("- {id: a, better: zeros, than: kaiming_normal, margin: 1, where: {depth: 1}}",
                         "margin applies to equivalent and not_worse claims only"),
    "trend without along": ("- {id: a, fails_sooner: zeros, than: kaiming_normal}", "along: (the axis)"),
    "bad metric": ("- {id: a, better: zeros, than: kaiming_normal, metric: loss, where: {depth: 1}}",
                   "metric 'loss': valid: val_acc_final"),
    "one id twice": ("- {id: a, fails: zeros, where: {depth: 1}}\n  - {id: a, fails: zeros, where: {depth: 2}}",
                     "claim a: the id is used twice"),
    "along not a name": ("- {id: a, fails_sooner: zeros, than: kaiming_normal, along: [depth]}",
                         "along names one key of the problems"),
    "along not on every problem": ("- {id: a, fails_sooner: zeros, than: kaiming_normal, along: norm}",
                                   "along 'norm': no problem that where picks has it"),
    "two bad claims": ("- {id: a, fails: lsuv, where: {depth: 1}}\n  - {id: b, fails: zeros, where: {depth: 9}}",
                       "2 bad claims: (1) claim a: lsuv"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_claims_are_one_line_errors_before_any_work(case, tmp_path, capsys):
    claims, message = BAD[case]
    path = tmp_path / "s.yaml"
    path.write_text(_study("  " + claims + "\n"))
    with pytest.raises(InitbenchError, match="claim"):
        load_sweep(path)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


def test_claims_are_checked_before_torch_loads(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(_study("  " + BAD["unknown scheme"][0] + "\n"))
    code = ("import sys\nfrom initbench.plan.sweep import load_sweep\ntry:\n    load_sweep(sys.argv[1])\n"
            "except Exception as exc:\n    print(type(exc).__name__, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["InitbenchError", "False"]


def test_a_study_with_claims_end_to_end_and_claims_declared_after_the_data(tmp_path, capsys):
    path, out = tmp_path / "s.yaml", tmp_path / "out"
    path.write_text(_study(CLAIMS))
    assert main(["sweep", str(path), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.index("claims\n") < printed.index("digits_mlp[depth=1]")  # the claims answer first
    study = json.loads((out / "sweep.json").read_text())
    first = {c["id"]: c for c in study["claims"]}
    assert set(first) == {"zeros-stalls", "he-better"} and not any(c["after_data"] for c in first.values())
    judged = pd.read_csv(out / "claims.csv").set_index("id")
    # zeros never trains (3/3 collapsed) and kaiming_normal does: 3 against 3 cannot reach p < 0.05 (Fisher 0.1)
    assert judged.loc["zeros-stalls", "failures_a"] == "3/3" and judged.loc["zeros-stalls", "failures_b"] == "0/3"
    assert judged.loc["zeros-stalls", "p_value"] == pytest.approx(0.1)
    assert set(judged["word"]) == {"not shown"}
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"] == "zeros" and set(pd.read_csv(out / "ranking.csv")["reference"]) == {"zeros"}
    html = (out / "report.html").read_text()
    assert html.index("<h2>Claims</h2>") < html.index("digits_mlp[depth=1]</h2>")
    assert "after the data" not in html
    # a claim added once the runs exist is marked; the ones declared before keep their time
    more = CLAIMS + "  - {id: late, trains: kaiming_normal, where: {depth: 1}}\n"
    path.write_text(_study(more))
    assert main(["sweep", str(path), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    again = {c["id"]: c for c in json.loads((out / "sweep.json").read_text())["claims"]}
    assert again["zeros-stalls"] == first["zeros-stalls"] and again["late"]["after_data"] is True
    assert "Declared after the data: late." in (out / "report.md").read_text()
    # report --claims judges another file's claims on the same records, after the data
    other = tmp_path / "claims.yaml"
    other.write_text("claims:\n  - {id: he-trains, trains: kaiming_normal, where: {depth: 2}}\n")
    assert main(["report", str(out), "--claims", str(other), "--out", str(tmp_path / "r")]) == 0
    assert "not shown: he-trains: kaiming_normal trains" in capsys.readouterr().out
    judged = pd.read_csv(tmp_path / "r" / "claims.csv")
    assert judged["id"].tolist() == ["he-trains"] and judged["after_data"].tolist() == [True]
    other.write_text("claims:\n  - {id: x, trains: lsuv, where: {depth: 2}}\n")
    assert main(["report", str(out), "--claims", str(other), "--out", str(tmp_path / "bad")]) == 2
    assert "lsuv is not one of the study's inits" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_gallery_studies_plan_and_train_one_run_of_each_problem(tmp_path, capsys):
    """Every study under experiments/papers loads with its claims; one run of each problem trains briefly."""
    import yaml

    papers = sorted(Path("experiments/papers").glob("*.yaml"))
    assert len(papers) >= 5
    for paper in papers:
        sweep = load_sweep(paper)
        assert sweep.claims, paper
        doc = yaml.safe_load(paper.read_text())
        doc.pop("claims")
        doc.pop("baseline", None)
        doc.pop("tune", None)
        doc.update(seeds=[0], inits=doc["inits"][:1])
        doc["train"] = {**doc.get("train", {}), "epochs": 1, "limit_train": 64, "limit_val": 64, "limit_test": 64,
                        "batch_size": 32}
        small = tmp_path / paper.name
        small.write_text(yaml.safe_dump(doc))
        problems = {(r.dataset, r.model) for r in sweep.runs}
        out = tmp_path / paper.stem
        assert main(["sweep", str(small), "--out", str(out), "--no-progress", "--no-report"]) in (0, 1)
        capsys.readouterr()
        assert len(list(out.glob("*/*/summary.json"))) == len(problems), paper


def test_a_word_that_a_spec_reads_as_a_value_names_its_axis_and_its_problem():
    """`vary: {norm: [none, batch]}`: the spec reads none as None; the axis and a claim's where still find it."""
    from initbench.plan.axes import Axis
    from initbench.plan.claims import cell_attributes, select

    axis = Axis("resnet", "norm", ("none", "batch"), {"depth": 8})
    assert axis.value_of("resnet(depth=8, norm=None)", {}) == (True, "none")
    assert axis.label("none") == "resnet[norm=none]"
    cells = [cell_attributes("digits", f"resnet(depth=8, norm={n})", {}) for n in ("None", "batch")]
    assert select(Claim("c", "fails", ("zeros",), (("norm", "none"),)), cells) == [0]


def test_a_trend_runs_along_the_axis_in_increasing_order_and_skips_values_without_both_schemes():
    """Problems listed as separate models come in name order (depth=10 before depth=2): the trend sorts them by
    value; a value where one scheme has no runs is left out, never tested on 0 runs."""
    from initbench.plan.claims import cell_attributes, select

    cells = [cell_attributes("digits", f"mlp(depth={d})", {}) for d in (10, 2, 30)]
    claim = Claim("t", "fails_sooner", ("a", "b"), along="depth")
    assert select(claim, cells) == [1, 0, 2]
    dead = (np.full(6, 0.1), ["collapsed"] * 6)
    runs = _runs({2: {"a": (BASE[:6], None), "b": (BASE[:6], None)}, 8: {"a": dead},
                  16: {"a": dead, "b": (BASE[:6], None)}, 32: {"a": dead, "b": dead}})
    runs = runs.assign(model=runs["model"].str.replace("width=32, ", ""))
    row = _judge(runs, Claim("t", "fails_sooner", ("a", "b"), along="depth")).loc["t"]
    assert "at depth 16" in row["failures_a"] and "depth 8 left out" in row["why"]
    assert row["p_value"] == pytest.approx(2 / special.comb(12, 6)) and row["word"] == "supported"


def test_a_claims_note_that_yaml_reads_as_a_date_is_stored_as_text(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(_study("  - {id: a, fails: zeros, where: {depth: 1}, note: 2024-05-01}\n"))
    (claim,) = load_sweep(path).claims
    assert claim.source["note"] == "2024-05-01" and json.dumps(claim.source)


def test_a_tuned_study_cannot_pick_a_problem_by_its_lr(tmp_path):
    path = tmp_path / "s.yaml"
    text = _study("  - {id: a, fails: zeros, where: {depth: 1, lr: 0.05}}\n").replace(
        "train: {epochs: 1,", "tune: {lr: [0.01, 0.1], seeds: [100]}\ntrain: {epochs: 1,")
    path.write_text(text)
    with pytest.raises(InitbenchError, match="where names 'lr', which no problem has"):
        load_sweep(path)
