"""The report never crashes on a damaged record and never hides one: each is listed with the reason, and the
numbers it would have entered say how many runs they are over."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from initbench.execute.units import run
from initbench.record import run_dir_for
from initbench.report import write_report


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two schemes x three seeds of tiny real runs, trained once for every test here."""
    from conftest import tiny

    out = tmp_path_factory.mktemp("study")
    specs = [tiny(init=init, seed=seed) for init in ("kaiming_normal", "orthogonal") for seed in (0, 1, 2)]
    for spec in specs:
        run(spec, out, progress=False)
    return out, specs


def _copy(study, tmp_path) -> tuple[Path, Path]:
    out, specs = study
    copy = tmp_path / "results"
    shutil.copytree(out, copy)
    return copy, run_dir_for(specs[0], copy)  # kaiming_normal, seed 0


def _edit_json(path: Path, change) -> None:
    path.write_text(change(json.loads(path.read_text())) if callable(change) else change)


UNUSABLE = {
    "summary is a list": ("summary.json", "[]", "summary.json has no valid status"),
    "summary is null": ("summary.json", "null", "summary.json has no valid status"),
    "test_acc is a string": ("summary.json", lambda s: json.dumps({**s, "test_acc": "high"}),
                             "summary.json: test_acc is 'high', not a number"),
    "config has an empty spec": ("config.json", '{"spec": {}}', "config.json: the spec's dataset is None"),
    "config is not JSON": ("config.json", "{not json", "unreadable config.json (JSONDecodeError)"),
    "no config at all": ("config.json", None, "unreadable config.json (FileNotFoundError)"),
}


@pytest.mark.parametrize("case", UNUSABLE)
def test_unusable_records_are_listed_with_the_reason(case, study, tmp_path):
    results, damaged = _copy(study, tmp_path)
    name, content, reason = UNUSABLE[case]
    if content is None:
        (damaged / name).unlink()
    else:
        _edit_json(damaged / name, content)
    write_report(results)
    report = (results / "report.md").read_text()
    assert f"{damaged.relative_to(results)}: {reason}" in report
    ranking = pd.read_csv(results / "ranking.csv").set_index("init")
    assert ranking.loc["kaiming_normal", "n"] == 2 and ranking.loc["orthogonal", "n"] == 3


def test_a_corrupt_sweep_file_is_listed(study, tmp_path):
    results, _ = _copy(study, tmp_path)
    (results / "sweep.json").write_text("{oops")
    write_report(results)
    assert "sweep.json: unreadable (JSONDecodeError)" in (results / "report.md").read_text()


