"""The lockstep engine: a group of runs that differ only in their init, trained as one stacked model, writes the
records the same runs write one by one (same first-step loss, step-0 validation, divergence step, format), keeps a
diverging member from touching the others, and resumes and mixes with the sequential engine."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from initbench.cli import main
from initbench.execute.units import claim_and_run_group, run
from initbench.spec import RunSpec

# An identity-activation MLP at an absurd learning rate: kaiming_normal and xavier_uniform diverge within a few steps,
# zeros does not (its hidden layer stays zero), so one group holds diverging and surviving members.
WILD = dict(model="mlp(hidden=[8], activation=identity)", dataset="digits", epochs=2, batch_size=32,
            limit_train=512, limit_val=128, limit_test=128, accelerator="cpu", log_every=4, lr=1e6)
CALM = dict(WILD, model="mlp(hidden=[32])", lr=0.05)


def _record(out: Path, spec: RunSpec) -> tuple[dict, dict, pd.DataFrame]:
    run_dir = next(out.glob(f"*/*-{spec.run_id[:8]}"))
    return (json.loads((run_dir / "config.json").read_text()), json.loads((run_dir / "summary.json").read_text()),
            pd.read_csv(run_dir / "metrics.csv"))


@pytest.mark.parametrize("settings", [WILD, CALM, dict(WILD, max_steps=6),
                                      dict(CALM, optimizer="adamw", lr=0.01, weight_decay=0.01, schedule="cosine")],
                         ids=["diverging", "calm", "diverging-then-max-steps-mid-epoch", "adamw-cosine"])
def test_a_group_writes_the_records_its_runs_write_one_by_one(tmp_path, settings):
    specs = [RunSpec(init=i, **settings) for i in ("zeros", "kaiming_normal", "orthogonal", "xavier_uniform")]
    results = claim_and_run_group(specs, tmp_path / "lockstep", progress=False)
    assert [(s.run_id, outcome) for s, _, _, outcome in results] == [(s.run_id, "trained") for s in specs]
    for spec in specs:
        run(spec, tmp_path / "sequential", progress=False)
        config, summary, metrics = _record(tmp_path / "lockstep", spec)
        _, alone, alone_metrics = _record(tmp_path / "sequential", spec)
        assert config["engine"] == "lockstep" and config["group_size"] == 4 and config["run_id"] == spec.run_id
        assert summary["status"] == alone["status"] and summary.get("diverged_step") == alone.get("diverged_step")
        assert summary["steps"] == alone["steps"]
        assert list(metrics.columns) == list(alone_metrics.columns)  # the same format
        assert metrics["step"].tolist() == alone_metrics["step"].tolist()
        first = metrics["train/loss"].dropna().iloc[0]
        assert first == pytest.approx(alone_metrics["train/loss"].dropna().iloc[0], rel=1e-4)
        assert metrics["val/acc"].dropna().iloc[0] == alone_metrics["val/acc"].dropna().iloc[0]  # step 0: the init
        if summary["status"] in ("ok", "collapsed"):
            assert summary["val_acc_final"] == pytest.approx(alone["val_acc_final"], abs=0.05)
        else:  # a diverged member's record ends as its run's does: validated and tested on the same (NaN) model
            for key in ("val_acc_final", "best_val_acc", "best_val_step", "test_acc", "epochs"):
                assert summary[key] == alone[key], key
            assert metrics.drop(columns=["epoch"]).isna().equals(alone_metrics.drop(columns=["epoch"]).isna())
    statuses = {s.init: _record(tmp_path / "lockstep", s)[1]["status"] for s in specs}
    if settings["lr"] > 1:
        assert statuses["kaiming_normal"] == statuses["xavier_uniform"] == "diverged"
        assert statuses["zeros"] != "diverged"


def test_a_diverging_member_never_touches_the_others(tmp_path):
    survivors = [RunSpec(init=i, **WILD) for i in ("zeros", "normal(std=0.0)")]
    diverging = RunSpec(init="kaiming_normal", **WILD)
    claim_and_run_group([survivors[0], diverging, survivors[1]], tmp_path / "with", progress=False)
    claim_and_run_group(survivors, tmp_path / "without", progress=False)
    assert _record(tmp_path / "with", diverging)[1]["status"] == "diverged"
    for spec in survivors:
        _, summary, metrics = _record(tmp_path / "with", spec)
        _, alone, alone_metrics = _record(tmp_path / "without", spec)
        assert summary["status"] == alone["status"] != "diverged"
        numeric = metrics.drop(columns=["epoch"]).to_numpy()
        assert numeric == pytest.approx(alone_metrics.drop(columns=["epoch"]).to_numpy(), rel=1e-5, nan_ok=True)


def test_an_interrupted_group_reruns_only_its_incomplete_members(tmp_path):
    specs = [RunSpec(init=i, **CALM) for i in ("zeros", "kaiming_normal", "orthogonal")]
    claim_and_run_group(specs[:1], tmp_path, progress=False)
    before = _record(tmp_path, specs[0])[1]
    results = claim_and_run_group(specs, tmp_path, progress=False)
    assert [outcome for *_, outcome in results] == ["done", "trained", "trained"]
    assert _record(tmp_path, specs[0])[1] == before  # untouched
    assert _record(tmp_path, specs[1])[0]["group_size"] == 2


def test_the_loop_mode_gives_the_single_runs_numbers(tmp_path):
    import torch

    from initbench.train.lockstep import LockstepFailed, StackedClassifier, _dim_order
    from initbench.train.prepare import prepare

    members = [prepare(RunSpec(init=i, **CALM)) for i in ("kaiming_normal", "orthogonal")]
    module = StackedClassifier([p.module.model for p in members], 10, members[0].spec, lambda *a: None)
    x, y = members[0].data.x_train[:32], members[0].data.y_train[:32]
    assert module.choose_mode(x, y, "vmap") == "vmap"
    with pytest.raises(LockstepFailed, match="lockstep mode loop was not prepared: choose_mode tried vmap"):
        module.use("loop")  # the way it trains in is the last one tried
    assert module.choose_mode(x, y, "loop") == "loop"  # vmap is tried first: both ways are ready
    module.use("loop")
    loop = module.logits(x)
    module.use("vmap")
    batched = module.logits(x)
    # vmap's linear layers deliver weight gradients transposed: the weights are stored so, and no gradient is copied
    assert module.names[0] == "layers.fc1.weight" and _dim_order(module.stacked[0]) == (0, 2, 1)
    assert module._arrival_layouts(x, y) == [_dim_order(p) for p in module.stacked]
    for m, p in enumerate(members):
        assert torch.equal(loop[m], p.module.model(x))  # the run's own kernels: bit for bit
        assert torch.allclose(batched[m], p.module.model(x), rtol=1e-5, atol=1e-6)


SWEEP = """
    name: engines
    datasets: [digits]
    models: ["mlp(hidden=[16])"]
    inits: [kaiming_normal, orthogonal, lsuv, zeros]
    seeds: 2
    train: {epochs: 1, batch_size: 32, limit_train: 256, limit_val: 64, limit_test: 64, accelerator: cpu}
