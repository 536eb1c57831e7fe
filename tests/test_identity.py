"""One run, one identity: every spelling of the same run has the same id, and records written under another
spelling (or by an earlier version) are found, never trained twice, and counted once."""

import json
import shutil

import pandas as pd
import pytest

from initbench import InitbenchError
from initbench.execute.units import claim_and_run, run
from initbench.inits import canonical_init
from initbench.record import record_dir, run_dir_for
from initbench.report import write_report
from initbench.spec import RunSpec


@pytest.mark.parametrize(("a", "b"), [
    (dict(seed=3), dict(seed=3, init_seed=3, data_seed=3)),
    (dict(init="normal(std=1)"), dict(init="normal(std=1.0)")),
    (dict(init="normal(std=1)"), dict(init="normal")),
    (dict(init="kaiming_normal"), dict(init="kaiming_normal(mode=fan_in, nonlinearity=auto, a=0)")),
    (dict(init="normal(mean=0.1, std=0.02)"), dict(init="normal(std=0.02, mean=0.1)")),
    (dict(init="normal(bias=0)"), dict(init="normal(bias=zeros)")),
    (dict(init="sparse"), dict(init="sparse(fallback=kaiming_uniform(nonlinearity=leaky_relu, a=2.23606797749979))")),
    (dict(lr=1), dict(lr=1.0)),
    (dict(weight_decay=0), dict(weight_decay=0.0)),
])
def test_every_spelling_of_a_run_is_one_run(a, b):
    assert RunSpec(**a).run_id == RunSpec(**b).run_id


@pytest.mark.parametrize(("a", "b"), [
    (dict(seed=3), dict(seed=3, init_seed=4)),
    (dict(init="normal"), dict(init="normal(std=0.5)")),
    (dict(init="kaiming_normal"), dict(init="kaiming_normal(mode=fan_out)")),
    (dict(init="kaiming_normal"), dict(init="kaiming_normal(rules={'*.bias': zeros})")),
])
def test_different_runs_stay_different(a, b):
    assert RunSpec(**a).run_id != RunSpec(**b).run_id


def test_the_canonical_spelling():
    assert canonical_init("normal(std=1.0)") == "normal"
    assert canonical_init("xavier_uniform(gain=relu, bias=keep)") == "xavier_uniform(gain=relu, bias=keep)"
    assert canonical_init({"name": "kaiming_normal", "rules": {"fc.*": "normal(std=1)"}}) == (
        "kaiming_normal(rules={'fc.*': normal})")
    with pytest.raises(InitbenchError, match="fallback of init 'sparse'"):
        canonical_init("sparse(fallback=normal(std=-1))")


def test_a_grid_that_spells_one_run_twice_is_refused(tmp_path, capsys):
    from initbench.cli import main

    (tmp_path / "s.yaml").write_text("name: s\ndatasets: [digits]\nmodels: [mlp]\ninits: [normal, normal(std=1.0)]\n"
                                     "seeds: 1\n")
    assert main(["sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert "the grid lists the same run twice" in capsys.readouterr().err


def _as_written_by_an_earlier_version(run_dir, spec_changes: dict):
    """The record moved to a folder with another id, its stored spec spelled differently (as old ids were)."""
    old = run_dir.with_name(run_dir.name[:-8] + "00000000")
    shutil.move(run_dir, old)
    config = json.loads((old / "config.json").read_text())
    config["run_id"] = "000000000000"
    config["spec"].update(spec_changes)
    (old / "config.json").write_text(json.dumps(config))
    return old


def test_records_under_another_spelling_are_found_not_retrained(tmp_path, tiny_spec):
    spec = tiny_spec(init="normal(std=1.0)")
    run_dir, _ = run(spec, tmp_path, progress=False)
    old = _as_written_by_an_earlier_version(run_dir, {"init": "normal(std=1)", "init_seed": 0})
    same = tiny_spec(init="normal")
    assert record_dir(same, tmp_path) == old
    found, _, outcome = claim_and_run(same, tmp_path, progress=False)
    assert (found, outcome) == (old, "done") and not run_dir_for(same, tmp_path).exists()
    # a copy of the same run under its new name: the report counts the run once and says why
    shutil.copytree(old, run_dir_for(same, tmp_path))
    run(tiny_spec(init="zeros"), tmp_path, progress=False)
    write_report(tmp_path)
    table = pd.read_csv(tmp_path / "runs.csv")
    assert sorted(table["init"]) == ["normal", "zeros"]
    assert "the same run as" in (tmp_path / "report.md").read_text()