PARTIAL = {
    "truncated metrics": (lambda df: df.iloc[: len(df) // 2], "metrics.csv ends at step"),
    "no step column": (lambda df: df.drop(columns="step"), "metrics.csv has no step column"),
    "no finite validation accuracy": (lambda df: df.assign(**{"val/acc": float("nan")}),
                                      "metrics.csv has no finite validation accuracy"),
}


@pytest.mark.parametrize("case", PARTIAL)
def test_partial_metrics_leave_the_curve_metrics_out_and_say_so(case, study, tmp_path):
    results, damaged = _copy(study, tmp_path)
    change, reason = PARTIAL[case]
    metrics = pd.read_csv(damaged / "metrics.csv")
    change(metrics).to_csv(damaged / "metrics.csv", index=False)
    write_report(results, metric="auc_val_acc")
    assert reason in (results / "report.md").read_text()
    runs = pd.read_csv(results / "runs.csv")
    row = runs[runs["path"] == str(damaged.relative_to(results))].iloc[0]
    assert pd.isna(row["auc_val_acc"]) and reason in row["partial"]
    ranking = pd.read_csv(results / "ranking.csv").set_index("init")
    assert ranking.loc["kaiming_normal", "n"] == 2  # the auc mean is over the two runs that have one
    assert ranking.loc["kaiming_normal", "reached_target"].endswith("/2")


def test_a_nan_test_accuracy_is_left_out_of_its_mean_and_n(study, tmp_path):
    results, damaged = _copy(study, tmp_path)
    text = (damaged / "summary.json").read_text()
    summary = json.loads(text)
    (damaged / "summary.json").write_text(text.replace(f'"test_acc": {summary["test_acc"]}', '"test_acc": NaN'))
    write_report(results, metric="test_acc")
    ranking = pd.read_csv(results / "ranking.csv").set_index("init")
    assert ranking.loc["kaiming_normal", "n"] == 2
    assert "test_acc is nan" in (results / "report.md").read_text()


def _set_spec(key, value):
    return lambda c: json.dumps({**c, "spec": {**c["spec"], key: value}})


SCHEMA = {  # each damage: the record is listed with its reason and left out, the rest ranks as before
    "lr as a string": ("config.json", _set_spec("lr", "0.1"), "config.json: learning rate (lr) must be a number"),
    "malformed model spec": ("config.json", _set_spec("model", "mlp(("), "config.json: malformed model spec"),
    "unknown init": ("config.json", _set_spec("init", "no_such_init"), "config.json: unknown init 'no_such_init'"),
    "seed of 10^30": ("config.json", _set_spec("seed", 10**30), "config.json: seed must be below 4294967296"),
    "data block is a list": ("config.json", lambda c: json.dumps({**c, "data": [1, 2]}),
                             "config.json: data is a list, not a mapping"),
    "accuracy of 5": ("summary.json", lambda s: json.dumps({**s, "val_acc_final": 5.0}),
                      "summary.json: val_acc_final is 5.0, outside [0, 1]"),
    "negative steps": ("summary.json", lambda s: json.dumps({**s, "steps": -3}),
                       "summary.json: steps is -3, not a count"),
}


@pytest.mark.parametrize("case", SCHEMA)
def test_a_record_against_its_schema_is_listed_and_left_out(case, study, tmp_path):
    results, damaged = _copy(study, tmp_path)
    name, change, reason = SCHEMA[case]
    _edit_json(damaged / name, change)
    write_report(results)
    report = (results / "report.md").read_text()
    assert f"{damaged.relative_to(results)}: {reason}" in report, report[report.find("Skipped"):][:600]
    ranking = pd.read_csv(results / "ranking.csv").set_index("init")
    assert set(ranking.index) == {"kaiming_normal", "orthogonal"}
    assert ranking.loc["kaiming_normal", "n"] == 2 and ranking.loc["orthogonal", "n"] == 3


def _cell(column, value):
    def change(path: Path) -> None:
        lines = path.read_text().splitlines()
        header = lines[0].split(",")
        row = next(i for i, line in enumerate(lines[1:], 1) if line.split(",")[header.index(column)] != "")
        cells = lines[row].split(",")
        cells[header.index(column)] = value
        lines[row] = ",".join(cells)
        path.write_text("\n".join(lines) + "\n")
    return change


PARTS = {  # each damage: the record enters with what it holds, the damaged part left out and said so
    "a word in the curve": ("metrics.csv", _cell("val/acc", "abc"), "metrics.csv: val/acc holds 'abc', not a number"),
    "a word for a step": ("metrics.csv", _cell("step", "x"), "metrics.csv: step holds 'x', not a number"),
    "a word for a gradient norm": ("metrics.csv", _cell("grad_norm/total", "big"),
                                   "metrics.csv: grad_norm/total holds 'big', not a number"),
    "empty diagnostics": ("diagnostics.json", lambda p: p.write_text(""),
                          "unreadable diagnostics.json (JSONDecodeError): its step-0 figures are left out"),
    "diagnostics summary is a list": ("diagnostics.json", lambda p: p.write_text('{"summary": [1, 2]}'),
                                      "diagnostics.json: summary is not a mapping: its step-0 figures are left out"),
    "manifest is a list": ("manifest.json", lambda p: p.write_text("[1, 2]"),
                           "manifest.json is not a mapping: its layers are shown in file order"),
}


@pytest.mark.parametrize("case", PARTS)
def test_a_damaged_part_of_a_record_is_left_out_and_said(case, study, tmp_path):
    results, damaged = _copy(study, tmp_path)
    name, change, reason = PARTS[case]
    change(damaged / name)
    write_report(results, metric="auc_val_acc")
    report = (results / "report.md").read_text()
    assert f"{damaged.relative_to(results)}: {reason}" in report, report[report.find("Partial"):][:600]
    runs = pd.read_csv(results / "runs.csv")
    row = runs[runs["path"] == str(damaged.relative_to(results))].iloc[0]
    assert reason.split(":")[0] in row["partial"]
    if name == "metrics.csv":  # the curve's numbers are in no mean
        assert pd.isna(row["auc_val_acc"])
    if name == "diagnostics.json":
        assert row.filter(like="step0_").isna().all()
