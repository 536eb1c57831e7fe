"""The record's one non-finite policy: every JSON file holds a non-finite number as the string "nan", "inf" or
"-inf", read back as a float; records written before it (null there) still read, and the report treats both alike."""

import json
import math

import pandas as pd

from initbench.execute.units import run
from initbench.record import RunRecord, read_json, write_json
from initbench.report import write_report


def test_json_files_keep_which_non_finite_number_it_was(tmp_path):
    data = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": {"d": None, "e": "text"}}
    write_json(tmp_path / "x.json", data)
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": "nan", "b": ["inf", "-inf", 1.5],
                                                             "c": {"d": None, "e": "text"}}
    back = read_json(tmp_path / "x.json")
    assert math.isnan(back["a"]) and back["b"] == [math.inf, -math.inf, 1.5] and back["c"] == {"d": None, "e": "text"}


def test_a_diverged_run_is_recorded_and_reported_whole_under_either_policy(tmp_path):
    from conftest import tiny

    wild = dict(model="mlp(hidden=[8], activation=identity)", lr=1e6)  # diverges within a few steps
    specs = [tiny(seed=seed, **wild) for seed in (0, 1)] + [tiny(seed=seed) for seed in (0, 1)]
    paths = [run(spec, tmp_path / "new", progress=False)[0] for spec in specs]
    diverged = RunRecord(paths[0])
    stored = json.loads((diverged.path / "summary.json").read_text())
    assert stored["status"] == "diverged" and stored["test_loss"] in ("nan", "inf")
    assert math.isnan(diverged.summary()["test_loss"]) or math.isinf(diverged.summary()["test_loss"])

    old = tmp_path / "old"  # the same study as an earlier version wrote it: null for every non-finite number
    for path in paths:
        target = old / path.relative_to(tmp_path / "new")
        target.mkdir(parents=True)
        for f in path.iterdir():
            text = f.read_text()
            if f.suffix == ".json":
                text = text.replace('"nan"', "null").replace('"inf"', "null").replace('"-inf"', "null")
            (target / f.name).write_text(text)
    assert RunRecord(old / paths[0].relative_to(tmp_path / "new")).summary()["test_loss"] is None

    for folder in (tmp_path / "new", tmp_path / "old"):
        write_report(folder)
    new, before = (pd.read_csv(tmp_path / f / "runs.csv") for f in ("new", "old"))
    assert (new["partial"].isna() | (new["partial"] == "")).all(), new["partial"].tolist()
    timing = ["wall_time_s", "images_per_s", "path"]
    pd.testing.assert_frame_equal(new.drop(columns=timing), before.drop(columns=timing))
