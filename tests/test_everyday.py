"""Everyday use: a repeated run says it was reused and --force trains it again; folder names show the init's
parameters."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from initbench.cli import main
from initbench.spec import RunSpec

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


def test_a_sweep_without_a_terminal_prints_one_line_per_run(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "name: s\ndatasets: [digits]\ninits: [kaiming_normal, zeros]\nseeds: 2\n"
        "models: ['mlp(hidden=[16])', {name: 'mlp(hidden=[8], activation=identity)', train: {lr: 1.0e+6}}]\n"
        "train: {epochs: 1, batch_size: 16, limit_train: 128, limit_val: 64, limit_test: 64, accelerator: cpu}\n")
    initbench = Path(sys.executable).parent / "initbench"
    done = subprocess.run([str(initbench), "sweep", tmp_path / "s.yaml", "--out", tmp_path / "out", "--no-report"],
                          capture_output=True, text=True)  # stdout and stderr are pipes, not a terminal
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()[:8]
    for i, line in enumerate(lines, 1):
        assert re.fullmatch(rf"\[{i}/8\] digits_mlp\(hidden=\[(16|8)\](, activation=identity)?\) "
                            r"(kaiming_normal|zeros) seed [01]: (ok|collapsed|diverged at step \d+) val \d{1,3}\.\d{2} "
                            r"\(\d+\.\d s\)", line), line
    assert sum("identity) kaiming_normal seed" in line and "diverged at step" in line for line in lines) == 2
    assert "it/s" not in done.stderr and "run/s" not in done.stderr and "%|" not in done.stderr  # no bar in a log


def test_a_single_run_bar_shows_epoch_of_total_loss_and_validation_accuracy(tmp_path):
    from terminal import on_terminal

    initbench = Path(sys.executable).parent / "initbench"
    args = [a for a in TINY if a != "--no-progress"] + ["--epochs", "2", "--limit-train", "512"]
    code, screen = on_terminal([str(initbench), "run", *args, "--out", str(tmp_path)], cols=160)
    assert code == 0, screen[-2000:]
    frames = screen.replace("\r", "\n")
    assert re.search(r"epoch 2/2: .*step=\d+, loss=\d+\.\d{3}, val acc=0\.\d{3}", frames), frames[-500:]


def test_a_run_into_a_file_prints_its_own_lines_only(tmp_path):
    """With stdout a file (or a pipe), no progress bar of any kind: the three lines that say how the run ended."""
    initbench = Path(sys.executable).parent / "initbench"
    args = [a for a in TINY if a != "--no-progress"]
    done = subprocess.run([str(initbench), "run", *args, "--out", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and lines[0].startswith("digits_mlp(hidden=[16]) / kaiming_normal / seed 0: "), lines
    assert lines[1].startswith("  test acc ") and lines[2].startswith("  record: "), lines
    assert "it/s" not in done.stdout + done.stderr and "\r" not in done.stdout + done.stderr


def test_the_catalog_equals_the_registries():
    """`list` and the early name checks read catalog.json; it must say exactly what the registries say."""
    from initbench import catalog, registry

    assert registry.catalog() == catalog.build(), "catalog.json is stale: run `python -m initbench.catalog`"


LIGHT = """
import sys
from initbench.cli import main
try:
    code = main({argv!r})
except SystemExit as exc:  # --help
    code = exc.code
