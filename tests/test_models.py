"""The built-in models with depth and width: each builds for the three input shapes with the parameter count its
formula gives, every parameter is reached by the walk, and each trains a few steps under both engines."""

import json

import pytest

from initbench.cli import main
from initbench.execute.units import claim_and_run_group, run
from initbench.inits import apply_init
from initbench.models import build_model
from initbench.spec import RunSpec

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def mlp_count(shape, classes, depth, width):
    c, h, w = shape
    return c * h * w * width + width + (depth - 1) * (width * width + width) + width * classes + classes


def convnet_count(shape, classes, depth, channels):
    return shape[0] * channels * 9 + channels + (depth - 1) * (9 * channels**2 + channels) + channels * classes \
        + classes


def resnet_count(shape, classes, depth, width, norm):
    """Option-A shortcuts have no parameters; with BatchNorm the convolutions have no bias."""
    n, extra = (depth - 2) // 6, (2 if norm else 1)  # per conv: BN's weight and bias, or the conv's bias

    def conv(c_in, c_out):
        return 9 * c_in * c_out + extra * c_out

    total, c_in = conv(shape[0], width), width
    for c_out in (width, 2 * width, 4 * width):
        total += conv(c_in, c_out) + conv(c_out, c_out) + (n - 1) * 2 * conv(c_out, c_out)
        c_in = c_out
    return total + 4 * width * classes + classes


def vit_count(shape, classes, depth, width, patch):
    c, h, w = shape
    tokens = (h // patch) * (w // patch) + 1
    block = 4 * width + (3 * width * width + 3 * width) + (width * width + width) + (4 * width * width + 4 * width) \
        + (4 * width * width + width)  # two LayerNorms, attention's in/out projections, the MLP
    return c * width * patch * patch + width + width + tokens * width + depth * block + 2 * width \
        + width * classes + classes


CASES = {
    "mlp(depth=16, width=32)": lambda s: mlp_count(s, 10, 16, 32),
    "mlp(depth=3, width=20, activation=tanh)": lambda s: mlp_count(s, 10, 3, 20),
    "convnet(depth=7, channels=8)": lambda s: convnet_count(s, 10, 7, 8),
    "convnet(depth=1, channels=4)": lambda s: convnet_count(s, 10, 1, 4),
    "resnet(depth=8, width=4)": lambda s: resnet_count(s, 10, 8, 4, True),
    "resnet(depth=14, width=4, norm=none)": lambda s: resnet_count(s, 10, 14, 4, False),
    "vit(depth=2, width=16, heads=2)": lambda s: vit_count(s, 10, 2, 16, 2 if s[1] < 16 else 4),
    "vit(depth=1, width=8, heads=1, patch=1)": lambda s: vit_count(s, 10, 1, 8, 1),
}


@pytest.mark.parametrize("spec", CASES)
@pytest.mark.parametrize("shape", SHAPES, ids=["8x8", "28x28", "3x32x32"])
def test_each_model_builds_with_its_formulas_parameter_count_and_the_walk_reaches_every_parameter(spec, shape):
    import torch

    model = build_model(spec, shape, 10)
    assert sum(p.numel() for p in model.parameters()) == CASES[spec](shape)
    assert model(torch.zeros(2, *shape)).shape == (2, 10)
    manifest = apply_init(model, "kaiming_normal")
    names = [n for n, _ in model.named_parameters()]
    assert [r.name for r in manifest.records] == names  # every parameter, once, in order
    for record in manifest.records:  # none left as it was without a word
        assert record.scheme != "keep" or record.note, record


def test_resnet20_has_the_papers_parameter_count_and_rules_reach_the_residual_branch():
    """He et al. 2016: ResNet-20 on CIFAR-10 has 0.27 M parameters; its blocks' last layers can be zeroed by rule."""
    import torch

    model = build_model("resnet(depth=20)", (3, 32, 32), 10)
    assert sum(p.numel() for p in model.parameters()) == resnet_count((3, 32, 32), 10, 20, 16, True) == 269_722
    apply_init(model, "kaiming_normal(rules={'*.bn2.weight': zeros})")
    last = [m for n, m in model.named_modules() if n.endswith(".bn2")]
    assert len(last) == 9 and all(torch.count_nonzero(m.weight) == 0 for m in last)
    plain = build_model("resnet(depth=20, norm=none)", (3, 32, 32), 10)
    apply_init(plain, "kaiming_normal(rules={'*.conv2.weight': zeros})")
    assert all(torch.count_nonzero(m.conv2.weight) == 0 for m in plain.modules() if hasattr(m, "conv2"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())


@pytest.mark.parametrize(("spec", "message"), [
    ("resnet(depth=21)", "model 'resnet': depth must be 6n+2 with n >= 1"),
    ("resnet(norm=layer)", "model 'resnet': norm must be batch or none, got 'layer'"),
    ("vit(patch=3)", "model 'vit': patch 3 does not divide the 8x8 images"),
    ("vit(width=10, heads=4)", "model 'vit': width 10 is not a multiple of heads 4"),
    ("mlp(depth=0)", "model 'mlp': depth must be a positive integer, got 0"),
    ("convnet(channels=[8, 8])", "model 'convnet': channels must be a positive integer, got [8, 8]"),
    ("mlp(hidden=[8], depth=4)", "model 'mlp': give hidden=[...] or depth and width, not both"),
    ("convnet(activation=swish)", "model 'convnet': unknown activation 'swish'; valid: relu"),
])
def test_bad_model_parameters_are_one_line_errors(spec, message, tmp_path, capsys):
    code = main(["run", "--model", spec, "--dataset", "digits", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


TRAIN = dict(dataset="digits", epochs=1, batch_size=32, limit_train=128, limit_val=64, limit_test=64,
             accelerator="cpu", lr=0.01)


@pytest.mark.parametrize("model", ["mlp(depth=12, width=16)", "convnet(depth=4, channels=4)",
                                   "resnet(depth=8, width=4, norm=none)", "vit(depth=1, width=8, heads=2)"])
def test_each_model_trains_under_both_engines_with_the_same_records(model, tmp_path):
    specs = [RunSpec(model=model, init=i, **TRAIN) for i in ("kaiming_normal", "xavier_uniform")]
    results = claim_and_run_group(specs, tmp_path / "lockstep", progress=False)
    assert [outcome for *_, outcome in results] == ["trained", "trained"]
    for spec, (_, run_dir, summary, _) in zip(specs, results, strict=True):
        _, alone = run(spec, tmp_path / "sequential", progress=False)
        assert json.loads((run_dir / "config.json").read_text())["engine"] == "lockstep"
        assert summary["status"] == alone["status"] != "failed" and summary["steps"] == alone["steps"] == 4
        assert summary["val_acc_final"] == pytest.approx(alone["val_acc_final"], abs=0.05)


def test_a_batchnorm_resnet_trains_one_by_one_with_a_note(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndatasets: [digits]\nmodels: ['resnet(depth=8, width=4)']\ninits: [kaiming_normal, "
                    "xavier_uniform]\nseeds: 1\ntrain: {epochs: 1, batch_size: 32, limit_train: 128, limit_val: 64, "
                    "limit_test: 64, accelerator: cpu, lr: 0.01}\n")
    capsys.readouterr()
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--no-report", "--no-progress"]) == 0
    assert "BatchNorm2d (" in capsys.readouterr().err
    engines = {json.loads(p.read_text())["engine"] for p in (tmp_path / "out").glob("*/*/config.json")}
    statuses = {json.loads(p.read_text())["status"] for p in (tmp_path / "out").glob("*/*/summary.json")}
    assert engines == {"sequential"} and "failed" not in statuses
