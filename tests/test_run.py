"""`initbench run` end to end: real loaders over real-format files, real Lightning trainers, records on disk."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from initbench.cli import main
from initbench.data import TensorBatches, TensorDataModule
from initbench.execute.units import run
from initbench.record import RunRecord
from initbench.spec import RunSpec

PAIRS = [(m, d) for m in ("mlp", "simplecnn") for d in ("digits", "mnist", "fashion-mnist", "cifar10")]


@pytest.mark.parametrize(("model", "dataset"), PAIRS)
def test_every_model_dataset_pair_trains(model, dataset, tiny_spec, tmp_path, request):
    data_dir = {"mnist": "mnist_dir", "cifar10": "cifar10_dir", "fashion-mnist": "fashion_mnist_dir"}.get(dataset)
    data_dir = request.getfixturevalue(data_dir) if data_dir else None
    spec = tiny_spec(model=model, dataset=dataset, limit_train=128, limit_val=64, limit_test=64, epochs=1,
                     init="kaiming_normal")
    run_dir, summary = run(spec, tmp_path, progress=False, data_dir=data_dir, download=False)
    assert summary["status"] == "ok", summary.get("error")
    assert 0.0 <= summary["test_acc"] <= 1.0 and summary["steps"] == 2
    config = json.loads((run_dir / "config.json").read_text())
    shape = {"digits": [1, 8, 8], "mnist": [1, 28, 28], "fashion-mnist": [1, 28, 28], "cifar10": [3, 32, 32]}
    assert config["data"]["input_shape"] == shape[dataset]
    assert config["data"]["train"] == 128
    metrics = pd.read_csv(run_dir / "metrics.csv")
    step0 = metrics[metrics["step"] == 0].iloc[0]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for rec in manifest["records"]:  # the init's signature: every parameter's gradient norm at step 0
        assert step0[f"grad_norm/{rec['name']}"] > 0, rec["name"]


def test_fashion_mnist_comes_from_debian_through_torchvision(fashion_mnist_dir):
    data = TensorDataModule("fashion-mnist", data_dir=fashion_mnist_dir, download=False)
    data.setup()
    assert data.sizes() == {"train": 54000, "val": 6000, "test": 10000}
    assert (fashion_mnist_dir / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()
    assert data.y_train.bincount().tolist() == pytest.approx([5400] * 10, rel=0.05)
    assert data.x_train.mean().item() == pytest.approx(0, abs=1e-3)
    assert data.x_train.std().item() == pytest.approx(1, abs=1e-3)


def test_run_record_files_and_fields(tiny_spec, tmp_path):
    spec = tiny_spec(epochs=3, init="xavier_uniform(gain=relu)", seed=4)
    run_dir, summary = run(spec, tmp_path, progress=False)
    assert run_dir == tmp_path / "digits_mlp" / f"xavier_uniform_gain-relu-seed4-{spec.run_id[:8]}"
    files = {p.name for p in run_dir.iterdir()}
    assert files == {"config.json", "manifest.json", "diagnostics.json", "metrics.csv", "summary.json"}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["spec"]["init"] == "xavier_uniform(gain=relu)" and config["spec"]["seed"] == 4
    assert set(config["versions"]) >= {"torch", "lightning", "initbench"} and config["device"].startswith("cpu")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["nonlinearity"].startswith("relu")
    assert [r["scheme"] for r in manifest["records"] if r["role"] == "weight"] == ["xavier_uniform"] * 2

    m = pd.read_csv(run_dir / "metrics.csv")
    steps_per_epoch = 256 // 64
    last = 3 * steps_per_epoch - 1
    train = m.dropna(subset=["train/loss"])
    assert train["step"].tolist() == [0, 2, 4, 6, 8, 10, last][: len(train)] and train["step"].iloc[-1] == last
    val = m.dropna(subset=["val/acc"])
    assert val["step"].tolist() == [0, 3, 7, 11]  # the init itself, then after the last batch of each epoch
    for prefix in ("grad_norm/", "weight_norm/", "update_ratio/"):
        assert {c for c in m.columns if c.startswith(prefix)} >= {f"{prefix}{r['name']}" for r in manifest["records"]}
    grads = m.dropna(subset=["grad_norm/total"])
    assert grads["step"].tolist() == [0, 2, 4, 6, 8, 10]
    layer_cols = [c for c in m.columns if c.startswith("grad_norm/") and c != "grad_norm/total"]
    total = (grads[layer_cols] ** 2).sum(axis=1) ** 0.5
    assert grads["grad_norm/total"].tolist() == pytest.approx(total.tolist(), rel=1e-5)
    assert (m.dropna(subset=["update_ratio/layers.fc1.weight"])["update_ratio/layers.fc1.weight"] > 0).all()

    # the step-0 diagnostics were taken on the batch training starts on: their layer gradients are the monitor's
    diagnostics = RunRecord(run_dir).diagnostics()
    at0 = grads.iloc[0]
    layers = [r for r in diagnostics["layers"] if r["stat"] == "grad_norm"]
    assert [r["layer"] for r in layers] == ["layers.fc1", "layers.out"] and diagnostics["batch"] == 64
    for r in layers:
        monitor = (at0[f"grad_norm/{r['layer']}.weight"] ** 2 + at0[f"grad_norm/{r['layer']}.bias"] ** 2) ** 0.5
        assert r["value"] == pytest.approx(monitor, rel=1e-4)
    assert [r["layer"] for r in diagnostics["layers"] if r["stat"] == "dead_frac"] == ["layers.act1"]
    assert diagnostics["summary"]["grad_norm_total"] == pytest.approx(at0["grad_norm/total"], rel=1e-4)
    assert diagnostics["summary"]["loss"] == pytest.approx(train["train/loss"].iloc[0], rel=1e-4)

    assert summary["status"] == "ok" and summary["steps"] == last + 1 and summary["epochs"] == 3
    assert summary["test_acc"] == pytest.approx(m["test/acc"].dropna().iloc[-1])
    assert summary["best_val_acc"] == pytest.approx(val["val/acc"].max())
    assert summary["images_per_s"] > 0 and summary["wall_time_s"] > 0
    assert (run_dir / "summary.json").stat().st_mtime >= (run_dir / "metrics.csv").stat().st_mtime


def test_same_spec_and_seed_gives_identical_metrics(tiny_spec, tmp_path):
    spec = tiny_spec(model="simplecnn", init="orthogonal", seed=7, epochs=2, limit_train=128)
    a_dir, a = run(spec, tmp_path / "a", progress=False)
    b_dir, b = run(spec, tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(a_dir / "metrics.csv"), pd.read_csv(b_dir / "metrics.csv"))
    assert a["test_acc"] == b["test_acc"] and a["test_loss"] == b["test_loss"]
    c_dir, _ = run(tiny_spec(model="simplecnn", init="orthogonal", seed=8, epochs=2, limit_train=128),
                   tmp_path / "c", progress=False)
    assert not pd.read_csv(a_dir / "metrics.csv").equals(pd.read_csv(c_dir / "metrics.csv"))


def test_data_order_is_shared_across_inits_within_a_seed():
    x, y = torch.arange(100).float().view(-1, 1), torch.arange(100)
    a, b = TensorBatches(x, y, 10, True, seed=3), TensorBatches(x, y, 10, True, seed=3)
    epoch_a1, epoch_a2 = [yb.tolist() for _, yb in a], [yb.tolist() for _, yb in a]
    assert epoch_a1 == [yb.tolist() for _, yb in b]  # same seed -> same order
    assert epoch_a1 != epoch_a2  # reshuffled every epoch
    assert sorted(i for batch in epoch_a1 for i in batch) == list(range(100))
    assert RunSpec(seed=5).seeds == (5, 5) and RunSpec(seed=5, init_seed=1).seeds == (1, 5)


def test_divergence_is_a_result_not_a_crash(tiny_spec, tmp_path):
    spec = tiny_spec(init="normal(std=100)", lr=1e8, epochs=3)
    run_dir, summary = run(spec, tmp_path, progress=False)
    assert summary["status"] == "diverged"
    assert 0 <= summary["diverged_step"] < summary["steps"] <= summary["diverged_step"] + spec.log_every
    m = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["train/loss"])
    finite_until = m[m["step"] < summary["diverged_step"]]["train/loss"]
    assert finite_until.notna().all()


def test_a_complete_record_is_not_rerun(tiny_spec, tmp_path):
    spec = tiny_spec()
    run_dir, first = run(spec, tmp_path, progress=False)
    stamp = (run_dir / "summary.json").stat().st_mtime_ns
    _, second = run(spec, tmp_path, progress=False)
    assert second == first and (run_dir / "summary.json").stat().st_mtime_ns == stamp


def test_cli_run_prints_a_summary(tmp_path, capsys):
    code = main(["run", "--dataset", "digits", "--model", "mlp", "--init", "lecun_normal", "--epochs", "1",
                 "--limit-train", "128", "--out", str(tmp_path), "--no-progress", "--accelerator", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "digits_mlp / lecun_normal / seed 0: ok" in out and "test acc " in out and "(accuracy points)" in out
    assert f"record: {tmp_path}" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "densenet"], "unknown model 'densenet'; did you mean resnet, convnet? valid: convnet, mlp, resnet, "
                                 "simplecnn, vit"),
    (["--dataset", "mnits"], "unknown dataset 'mnits'; did you mean mnist, kmnist? valid: cifar10, cifar100, "
                             "digits, fashion-mnist, kmnist, mnist"),
    (["--init", "xavier"], "unknown init 'xavier'; did you mean"),
    (["--model", "mlp(heads=3)"], "model 'mlp' has no parameter 'heads'; valid: hidden, activation, depth, width"),
    (["--model", "mlp(activation=swish)"], "unknown activation 'swish'"),
    (["--limit-train", "0"], "--limit-train must be at least 1, got 0"),
    (["--limit-train", "100000"], "--limit-train 100000 is more than the 1294 examples digits has there"),
    (["--batch-size", "0"], "batch size (batch_size) must be at least 1, got 0"),
    (["--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'; valid: sgd, adam, adamw"),
    (["--model", "simplecnn(channels=[8, 8, 8, 8])"], "needs images of at least 16x16 pixels"),
    (["--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
    (["--init", "normal(sdt=1)"], "init 'normal' has no parameter 'sdt'; valid: mean, std, bias, norm, fallback"),
    (["--init", "kaiming_normal(mode=sideways)"], "must be one of fan_in, fan_out, got 'sideways'"),
    (["--init", "no_such_pkg:fn"], "cannot import 'no_such_pkg' for init 'no_such_pkg:fn'"),
    (["--precision", "12-bit"], "unknown precision '12-bit'; valid: transformer-engine"),
    (["--accelerator", "tpu"], "bad trainer settings (accelerator 'tpu'"),
    (["--devices", "two"], "devices must be auto or 1, got 'two'"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    code = main(["run", "--dataset", "digits", "--out", str(tmp_path / "out"), "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_missing_data_offline_names_the_folder_and_the_alternatives(tmp_path, capsys):
    code = main(["run", "--model", "mlp", "--data-dir", str(tmp_path / "nodata"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"MNIST not found in {tmp_path / 'nodata'}" in err
    assert "--dataset digits" in err and "dataset-fashion-mnist" in err
    assert not (tmp_path / "out").exists()


def test_unwritable_out_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["run", "--dataset", "digits", "--limit-train", "64", "--batch-size", "32", "--out",
                 str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write the run record to" in err and err.count("\n") == 1


def test_the_installed_command_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "initbench.cli", "run", "--init", "normal(std=", "--out",
                           str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("initbench: error: malformed init spec 'normal(std=': expected NAME or "
                                   "NAME(key=value, ...)")


def test_bench_measures_both_loops(capsys):
    from initbench.bench import bench, format_rows

    rows = bench(["mlp", "mlp(depth=16, width=32)"], "digits", steps=6, repeats=1, batch_size=64, accelerator="cpu")
    for row in rows:
        assert row["plain_img_s"] > 0 and row["initbench_img_s"] > 0
        assert row["ratio"] == pytest.approx(row["initbench_img_s"] / row["plain_img_s"])
    table = format_rows(rows, "digits", 1, 64).splitlines()
    assert table[2].startswith("mlp ") and table[3].startswith("mlp(depth=16, width=32) ")


def test_bench_prints_the_fixed_cost_of_a_run_beside_the_cost_of_an_epoch():
    done = subprocess.run([sys.executable, "-m", "initbench.cli", "bench", "--fixed-cost", "--models", "mlp",
                           "--repeats", "2", "--batch-size", "64"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    head, columns, row, *note = done.stdout.splitlines()
    assert head.startswith("per-run fixed cost: whole runs on digits (batch 64) of 2 and 6 epochs")
    assert columns.split() == ["model", "fixed", "s/run", "range", "s/epoch", "steps/epoch", "fixed,", "in", "epochs"]
    name, fixed, spread, epoch, steps, _ = row.split()
    low, high = map(float, spread.split(".."))
    assert name == "mlp" and float(epoch) > 0 and int(steps) == 1294 // 64  # digits' training split: 1,294 images
    assert low <= float(fixed) <= high and (not note or note[0].startswith("note: for mlp the machine's noise"))


def test_help_states_defaults_and_choices_and_bare_initbench_lists_the_commands(capsys):
    from initbench.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "learning rate (default: per model and dataset, tuned: mlp 0.1 on digits" in text
    assert "optimizer (sgd has momentum): sgd, adam, adamw" in text
    assert "(default: 5)" in text and "learning-rate schedule: none, cosine (default: none)" in text
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: initbench") and "sweep" in out and "examples:" in out


@pytest.mark.parametrize(("name", "cls", "momentum"), [("sgd", "SGD", 0.9), ("adam", "Adam", None),
                                                       ("adamw", "AdamW", None)])
def test_each_optimizer_name_builds_exactly_that_torch_optimizer(tmp_path, tiny_spec, name, cls, momentum):
    spec = tiny_spec(optimizer=name, lr=0.01, weight_decay=0.001, schedule="cosine", epochs=1)
    _, summary = run(spec, tmp_path, progress=False)
    assert summary["status"] in ("ok", "collapsed")
    from initbench.train.optim import OPTIMIZER_TABLE

    opt = OPTIMIZER_TABLE[name]([torch.nn.Parameter(torch.zeros(2))], 0.01, 0.9, 0.001)
    assert type(opt).__name__ == cls and opt.defaults["lr"] == 0.01 and opt.defaults["weight_decay"] == 0.001
    assert opt.defaults.get("momentum") == momentum
    with pytest.raises(KeyError):  # a name outside the table is never some other optimizer
        OPTIMIZER_TABLE["lbfgs"]


BRIEFLY = {"digits": [], "fashion-mnist": ["--limit-train", "3000", "--epochs", "2"], "mnist": [], "cifar10": []}
DATA_DIRS = {"mnist": "mnist_dir", "cifar10": "cifar10_dir", "fashion-mnist": "fashion_mnist_dir"}


@pytest.mark.parametrize(("model", "dataset"), [(m, d) for m in ("mlp", "simplecnn") for d in BRIEFLY])
def test_the_defaults_train_every_built_in_pair(model, dataset, tmp_path, request):
    """`initbench run` given only the model and the dataset (the default init, the pair's default lr) trains well
    above chance; real digits and Fashion-MNIST (briefly), MNIST and CIFAR-10 files with a learnable signal."""
    from initbench.spec import tuned_lrs

    data_dir = request.getfixturevalue(DATA_DIRS[dataset]) if dataset in DATA_DIRS else None
    args = ["run", "--model", model, "--dataset", dataset, "--out", str(tmp_path), *BRIEFLY[dataset]]
    assert main([*args, *(["--data-dir", str(data_dir), "--no-download"] if data_dir else [])]) == 0
    (config,) = tmp_path.glob("*/*/config.json")
    assert json.loads(config.read_text())["spec"]["lr"] == tuned_lrs(model, dataset)[0]
    summary = json.loads((config.parent / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["test_acc"] > {"digits": 0.9, "fashion-mnist": 0.65}.get(dataset, 0.3)


def test_the_default_lrs_are_the_tools_own_tuning_choices():
    """The table `run` takes its default lr from is what the tuning studies under results/defaults chose."""
    from initbench.spec import TUNED_LRS

    for folder in ("digits", "fashion-mnist"):  # (CIFAR has no files offline: its rows are not tuned here)
        tuning = pd.read_csv(f"results/defaults/{folder}/tuning.csv")
        for row in tuning.itertuples():
            model = row.problem.removeprefix(f"{folder}_")
            assert TUNED_LRS[(model, folder)][0] == row.lr, row.problem
