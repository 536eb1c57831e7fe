"""Everyday use: a repeated run says it was reused and --force trains it again; folder names show the init's
parameters."""

import pytest

from initbench.cli import main
from initbench.plan import RunSpec

TINY = ["--dataset", "digits", "--model", "mlp(hidden=[16])", "--epochs", "1", "--limit-train", "128",
        "--limit-val", "64", "--limit-test", "64", "--accelerator", "cpu", "--no-progress"]


def test_a_complete_run_is_said_to_be_reused_and_force_trains_it_again(tmp_path, capsys):
    out = ["--out", str(tmp_path)]
    assert main(["run", *TINY, *out]) == 0
    first = capsys.readouterr().out
    record = next(tmp_path.glob("digits_mlp/kaiming_normal-seed0-*"))
    assert main(["run", *TINY, *out]) == 0
    again = capsys.readouterr().out
    assert again.startswith("already complete (recorded ") and str(record) in again.splitlines()[0]
    assert "nothing was trained; --force trains it again" in again and "already" not in first
    before = (record / "summary.json").stat().st_mtime_ns
    assert main(["run", *TINY, *out, "--force"]) == 0
    assert "already complete" not in capsys.readouterr().out
    assert (record / "summary.json").stat().st_mtime_ns > before  # the same folder, a new record
    assert [p.name for p in tmp_path.glob("digits_mlp/*")] == [record.name]
    assert not list(tmp_path.glob("digits_mlp/.*"))  # no staging folder or lock left


@pytest.mark.parametrize(("init", "name"), [
    ("normal(std=0.02)", "normal_std-0.02-seed0-"),
    ("normal(std=1)", "normal-seed0-"),
    ("kaiming_uniform(mode=fan_out)", "kaiming_uniform_mode-fan_out-seed0-"),
    ("sparse(fallback=normal(std=0.5))", "sparse_fallback-normal-std-0.5-seed0-"),
    ("kaiming_normal(rules={'fc.*': zeros})", "kaiming_normal+rules-seed0-"),
])
def test_folder_names_show_the_init_and_its_parameters(init, name):
    spec = RunSpec(init=init)
    assert spec.name == name + spec.run_id[:8]