"""


def test_records_are_interchangeable_between_engines(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SWEEP))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--no-progress", "--no-report", "--engine", "lockstep",
                 "--lockstep-max", "3"]) == 0
    said = capsys.readouterr().out
    assert "8/8 complete" in said
    configs = [json.loads(p.read_text()) for p in out.glob("*/*/config.json")]
    assert sorted(c["group_size"] for c in configs) == [1, 1, 3, 3, 3, 3, 3, 3]  # groups of at most 3 per seed
    victim = next(p.parent for p in out.glob("*/lsuv-seed1-*/summary.json"))
    (victim / "summary.json").unlink()  # an interrupted run
    assert main(["sweep", str(path), "--out", str(out), "--no-progress", "--no-report", "--engine",
                 "sequential"]) == 0
    said = capsys.readouterr().out
    assert "1 ok" in said or "1 collapsed" in said
    assert "7 already done" in said and json.loads((victim / "config.json").read_text())["engine"] == "sequential"


BN_MODEL = textwrap.dedent("""
    from torch import nn
    def build(input_shape, num_classes):
        c, h, w = input_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), nn.BatchNorm1d(16), nn.ReLU(),
                             nn.Linear(16, num_classes))
""")


def test_auto_says_why_a_model_trains_one_by_one_and_lockstep_refuses_it(tmp_path):
    (tmp_path / "bnmodels.py").write_text(BN_MODEL)
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SWEEP).replace('"mlp(hidden=[16])"', "bnmodels:build"))
    cmd = [sys.executable, "-m", "initbench.cli", "sweep", str(path), "--no-report", "--no-progress"]
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    refused = subprocess.run([*cmd, "--out", str(tmp_path / "a"), "--engine", "lockstep"], capture_output=True,
                             text=True, env=env)
    assert refused.returncode == 2 and "BatchNorm1d (2) updates running statistics" in refused.stderr
    assert not (tmp_path / "a").exists()
    auto = subprocess.run([*cmd, "--out", str(tmp_path / "b")], capture_output=True, text=True, env=env)
    assert auto.returncode == 0, auto.stderr
    assert auto.stderr.count("BatchNorm1d (2) updates running statistics in training: trained one by one") == 1
    engines = {json.loads(p.read_text())["engine"] for p in (tmp_path / "b").glob("*/*/config.json")}
    assert engines == {"sequential"}


def test_bench_prints_the_lockstep_speedup():
    done = subprocess.run([sys.executable, "-m", "initbench.cli", "bench", "--lockstep", "3", "--models", "mlp",
                           "--dataset", "digits", "--steps", "20", "--repeats", "1", "--accelerator", "cpu"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "mlp x3 on digits" in done.stdout and "lockstep speedup " in done.stdout
    assert "no lockstep engine could be more than " in done.stdout


def test_the_bench_counts_a_group_steps_matrix_products():
    import torch

    from initbench.bench import group_flops, matmul_peak
    from initbench.train.prepare import prepare

    members = [prepare(RunSpec(model="mlp", dataset="digits", init_seed=i, accelerator="cpu"), diagnose=False)
               for i in range(3)]
    b, sizes = 128, (64 * 256, 256 * 128, 128 * 10)  # 8x8 digits -> 256 -> 128 -> 10
    # forward and weight gradients: every layer; input gradients: all but the first (the data needs none)
    assert group_flops(members, torch.device("cpu")) == 3 * 2 * b * (2 * sum(sizes) + sum(sizes[1:]))
    # convolutions: a group of two counts twice one member's work (vmap's grouped convolutions are not counted)
    cnns = [prepare(RunSpec(model="simplecnn", dataset="digits", init_seed=i, accelerator="cpu", batch_size=16),
                    diagnose=False) for i in range(2)]
    assert group_flops(cnns, torch.device("cpu")) == 2 * group_flops(cnns[:1], torch.device("cpu"))
    assert 1e9 < matmul_peak(torch.device("cpu"), n=256, repeats=1) < 1e13


@pytest.mark.parametrize(("kind", "momentum", "decay"), [("sgd", 0.9, 1e-3), ("sgd", 0.0, 0.0), ("adam", 0.0, 1e-3),
                                                         ("adamw", 0.0, 1e-2)])
def test_per_member_learning_rates_update_each_member_as_torch_optim_does(kind, momentum, decay):
    import torch

    from initbench.train.optim import OPTIMIZER_TABLE, SCHEDULE_TABLE, StackedOptimizer

    gen = torch.Generator().manual_seed(0)
    lrs = [0.1, 0.003, 0.3]
    stacked = torch.nn.Parameter(torch.randn(3, 5, 4, generator=gen))
    alone = [torch.nn.Parameter(stacked[m].detach().clone()) for m in range(3)]
    ours = StackedOptimizer([stacked], kind, lrs, momentum, decay)
    theirs = [OPTIMIZER_TABLE[kind]([p], lr, momentum, decay) for p, lr in zip(alone, lrs, strict=True)]
    schedules = [SCHEDULE_TABLE["cosine"](o, 6) for o in (ours, *theirs)]
    for _ in range(6):
        grad = torch.randn(3, 5, 4, generator=gen)
        stacked.grad = grad.clone()
        for m, p in enumerate(alone):
            p.grad = grad[m].clone()
        for opt in (ours, *theirs):
            opt.step()
        for s in schedules:
            s.step()
        for m, p in enumerate(alone):
            assert torch.equal(stacked[m], p), (kind, m)  # bit for bit


def test_members_with_their_own_learning_rates_train_as_their_runs_do(tmp_path):
    specs = [RunSpec(init="kaiming_normal", **dict(CALM, lr=lr)) for lr in (0.01, 0.05, 0.2)]
    results = claim_and_run_group(specs, tmp_path / "lockstep", progress=False)
    assert [outcome for *_, outcome in results] == ["trained"] * 3
    for spec in specs:
        run(spec, tmp_path / "sequential", progress=False)
        _, summary, metrics = _record(tmp_path / "lockstep", spec)
        _, alone, alone_metrics = _record(tmp_path / "sequential", spec)
        losses, alone_losses = metrics["train/loss"].dropna(), alone_metrics["train/loss"].dropna()
        assert losses.iloc[:3].tolist() == pytest.approx(alone_losses.iloc[:3].tolist(), rel=1e-4)
        assert summary["val_acc_final"] == pytest.approx(alone["val_acc_final"], abs=0.05)


def test_run_with_the_lockstep_engine_is_a_group_of_one(tmp_path, capsys, monkeypatch):
    args = ["run", "--dataset", "digits", "--model", "mlp(hidden=[16])", "--epochs", "1", "--limit-train", "256",
            "--accelerator", "cpu", "--no-progress", "--lr", "0.05"]
    assert main([*args, "--engine", "lockstep", "--out", str(tmp_path / "l")]) == 0
    assert main([*args, "--out", str(tmp_path / "s")]) == 0
    spec = RunSpec(dataset="digits", model="mlp(hidden=[16])", epochs=1, limit_train=256, accelerator="cpu")
    config, summary, metrics = _record(tmp_path / "l", spec)
    _, alone, alone_metrics = _record(tmp_path / "s", spec)
    assert config["engine"] == "lockstep" and config["group_size"] == 1
    assert summary["steps"] == alone["steps"] and metrics["step"].tolist() == alone_metrics["step"].tolist()
    assert summary["val_acc_final"] == pytest.approx(alone["val_acc_final"], abs=0.02)
    capsys.readouterr()
    assert main([*args, "--engine", "lockstep", "--out", str(tmp_path / "l"), "--force"]) == 2
    assert "--force retrains with the sequential engine" in capsys.readouterr().err
    (tmp_path / "bnnet.py").write_text(BN_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    bn = ["--model", "bnnet:build", "--dataset", "digits", "--limit-train", "256", "--accelerator", "cpu"]
    assert main(["run", *bn, "--engine", "lockstep", "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "--engine lockstep: " in err and "BatchNorm1d (2) updates running statistics" in err
    assert not list((tmp_path / "w").rglob("summary.json"))


ODD_MODELS = textwrap.dedent("""
    import torch
    from torch import nn

    class Shift(nn.Module):  # behaves differently in training and in evaluation
        def forward(self, x):
            return x + (3.0 if self.training else 0.0) * x.flip(-1)

    def shifty(input_shape, num_classes):
        c, h, w = input_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), Shift(), nn.ReLU(), nn.Linear(16, num_classes))

    class Noisy(nn.Module):  # vmap has no rule for random draws by default: the member loop takes it
        def __init__(self, input_shape, num_classes):
            super().__init__()
            self.fc = nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], num_classes)
        def forward(self, x):
            return self.fc(x.flatten(1)) + 0.0 * torch.randn_like(x[:, :1, 0, 0])

    def frozen(input_shape, num_classes):
        model = shifty(input_shape, num_classes)
        model[1].bias.requires_grad_(False)
        return model