print("CODE", code, "torch" in sys.modules, "lightning" in sys.modules)
"""


@pytest.mark.parametrize(("argv", "code", "said"), [
    (["--help"], 0, "examples:"),
    (["run", "--help"], 0, "(default: per model and dataset"),
    (["list", "inits", "kaiming*"], 0, "kaiming_uniform"),
    (["list", "models"], 0, "hidden=(256, 128), activation=relu"),
    (["list", "datasets"], 0, "fashion-mnist"),
    (["run", "--init", "kaiming_nromal"], 2, "unknown init 'kaiming_nromal'; did you mean kaiming_normal"),
    (["run", "--init", "normal(fallback=xavierr)"], 2, "unknown init 'xavierr'"),
    (["run", "--init", "normal", "--init-rule", "fc*=zerox"], 2, "unknown init 'zerox'; did you mean zeros"),
    (["run", "--init", "normal(std=1"], 2, "malformed init spec"),
    (["run", "--model", "mlpp"], 2, "unknown model 'mlpp'; did you mean mlp"),
    (["run", "--model", "mlp(hiden=[8])"], 2, "model 'mlp' has no parameter 'hiden'; valid: hidden, activation"),
    (["run", "--dataset", "digitz"], 2, "unknown dataset 'digitz'; did you mean digits"),
    (["run", "--dataset", "/data/my-images"], 2, "dataset '/data/my-images' is a path, not a dataset name (cifar10, "
                                                  "cifar100, digits, fashion-mnist, kmnist, mnist); to train on your "
                                                  "own data, give package.module:load, a function in your code"),
    (["run", "--optimizer", "sgdd"], 2, "unknown optimizer 'sgdd'; did you mean sgd? valid: sgd, adam, adamw"),
    (["run", "--lr", "-1"], 2, "learning rate (lr) must be positive"),
    (["run", "--init", "normal(sdt=0.1)"], 2,
     "init 'normal' has no parameter 'sdt'; valid: mean, std, bias, norm, fallback, blocks, fans, rules"),
    (["run", "--init", "kaiming_normal(fallback=normal(sdt=1))"], 2, "init 'normal' has no parameter 'sdt'"),
    (["run", "--model", "simplecnn(channels=[0, 8])"], 2, "channels must be a list of positive integers"),
    (["run", "--threads", "0"], 2, "--threads must be a whole number of at least 1, got 0"),
    (["run", "--init", "normal(std=-1)"], 2, "init 'normal': std must be >= 0, got -1.0"),
    (["run", "--init", "lsuv(max_iter=0)"], 2, "init 'lsuv': max_iter must be >= 1, got 0"),
    (["run", "--init", "sparse(sparsity=1)"], 2, "init 'sparse': sparsity must be in [0, 1), got 1.0"),
    (["run", "--init", "kaiming_normal(mode=fan)"], 2, "parameter 'mode' of init 'kaiming_normal' must be one of "
                                                       "fan_in, fan_out, got 'fan'"),
    (["run", "--init", "xavier_normal(gain=tanhh)"], 2, "must be a number, 'auto' or one of linear, conv1d"),
    (["run", "--init", "kaiming_normal(fallback=uniform(a=2, b=1))"], 2, "init 'uniform': needs a < b"),
    (["run", "--dataset", "digits", "--batch-size", "5000"], 2, "--val-fraction 0.1 leaves 1294 training examples "
                                                                "of digits, fewer than one batch (5000)"),
    (["run", "--dataset", "digits", "--limit-test", "400"], 2, "--limit-test 400 is more than the 359 examples"),
    (["run", "--model", "simplecnn", "--no-download"], 2, "CIFAR-10 not found in "),
])
def test_help_lists_and_typos_answer_without_loading_torch_or_lightning(tmp_path, argv, code, said):
    done = subprocess.run([sys.executable, "-c", LIGHT.format(argv=[*argv, "--out", str(tmp_path)]
                                                              if argv[0] == "run" and "--help" not in argv else argv)],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**{k: v for k, v in os.environ.items() if k != "INITBENCH_DATA_DIR"},
                               "HOME": str(tmp_path)})
    assert done.stdout.splitlines()[-1] == f"CODE {code} False False", done.stderr[-500:]
    assert said in done.stdout + done.stderr
    assert not list(tmp_path.iterdir())  # nothing written, no cache folder in the home either


def test_a_sweep_file_with_a_typo_is_refused_before_torch_loads(tmp_path):
    (tmp_path / "s.yaml").write_text("datasets: [digits]\nmodels: [mlp]\ninits: [kaiming_normal, xavierr]\nseeds: 2\n")
    argv = ["sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, "-c", LIGHT.format(argv=argv)], capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "CODE 2 False False"
    assert "s.yaml: unknown init 'xavierr'; did you mean xavier_normal" in done.stderr
    assert not (tmp_path / "out").exists()


def test_on_a_terminal_the_sweep_bar_moves_within_runs_weighted_by_cost_and_shows_the_tally(tmp_path):
    import json

    from terminal import on_terminal

    from initbench.execute.local import preflight, run_cost, run_steps
    from initbench.plan.sweep import load_sweep

    (tmp_path / "s.yaml").write_text(
        "name: s\ndatasets: [digits]\nmodels: ['mlp(hidden=[16])', simplecnn]\ninits: [kaiming_normal]\nseeds: 1\n"
        "train: {epochs: 2, batch_size: 16, limit_train: 768, limit_val: 64, limit_test: 64, accelerator: cpu}\n")
    initbench = Path(sys.executable).parent / "initbench"
    code, screen = on_terminal([str(initbench), "sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"),
                                "--no-report"], timeout=60)
    assert code == 0, screen[-2000:]
    percents = [int(p) for p in re.findall(r"s: +(\d+)%\|", screen)]
    sweep = load_sweep(tmp_path / "s.yaml")
    problems = preflight(sweep.runs, None, False)
    mlp, cnn = (run_cost(r, problems[(r.dataset, r.model)]) for r in sweep.runs)
    mlp_share = 100 * mlp[0] * mlp[1] / (mlp[0] * mlp[1] + cnn[0] * cnn[1])
    assert mlp[0] == cnn[0] and mlp[1] < cnn[1] / 3  # same steps, the CNN's step costs several times more
    assert percents == sorted(percents) and percents[0] == 0 and percents[-1] == 100
    assert round(mlp_share) in percents  # after the MLP run: its share of the cost, not half the runs
    assert any(0 < p < mlp_share - 1 or mlp_share + 1 < p < 100 for p in percents)  # moved inside a run
    assert re.search(r"2/2 runs \| \d (ok|collapsed)", screen)  # the tally
    for r in sweep.runs:  # the steps the bar expects are the steps the runs take
        summary = json.loads(next((tmp_path / "out").glob(f"digits_*/*{r.run_id[:8]}/summary.json")).read_text())
        assert summary["steps"] == run_steps(r, problems[(r.dataset, r.model)].examples) == 2 * 768 // 16


def test_every_option_of_every_command_says_what_it_does_and_its_default():
    import argparse

    from initbench.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == {"list", "run", "sweep", "report", "verify", "probe", "bench"}
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            where = f"initbench {name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{where} has no help"
            if action.choices and not action.option_strings:
                assert all(c in parser.format_help() for c in action.choices), where
            if action.option_strings and action.default not in (None, False):
                assert "default" in action.help, f"{where} does not say its default {action.default!r}"


def test_bare_initbench_prints_usage_the_commands_and_examples(capsys):
    assert main([]) == 2
    said = capsys.readouterr().out
    assert said.startswith("usage: initbench")
    assert all(c in said for c in ("list", "run", "sweep", "report", "bench")) and "examples:" in said
