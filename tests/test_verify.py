"""`initbench verify`: a sample of a study's records retrained from their config.json reproduces them bit for bit;
a changed number or environment is named (file, metric, step; versions, threads), with exit code 1."""

import json
import re
import textwrap

import pytest

from initbench.cli import main

STUDY = textwrap.dedent("""
    name: checked
    datasets: [digits]
    models: ['mlp(hidden=[16])', 'simplecnn(channels=[4, 8], fc=[16])']
    inits: [kaiming_normal, orthogonal, xavier_uniform]
    seeds: 2
    tune: {lr: [0.01, 0.1], seeds: [100]}
    train: {epochs: 1, batch_size: 32, limit_train: 256, limit_val: 64, limit_test: 64, accelerator: cpu, log_every: 4}
""")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    (root / "s.yaml").write_text(STUDY)
    assert main(["sweep", str(root / "s.yaml"), "--out", str(root / "study"), "--no-progress", "--no-report"]) == 0
    return root / "study"


def _verify(capsys, *args):
    code = main(["verify", *map(str, args)])
    return code, capsys.readouterr().out


def test_a_sample_over_every_problem_and_stage_is_reproduced_bit_for_bit(study, capsys):
    code, out = _verify(capsys, study, "--sample", "4")
    assert code == 0 and "4/4 reproduced bit for bit" in out, out
    checked = re.findall(r"  same  (digits_\w+)/\S+-seed(\d+)-", out)
    strata = {(problem, "tuning" if seed == "100" else "comparison") for problem, seed in checked}
    assert len(strata) == 4, out  # two problems x two stages, one record each
    assert "lockstep vmap group of 6" in out and "lockstep vmap group of 3" in out  # tuning groups: 3 inits x 2 lrs
    assert _verify(capsys, study, "--sample", "4")[1].splitlines()[1:-1] == out.splitlines()[1:-1]  # same draw
    other = _verify(capsys, study, "--sample", "4", "--seed", "1")[1]
    assert other.splitlines()[1:-1] != out.splitlines()[1:-1]


def test_a_changed_number_is_named_with_its_metric_step_and_environment(study, capsys, tmp_path):
    import shutil

    changed = tmp_path / "changed"
    shutil.copytree(study, changed)
    _, out = _verify(capsys, changed, "--sample", "1")
    (run,) = re.findall(r"  same  (\S+) ", out)
    metrics = changed / run / "metrics.csv"
    lines = metrics.read_text().splitlines()
    header, row = lines[0].split(","), lines[2].split(",")
    column = header.index("train/loss")
    row[column] = repr(float(row[column]) + 1e-6)
    metrics.write_text("\n".join([*lines[:2], ",".join(row), *lines[3:]]) + "\n")
    config = json.loads((changed / run / "config.json").read_text())
    config["versions"]["torch"] = "0.0.1"
    (changed / run / "config.json").write_text(json.dumps(config))
    code, out = _verify(capsys, changed, "--sample", "1")
    assert code == 1 and "0/1 reproduced bit for bit" in out, out
    assert f"DIFFERS {run} " in out and f"metrics.csv train/loss at step {row[0]}: {row[column]} stored, " in out
    assert "environment: torch 0.0.1 stored, 2." in out


@pytest.mark.parametrize(("args", "message"), [
    (["--sample", "0"], "--sample must be at least 1, got 0"),
    (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
])
def test_bad_verify_values_are_one_line(args, message, study, capsys):
    code = main(["verify", str(study), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_folder_without_records_is_one_line(tmp_path, capsys):
    code = main(["verify", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == f"initbench: error: no complete run records under {tmp_path}"


def test_the_report_says_where_the_records_were_made_and_warns_when_they_mix(study, tmp_path):
    import shutil

    from initbench.report import write_report

    mixed = tmp_path / "mixed"
    shutil.copytree(study, mixed)
    write_report(mixed)
    text = (mixed / "report.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith("**Reproducibility.**"))
    assert "The 24 records were made on cpu: " in line and " torch threads, initbench " in line, line
    assert "engines: lockstep vmap (24)" in line and f"`initbench verify {mixed}`" in line
    assert "environments" not in text
    config = next(mixed.glob("digits_mlp/*/config.json"))
    changed = json.loads(config.read_text())
    changed["threads"] = 7
    config.write_text(json.dumps(changed))
    write_report(mixed)
    text = (mixed / "report.md").read_text()
    assert "7 torch threads" in text and "(1 run)" in text and "(23 runs)" in text
    assert "This study's records were made in 2 environments" in text
