"""`initbench probe` on real batches: the propagation laws of a 20-layer ReLU MLP against their formulas, the
long-form table, the coordinate check over widths, W&B read back with wandb's own reader, and one-line refusals."""

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from initbench.cli import main
from initbench.probe import COLUMNS

INITBENCH = Path(sys.executable).parent / "initbench"
DEEP = f"mlp(hidden=[{', '.join(['256'] * 20)}])"


def per_layer_factor(frame: pd.DataFrame, init: str) -> float:
    """The geometric mean, over seeds and hidden layers 2..20, of a layer's output rms over the previous layer's."""
    rms = frame[(frame["init"] == init) & (frame["stat"] == "act_rms") & (frame["kind"] == "layer")]
    logs = []
    for _, seed in rms.groupby("seed"):
        hidden = seed[seed["layer"].str.match(r"layers\.fc\d+$")].sort_values("depth")["value"].to_numpy()
        assert len(hidden) == 20
        logs += [math.log(b / a) for a, b in itertools.pairwise(hidden)]
    return math.exp(sum(logs) / len(logs))


def test_a_20_layer_relu_mlp_follows_the_propagation_laws(tmp_path, capsys):
    """Width 256, biases zero: a layer multiplies the pre-activation's second moment by 256 var(w) / 2 (ReLU keeps half
    of it). kaiming (fan_in, relu): var 2/256, factor 1; xavier: var 2/(256+256), factor 2^(-1/2); normal(1): var 1,
    factor sqrt(128), which explodes."""
    assert main(["probe", "--model", DEEP, "--dataset", "digits", "--inits", "kaiming_normal", "xavier_normal",
                 "normal(std=1)", "--seeds", "3", "--batch-size", "256", "--out", str(tmp_path)]) == 0
    frame = pd.read_csv(tmp_path / "probe.csv")
    assert per_layer_factor(frame, "kaiming_normal") == pytest.approx(1.0, rel=0.05)
    assert per_layer_factor(frame, "xavier_normal") == pytest.approx(2**-0.5, rel=0.05)
    assert per_layer_factor(frame, "normal(std=1)") == pytest.approx(128**0.5, rel=0.05)
    deepest = frame[(frame["stat"] == "act_rms") & (frame["layer"] == "layers.fc20")].groupby("init")["value"].mean()
    assert deepest["normal(std=1)"] > 1e15 and deepest["xavier_normal"] < 1e-2  # exploded, vanished
    assert (tmp_path / "signal_propagation.png").stat().st_size > 10_000
    assert "probe: 9 models x 1 steps" in capsys.readouterr().out


def test_across_depth_he_keeps_the_scale_and_xavier_halves_it_every_layer(tmp_path):
    """`probe --depths`: in a plain ReLU MLP of width 256, He's init keeps every hidden layer's output rms within a
    factor of 2 however deep; Xavier's second moment halves per layer, so across the 16 layers of the deepest model
    the rms falls by about 2^-8 (2^-7.5 from the first hidden layer to the 16th); the last layer's rms against depth
    is flat for He and falls for Xavier."""
    assert main(["probe", "--model", "mlp(width=256)", "--dataset", "digits", "--inits", "kaiming_normal",
                 "xavier_normal", "--depths", "4", "16", "--seeds", "2", "--batch-size", "256", "--stats", "act_rms",
                 "--out", str(tmp_path)]) == 0
    frame = pd.read_csv(tmp_path / "probe.csv")
    assert set(frame["model_depth"]) == {4, 16}
    rms = frame[(frame["model_depth"] == 16) & (frame["kind"] == "layer") & frame["layer"].str.match(r"layers\.fc")]
    hidden = {init: g.groupby("depth")["value"].mean().to_numpy() for init, g in rms.groupby("init")}
    assert len(hidden["kaiming_normal"]) == 16
    assert hidden["kaiming_normal"].max() / hidden["kaiming_normal"].min() < 2
    assert 2**-9 < hidden["xavier_normal"][-1] / hidden["xavier_normal"][0] < 2**-6.5
    assert (tmp_path / "depth_check_act_rms.png").stat().st_size > 10_000