""")


def test_odd_models_evaluate_in_eval_mode_fall_back_to_the_loop_and_frozen_weights_go_one_by_one(
        tmp_path, monkeypatch):
    from initbench.train.lockstep import why_not
    from initbench.train.prepare import prepare

    (tmp_path / "oddnets.py").write_text(ODD_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    shifty = [RunSpec(init=i, **dict(CALM, model="oddnets:shifty")) for i in ("kaiming_normal", "orthogonal")]
    claim_and_run_group(shifty, tmp_path / "l", progress=False)
    for spec in shifty:  # validation and test run the model in evaluation mode, as a single run does
        run(spec, tmp_path / "s", progress=False)
        _, summary, metrics = _record(tmp_path / "l", spec)
        _, alone, alone_metrics = _record(tmp_path / "s", spec)
        assert metrics["val/acc"].dropna().iloc[0] == alone_metrics["val/acc"].dropna().iloc[0]
        assert summary["val_acc_final"] == pytest.approx(alone["val_acc_final"], abs=0.05)
    noisy = [RunSpec(init=i, **dict(CALM, model="oddnets:Noisy")) for i in ("kaiming_normal", "orthogonal")]
    results = claim_and_run_group(noisy, tmp_path / "n", progress=False)
    assert [r[2]["status"] for r in results] != ["failed", "failed"]
    assert {_record(tmp_path / "n", s)[0]["lockstep_mode"] for s in noisy} == {"loop"}
    model = prepare(RunSpec(**dict(CALM, model="oddnets:frozen"))).module.model
    assert why_not(RunSpec(**dict(CALM, model="oddnets:frozen")), model) == (
        "parameter 1.bias is frozen (requires_grad=False): trained one by one")


def test_a_group_that_cannot_train_together_trains_one_by_one_and_bad_input_writes_nothing(tmp_path):
    from initbench.errors import InitbenchError

    notes = []
    specs = [RunSpec(init=i, **CALM) for i in ("kaiming_normal", "orthogonal")]
    import initbench.train.lockstep as lockstep

    real = lockstep.StackedClassifier.choose_mode

    def broken(self, x, y, repeats=3):
        raise lockstep.LockstepFailed("vmap: RuntimeError: no rule; loop: RuntimeError: out of memory")

    lockstep.StackedClassifier.choose_mode = broken
    try:
        results = claim_and_run_group(specs, tmp_path / "out", progress=False, note=notes.append)
    finally:
        lockstep.StackedClassifier.choose_mode = real
    assert [r[3] for r in results] == ["trained", "trained"] and len(notes) == 1
    assert "could not train together" in notes[0] and "out of memory" in notes[0]
    assert {_record(tmp_path / "out", s)[0]["engine"] for s in specs} == {"sequential"}
    missing = RunSpec(init="zeros", **dict(CALM, dataset="mnist"))
    with pytest.raises(InitbenchError, match="mnist"):
        claim_and_run_group([missing], tmp_path / "bad", progress=False, data_dir=tmp_path / "nodata",
                            download=False)
    assert not list((tmp_path / "bad").rglob("*.json"))


def test_the_mode_follows_a_rule_of_model_and_device_never_a_clock(monkeypatch):
    import torch

    from initbench.models import build_model
    from initbench.train import lockstep

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert lockstep.rule_mode(build_model("mlp", (1, 28, 28), 10), (1, 28, 28), cpu) == "vmap"
    assert lockstep.rule_mode(build_model("simplecnn", (1, 8, 8), 10), (1, 8, 8), cpu) == "vmap"
    assert lockstep.rule_mode(build_model("simplecnn", (1, 28, 28), 10), (1, 28, 28), cpu) == "loop"
    assert lockstep.rule_mode(build_model("simplecnn", (3, 32, 32), 10), (3, 32, 32), gpu) == "vmap"
    members = [build_model("simplecnn", (1, 28, 28), 10) for _ in range(2)]
    module = lockstep.StackedClassifier(members, 10, RunSpec(**CALM), lambda *a: None)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    clock = iter(range(10**6, 0, -37))  # a clock that would make every later pass look faster than the one before
    monkeypatch.setattr(lockstep.time, "perf_counter", lambda: next(clock))
    assert [module.choose_mode(x, y) for _ in range(3)] == ["loop"] * 3
    assert module.choose_mode(x, y, "vmap") == "vmap"


def test_a_pinned_mode_reaches_every_record_and_the_study_file(tmp_path):
    path = tmp_path / "pinned.yaml"
    path.write_text(textwrap.dedent("""
        name: pinned
        datasets: [digits]
        models: ['mlp(hidden=[16])']
        inits: [kaiming_normal, orthogonal]
        seeds: 1
        train: {epochs: 1, batch_size: 64, limit_train: 256, limit_val: 64, limit_test: 64, accelerator: cpu}
    """))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--no-report", "--no-progress",
                 "--lockstep-mode", "loop"]) == 0
    configs = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*/*/config.json")]
    assert len(configs) == 2 and {c["lockstep_mode"] for c in configs} == {"loop"}
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["lockstep_mode"] == "loop"
    assert main(["sweep", str(path), "--lockstep-mode", "fast"]) == 2