def test_the_long_form_table_follows_training_step_by_step(tmp_path):
    assert main(["probe", "--model", "simplecnn", "--dataset", "digits", "--inits", "kaiming_normal", "zeros",
                 "--seeds", "2", "--steps", "3", "--batch-size", "64", "--out", str(tmp_path)]) == 0
    frame = pd.read_csv(tmp_path / "probe.csv")
    assert list(frame.columns) == COLUMNS and frame["width"].isna().all()
    assert set(frame["stat"]) == {"act_mean", "act_std", "act_rms", "dead_frac", "grad_rms", "grad_norm"}
    assert sorted(set(frame["step"])) == [0, 1, 2, 3] and set(frame["seed"]) == {0, 1}
    one = frame[(frame["init"] == "kaiming_normal") & (frame["seed"] == 0) & (frame["step"] == 0)]
    order = one.drop_duplicates("depth").sort_values("depth")
    assert order["depth"].tolist() == list(range(len(order)))  # 0-based, forward order
    assert order["layer"].tolist() == ["features.layer1.conv1", "features.layer1.relu1", "features.layer2.conv2",
                                       "features.layer2.relu2", "features.layer3.conv3", "features.layer3.relu3",
                                       "classifier.fc1", "classifier.fc_relu1", "classifier.fc2",
                                       "classifier.fc_relu2", "classifier.fc3"]
    assert set(one.loc[one["stat"] == "dead_frac", "kind"]) == {"activation"}
    assert set(one.loc[one["stat"].str.startswith("grad"), "kind"]) == {"layer"}
    # the conv's output is measured before the in-place ReLU after it: its mean is not that of a ReLU's output
    conv = one[(one["layer"] == "features.layer1.conv1")].set_index("stat")["value"]
    relu = one[(one["layer"] == "features.layer1.relu1")].set_index("stat")["value"]
    assert conv["act_mean"] < relu["act_mean"] and relu["act_rms"] < conv["act_rms"]
    # zeros: every unit dead, no signal past the first layer, no gradient but the readout's bias
    zeros = frame[(frame["init"] == "zeros") & (frame["step"] == 0)]
    assert (zeros.loc[zeros["stat"] == "dead_frac", "value"] == 1).all()
    # the steps train: kaiming's first-layer gradient changes from step to step
    first = frame[(frame["init"] == "kaiming_normal") & (frame["seed"] == 0) & (frame["stat"] == "grad_norm")
                  & (frame["depth"] == 0)].sort_values("step")["value"]
    assert first.nunique() == 4


def test_steps_show_the_top_sigmoid_layer_driven_to_saturation(tmp_path):
    """Glorot & Bengio 2010's figure 2 over the probe's steps: a 5-layer sigmoid network's top hidden layer falls
    towards 0 in the first hundred steps while the lower layers stay near 0.5; steps_act_mean.png draws it."""
    assert main(["probe", "--model", "mlp(depth=5, width=256, activation=sigmoid)", "--dataset", "digits",
                 "--inits", "xavier_uniform", "--seeds", "1", "--steps", "150", "--lr", "0.1", "--stats", "act_mean",
                 "--out", str(tmp_path)]) == 0
    frame = pd.read_csv(tmp_path / "probe.csv")
    act = frame[frame["kind"] == "activation"].pivot_table(index="step", columns="layer", values="value")
    assert act.loc[0].between(0.45, 0.55).all()  # the sigmoid of a centred pre-activation
    assert act.loc[150, "layers.act5"] < 0.3 and act.loc[150, "layers.act1"] > 0.45
    assert (tmp_path / "steps_act_mean.png").stat().st_size > 10_000


def test_the_coordinate_check_over_widths(tmp_path):
    """kaiming's hidden pre-activations keep their scale as the MLP widens (a flat coordinate check); the last
    layer's output under normal(std=1) grows with width, as sqrt(width) per layer."""
    assert main(["probe", "--model", "mlp(hidden=[64, 64, 64])", "--inits", "kaiming_normal", "normal(std=1)",
                 "--widths", "64", "256", "1024", "--seeds", "3", "--steps", "2", "--stats", "act_rms", "grad_norm",
                 "--batch-size", "256", "--out", str(tmp_path)]) == 0
    frame = pd.read_csv(tmp_path / "probe.csv")
    assert set(frame["width"]) == {64, 256, 1024} and set(frame["stat"]) == {"act_rms", "grad_norm"}
    at0 = frame[(frame["step"] == 0) & (frame["stat"] == "act_rms") & (frame["layer"] == "layers.fc3")]
    kaiming = at0[at0["init"] == "kaiming_normal"].groupby("width")["value"].mean()
    assert kaiming.max() / kaiming.min() < 1.15
    normal = at0[at0["init"] == "normal(std=1)"].groupby("width")["value"].mean()
    assert normal[1024] / normal[64] == pytest.approx(1024 / 64, rel=0.15)  # two layers of sqrt(width / 2) each
    for stat in ("act_rms", "grad_norm"):
        assert (tmp_path / f"coord_check_{stat}.png").stat().st_size > 10_000


def test_the_jacobian_of_a_deep_linear_net_is_an_isometry_under_orthogonal_init(tmp_path):
    """Ten 64-wide identity-activation layers on digits' 64 inputs, a 10-way readout: with orthogonal weights the
    Jacobian is the readout's orthonormal rows times an orthogonal matrix, so every singular value is 1; a Gaussian
    init of the same variance spreads them."""
    model = f"mlp(hidden=[{', '.join(['64'] * 10)}], activation=identity)"
    assert main(["probe", "--model", model, "--inits", "orthogonal", "kaiming_normal", "--seeds", "2", "--jacobian",
                 "4", "--stats", "act_rms", "--out", str(tmp_path)]) == 0
    spectra = pd.read_csv(tmp_path / "jacobian.csv")
    assert len(spectra) == 2 * 2 * 4 * 10  # inits x seeds x examples x min(10 logits, 64 inputs)
    orthogonal = spectra.loc[spectra["init"] == "orthogonal", "singular_value"]
    assert orthogonal.to_numpy() == pytest.approx(1, abs=1e-4)
    gaussian = spectra.loc[spectra["init"] == "kaiming_normal", "singular_value"]
    assert gaussian.max() / gaussian.min() > 3
    assert (tmp_path / "jacobian_spectrum.png").stat().st_size > 10_000


def test_probe_results_are_a_wandb_run_read_back_with_wandbs_reader(tmp_path):
    from test_wandb import inspect

    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")} | {"HOME": str(tmp_path)}
    done = subprocess.run([str(INITBENCH), "probe", "--inits", "kaiming_normal", "orthogonal", "--seeds", "1",
                           "--steps", "1", "--out", str(tmp_path / "p"), "--logger", "wandb", "--wandb-project",
                           "probe-test"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "p" / "wandb" / "wandb").glob("offline-run-*")
    summary, records = inspect(run_dir)
    run = next(r["run"] for r in records if r["type"] == "run")
    assert summary["project"] == "probe-test" and run["job_type"] == "probe" and summary["state"] == "finished"
    assert summary["summary"]["rows"] == len(pd.read_csv(tmp_path / "p" / "probe.csv"))
    assert summary["summary"]["probe"]["_type"] == "table-file"
    assert summary["summary"]["plots/signal_propagation"]["_type"] == "image-file"
    table = json.loads((run_dir / "files" / summary["summary"]["probe"]["path"]).read_text())
    assert table["columns"] == COLUMNS and len(table["data"]) == summary["summary"]["rows"]


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    (tmp_path / "plainmodels.py").write_text(
        "from torch import nn\n\n\ndef build(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n\n\n"
        "def broken(input_shape, num_classes):\n    return nn.Sequential(nn.Flatten(), nn.Linear(3, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.parametrize(("args", "message"), [
    (["--stats", "act_rms", "act_var"], "unknown stat 'act_var'; valid: act_mean, act_std, act_rms, dead_frac, "
                                        "grad_rms, grad_norm"),
    (["--model", "plainmodels:build", "--widths", "8", "16"], "has no width parameter for --widths"),
    (["--inits", "kaiming_normall"], "unknown init 'kaiming_normall'"),
    (["--model", "plainmodels:broken", "--inits", "xavier_normal"],
     "plainmodels:broken with init xavier_normal: the forward or backward pass failed at step 0: RuntimeError: mat1 "
     "and mat2 shapes cannot be multiplied"),
    (["--steps", "-1"], "--steps must be at least 0, got -1"),
    (["--widths", "8", "8"], "--widths lists a width twice"),
    (["--depths", "4", "4", "--model", "mlp"], "--depths lists a depth twice"),
    (["--depths", "4", "8", "--model", "simplecnn"], "model 'simplecnn' has no depth parameter for --depths"),
    (["--depths", "0", "--model", "mlp"], "--depths must be at least 1, got 0"),
    (["--jacobian", "200", "--batch-size", "64"], "--jacobian 200: at most the batch size (64) examples"),
])
def test_bad_probe_input_is_one_line_with_nothing_written(args, message, tmp_path, capsys, user_models):
    argv = ["probe", "--inits", "kaiming_normal", "--out", str(tmp_path / "p"), *args]
    if "--inits" in args:
        argv = ["probe", "--out", str(tmp_path / "p"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "p").exists()
