"""The init library against its ground truth: torch.nn.init itself and the papers' variance formulas."""

import copy
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import init as tinit

from initbench import InitbenchError, apply_init, list_inits, parse_init
from initbench.inits import InitSpec
from initbench.models import build_model

INITBENCH = Path(sys.executable).parent / "initbench"


def _lstm() -> nn.Module:
    return nn.LSTM(12, 7, num_layers=2)


MODELS = {
    "linear": lambda: nn.Linear(20, 30),
    "conv2d": lambda: nn.Conv2d(3, 8, 3),
    "lstm": _lstm,
}

# spec -> {dimensionality: the torch.nn.init call a user would write by hand}
TORCH_EQUIVALENT = {
    "uniform": lambda t: tinit.uniform_(t),
    "normal": lambda t: tinit.normal_(t),
    "normal(mean=0.5, std=0.02)": lambda t: tinit.normal_(t, 0.5, 0.02),
    "trunc_normal(std=0.02, a=-0.04, b=0.04)": lambda t: tinit.trunc_normal_(t, 0.0, 0.02, -0.04, 0.04),
    "constant(value=0.3)": lambda t: tinit.constant_(t, 0.3),
    "zeros": tinit.zeros_,
    "ones": tinit.ones_,
    "eye": lambda t: tinit.eye_(t) if t.dim() == 2 else tinit.dirac_(t),
    "dirac": lambda t: tinit.eye_(t) if t.dim() == 2 else tinit.dirac_(t),
    "xavier_uniform": lambda t: tinit.xavier_uniform_(t),
    "xavier_normal(gain=0.5)": lambda t: tinit.xavier_normal_(t, 0.5),
    "xavier_uniform(gain=relu)": lambda t: tinit.xavier_uniform_(t, tinit.calculate_gain("relu")),
    "kaiming_uniform": lambda t: tinit.kaiming_uniform_(t),
    "kaiming_normal": lambda t: tinit.kaiming_normal_(t),
    "kaiming_normal(mode=fan_out, nonlinearity=relu)": lambda t: tinit.kaiming_normal_(
        t, mode="fan_out", nonlinearity="relu"
    ),
    "kaiming_uniform(a=0.2, nonlinearity=leaky_relu)": lambda t: tinit.kaiming_uniform_(t, a=0.2),
    "orthogonal": lambda t: tinit.orthogonal_(t),
    "orthogonal(gain=2)": lambda t: tinit.orthogonal_(t, 2.0),
    # sparse_ is 2-D only: conv weights fall back to PyTorch's own default for them
    "sparse(sparsity=0.3)": lambda t: tinit.sparse_(t, 0.3) if t.dim() == 2 else tinit.kaiming_uniform_(
        t, a=math.sqrt(5)
    ),
}

# nonlinearity=auto inside an RNN means the cell's own activation, tanh (torch.nn.init's default: leaky_relu)
RNN_EQUIVALENT = {
    "kaiming_uniform": lambda t: tinit.kaiming_uniform_(t, nonlinearity="tanh"),
    "kaiming_normal": lambda t: tinit.kaiming_normal_(t, nonlinearity="tanh"),
}


@pytest.mark.parametrize("model_name", [*MODELS, "lstm-packed"])
@pytest.mark.parametrize("spec", TORCH_EQUIVALENT)
def test_matches_torch_nn_init_under_the_same_rng_state(spec, model_name):
    """Linear/conv: the torch.nn.init call itself. LSTM: that call gate by gate, or on the packed matrix
    with blocks=packed (PyTorch's convention)."""
    packed = model_name == "lstm-packed"
    model = MODELS[model_name.removesuffix("-packed")]()
    by_hand = copy.deepcopy(model)
    torch.manual_seed(0)
    given = parse_init(spec)
    manifest = apply_init(model, InitSpec(given.name, {**given.params, "blocks": "packed"}) if packed else spec)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in by_hand.named_parameters():  # the walk visits parameters in this order
            if "bias" in name:
                p.zero_()
            elif isinstance(by_hand, nn.LSTM) and not packed:
                for gate in p.chunk(4):
                    RNN_EQUIVALENT.get(spec, TORCH_EQUIVALENT[spec])(gate)
            else:
                (RNN_EQUIVALENT if isinstance(by_hand, nn.LSTM) else TORCH_EQUIVALENT).get(
                    spec, TORCH_EQUIVALENT[spec])(p)
    for (name, got), (_, want) in zip(model.named_parameters(), by_hand.named_parameters(), strict=True):
        assert torch.equal(got, want), f"{spec} on {model_name}: {name} differs from torch.nn.init"
    assert [r.name for r in manifest.records] == [n for n, _ in model.named_parameters()]


def _big_models():
    return {"linear": nn.Linear(800, 300), "conv2d": nn.Conv2d(64, 96, 3), "lstm": nn.LSTM(400, 200)}


def _fan(t, mode):
    fan_in, fan_out = t.shape[1] * t[0][0].numel(), t.shape[0] * t[0][0].numel()
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]


# spec -> (expected std from the paper's formula given the weight tensor)
FORMULAS = {
    "kaiming_normal(nonlinearity=relu)": lambda w: math.sqrt(2) / math.sqrt(_fan(w, "fan_in")),
    "kaiming_normal(mode=fan_out, nonlinearity=relu)": lambda w: math.sqrt(2) / math.sqrt(_fan(w, "fan_out")),
    "kaiming_uniform(nonlinearity=tanh)": lambda w: (5 / 3) / math.sqrt(_fan(w, "fan_in")),
    "kaiming_normal(a=0.2, nonlinearity=leaky_relu)": lambda w: math.sqrt(2 / 1.04) / math.sqrt(_fan(w, "fan_in")),
    "xavier_normal": lambda w: math.sqrt(2 / (_fan(w, "fan_in") + _fan(w, "fan_out"))),
    "xavier_uniform(gain=2)": lambda w: 2 * math.sqrt(2 / (_fan(w, "fan_in") + _fan(w, "fan_out"))),
    "lecun_normal": lambda w: 1 / math.sqrt(_fan(w, "fan_in")),
    "lecun_uniform": lambda w: 1 / math.sqrt(_fan(w, "fan_in")),
    "variance_scaling(scale=2, mode=fan_avg)": lambda w: math.sqrt(2 / _fan(w, "fan_avg")),
    "variance_scaling(scale=3, mode=fan_out, distribution=normal)": lambda w: math.sqrt(3 / _fan(w, "fan_out")),
    "variance_scaling(mode=fan_avg, distribution=uniform)": lambda w: math.sqrt(1 / _fan(w, "fan_avg")),
    "normal(std=0.02)": lambda w: 0.02,
    "trunc_normal(std=0.02, a=-1, b=1)": lambda w: 0.02,
}


@pytest.mark.parametrize("model_name", ["linear", "conv2d", "lstm"])
@pytest.mark.parametrize("spec", FORMULAS)
def test_variance_based_schemes_follow_their_formula(spec, model_name):
    model = _big_models()[model_name]
    torch.manual_seed(1)
    manifest = apply_init(model, spec)
    for name, w in model.named_parameters():
        if "weight" not in name:
            continue
        block = w.chunk(4)[0] if isinstance(model, nn.LSTM) else w  # the fans of one gate
        want = FORMULAS[spec](block)
        assert w.std().item() == pytest.approx(want, rel=0.03), f"{spec}: {name}"
        assert abs(w.mean().item()) < 0.05 * want
        rec = next(r for r in manifest.records if r.name == name)
        assert rec.std == pytest.approx(w.std().item(), rel=1e-5)
        assert (rec.fan_in, rec.fan_out) == (_fan(block, "fan_in"), _fan(block, "fan_out"))


def test_truncated_variance_scaling_is_cut_at_two_corrected_stds():
    w = nn.Linear(1000, 500).weight
    torch.manual_seed(2)
    apply_init(nn.ModuleDict({"l": nn.Linear(1, 1)}), "zeros")  # unrelated call must not matter
    with torch.no_grad():
        from initbench.inits import variance_scaling

        variance_scaling(w)
    std = math.sqrt(1 / 1000)
    assert w.abs().max().item() <= 2 * std / 0.87962566103423978 + 1e-7
    assert w.std().item() == pytest.approx(std, rel=0.03)


def test_orthogonal_rows_are_orthonormal():
    lin = nn.Linear(300, 100)
    apply_init(lin, "orthogonal")
    assert torch.allclose(lin.weight @ lin.weight.T, torch.eye(100), atol=1e-5)


def test_nonlinearity_is_inferred_from_the_model_and_declared_by_ours():
    tanh_net = nn.Sequential(nn.Linear(500, 400), nn.Tanh(), nn.Linear(400, 10))
    man = apply_init(tanh_net, "kaiming_normal")
    assert man.nonlinearity.startswith("tanh")
    assert tanh_net[0].weight.std().item() == pytest.approx((5 / 3) / math.sqrt(500), rel=0.03)
    leaky = nn.Sequential(nn.Linear(500, 400), nn.LeakyReLU(0.3), nn.Linear(400, 10))
    man = apply_init(leaky, "kaiming_normal")
    assert man.records[0].params == {"a": 0.3, "mode": "fan_in", "nonlinearity": "leaky_relu"}
    mlp = build_model("mlp(activation=selu, hidden=[600])", (1, 8, 8), 10)
    man = apply_init(mlp, "xavier_normal(gain=auto)")
    assert man.nonlinearity.startswith("selu (declared by the model); selu: gain 1 (variance 1/fan_in")
    assert man.records[0].params["gain"] == 1.0  # the SNN paper's and PyTorch docs' advice, not 0.75
    mixed = nn.Sequential(nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 5), nn.Tanh())
    man = apply_init(mixed, "kaiming_normal")
    assert "mixed activations" in man.nonlinearity
    assert man.warnings[0].startswith("mixed activations ['relu', 'tanh']: kaiming_normal used leaky_relu(a=0)")


def test_norm_layers_and_bias_policy():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.LayerNorm(4),
                          nn.InstanceNorm2d(4, affine=True), nn.Linear(4, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(7.0)
    man = apply_init(model, "kaiming_normal(bias=0.1)")
    for i in (1, 2, 3, 4):
        assert torch.all(model[i].weight == 1) and torch.all(model[i].bias == 0)
    assert torch.all(model[0].bias == 0.1) and torch.all(model[5].bias == 0.1)
    assert {r.role for r in man.records} == {"weight", "bias", "norm"}
    apply_init(model, "normal(bias=keep, norm=keep)")
    assert torch.all(model[0].bias == 0.1) and torch.all(model[1].weight == 1)
    assert model[1].running_var.eq(1).all()  # buffers are not parameters: untouched


def test_other_layer_types_are_walked():
    model = nn.ModuleDict({
        "emb": nn.Embedding(50, 16), "bil": nn.Bilinear(4, 5, 6), "gru": nn.GRU(6, 8, bidirectional=True),
        "rnn": nn.RNN(4, 4), "deconv": nn.ConvTranspose2d(4, 2, 3), "conv1": nn.Conv1d(2, 3, 5),
        "conv3": nn.Conv3d(2, 3, 3), "attn": nn.MultiheadAttention(8, 2), "prelu": nn.PReLU(),
    })
    man = apply_init(model, "xavier_uniform")
    by_name = {r.name: r for r in man.records}
    assert set(by_name) == {n for n, _ in model.named_parameters()}
    for name in ("gru.weight_hh_l0_reverse", "bil.weight", "emb.weight", "deconv.weight", "attn.in_proj_weight",
                 "attn.out_proj.weight", "conv3.weight"):
        assert by_name[name].scheme == "xavier_uniform", name
    assert by_name["gru.bias_ih_l0"].scheme == "constant"
    assert by_name["prelu.weight"].scheme == "kept" and "no fans" in by_name["prelu.weight"].note
    assert model["prelu"].weight.item() == 0.25


def test_pytorch_default_calls_reset_parameters():
    torch.manual_seed(3)
    a = nn.Sequential(nn.Linear(10, 10), nn.BatchNorm1d(10), nn.Linear(10, 2))
    b = copy.deepcopy(a)
    with torch.no_grad():
        for p in a.parameters():
            p.fill_(5.0)
    torch.manual_seed(4)
    man = apply_init(a, "pytorch_default")
    torch.manual_seed(4)
    for m in b:
        m.reset_parameters()
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert {r.scheme for r in man.records} == {"pytorch_default"}


# --- the seeds' own models -------------------------------------------------------------------------


class SeedNestedNet(nn.Module):  # seed 000: a class model with a nested Sequential block
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(30, 40), nn.ReLU())
        self.layer2 = nn.Linear(40, 10)

    def forward(self, x):
        return self.layer2(self.layer1(x))


class SeedHandMadeLinear(nn.Module):  # seed 000: a Linear layer built from nn.Parameter
    def __init__(self, in_features, out_features):
        super().__init__()
        self.w = nn.Parameter(torch.randn(out_features, in_features))
        self.b = nn.Parameter(torch.randn(out_features))

    def forward(self, x):
        return x @ self.w.t() + self.b


def test_seed_models_through_the_walk():
    net = SeedNestedNet()
    man = apply_init(net, "kaiming_normal")
    assert [r.name for r in man.records] == ["layer1.0.weight", "layer1.0.bias", "layer2.weight", "layer2.bias"]
    assert man.nonlinearity.startswith("relu")

    rg = nn.Sequential(nn.Sequential(nn.Sequential(nn.Linear(4, 8), nn.ReLU())), nn.Linear(8, 1))
    man = apply_init(rg, "normal(std=0.01, bias=1)")
    assert rg[0][0][0].bias.eq(1).all()  # seed 001's rgnet[0][1][0].bias, one level shallower
    assert man.records[0].name == "0.0.0.weight"

    hand = SeedHandMadeLinear(4000, 300)
    man = apply_init(hand, "kaiming_uniform(nonlinearity=linear)")
    w, b = man.records
    assert (w.name, w.role, w.fan_in, w.fan_out) == ("w", "weight", 4000, 300)
    assert "custom parameter" in w.note
    assert hand.w.std().item() == pytest.approx(1 / math.sqrt(4000), rel=0.03)
    assert (b.name, b.role) == ("b", "bias") and hand.b.eq(0).all()


def test_simplecnn_initialised_as_in_seed_002():
    cnn = build_model("simplecnn", (3, 32, 32), 10)
    man = apply_init(cnn, "kaiming_normal")
    convs = [r for r in man.records if r.module_type == "Conv2d" and r.role == "weight"]
    assert [r.name for r in convs] == [f"features.layer{i}.conv{i}.weight" for i in (1, 2, 3)]
    for rec in convs:
        assert rec.std == pytest.approx(math.sqrt(2 / rec.fan_in), rel=0.1)
    fc1 = next(r for r in man.records if r.name == "classifier.fc1.weight")
    assert fc1.shape == [512, 2048]
    assert all(r.scheme == "constant" for r in man.records if r.role == "bias")


# --- LSUV on real data ------------------------------------------------------------------------------


def _digits_batch(n=500):
    x = torch.tensor(load_digits().data[:n], dtype=torch.float32).view(-1, 1, 8, 8)
    return (x - x.mean()) / x.std()


def _output_variances(model, x):
    variances = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: variances.__setitem__(n, o.var().item()))
             for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return variances


@pytest.mark.parametrize("model_spec", ["mlp(hidden=[128, 64], activation=tanh)", "simplecnn"])
def test_lsuv_reaches_unit_output_variance_on_digits(model_spec):
    x = _digits_batch()
    torch.manual_seed(5)
    model = build_model(model_spec, (1, 8, 8), 10)
    man = apply_init(model, "lsuv(tol=0.05)", data=x)
    variances = _output_variances(model, x)
    assert len(variances) >= 3
    for name, v in variances.items():
        assert v == pytest.approx(1.0, abs=0.05), name
    calibrated = [r for r in man.records if r.scheme == "lsuv"]
    assert len(calibrated) == len(variances)
    assert all(abs(r.params["output_var"] - 1) < 0.05 for r in calibrated)
    # reproducible under torch.manual_seed
    torch.manual_seed(5)
    again = build_model(model_spec, (1, 8, 8), 10)
    apply_init(again, "lsuv(tol=0.05)", data=x)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True))


def test_lsuv_needs_data():
    with pytest.raises(InitbenchError, match="needs a batch"):
        apply_init(nn.Linear(3, 3), "lsuv")


# --- selection by name ------------------------------------------------------------------------------


def test_spec_parsing():
    spec = parse_init("kaiming_normal(mode=fan_out, nonlinearity=relu)")
    assert (spec.name, dict(spec.params)) == ("kaiming_normal", {"mode": "fan_out", "nonlinearity": "relu"})
    assert dict(parse_init("trunc_normal(std=2e-2, a=-0.5)").params) == {"std": 0.02, "a": -0.5}
    assert parse_init("sparse(fallback=normal(std=0.01))").params["fallback"] == "normal(std=0.01)"
    assert parse_init({"name": "normal", "std": 0.02}) == parse_init("normal(std=0.02)")
    assert str(parse_init(" xavier_uniform( gain = relu ) ")) == "xavier_uniform(gain=relu)"
    assert parse_init("mypkg.inits:scaled").name == "mypkg.inits:scaled"


def test_fallback_is_configurable_and_recorded():
    conv = nn.Conv2d(3, 4, 3)
    man = apply_init(conv, "sparse(fallback=normal(std=0.5))")
    assert man.records[0].scheme == "normal" and "fallback for sparse" in man.records[0].note
    assert man.records[0].params == {"mean": 0.0, "std": 0.5}


def test_function_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_inits.py").write_text(textwrap.dedent("""
        def halves(tensor, value: float = 0.5):
            tensor.data.fill_(value)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    lin = nn.Linear(3, 2)
    man = apply_init(lin, "my_inits:halves(value=0.25)")
    assert lin.weight.eq(0.25).all() and man.records[0].scheme == "my_inits:halves"
    torch.manual_seed(9)
    apply_init(lin, "torch.nn.init:orthogonal_")
    ref = nn.Linear(3, 2)
    torch.manual_seed(9)
    apply_init(ref, "orthogonal")
    assert torch.equal(lin.weight, ref.weight)
    with pytest.raises(InitbenchError, match="parameter 'value' of init 'my_inits:halves' must be a number"):
        apply_init(lin, "my_inits:halves(value=big)")


def test_third_party_strategies_through_entry_points(tmp_path):
    (tmp_path / "ib_plugin.py").write_text("def fives(tensor, scale: float = 5.0):\n    tensor.data.fill_(scale)\n")
    dist = tmp_path / "ib_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ib-plugin\nVersion: 1.0\n")
    # a broken plug-in listed first must not hide the working one, nor the built-ins
    (dist / "entry_points.txt").write_text(
        "[initbench.inits]\naaa_broken = no_such_module:fn\nfives = ib_plugin:fives\n")
    code = ("import torch; from initbench import apply_init, list_inits;"
            "l = torch.nn.Linear(2, 2); apply_init(l, 'fives(scale=3)');"
            "print([s.name for s in list_inits('fiv*')], l.weight.flatten().tolist(), len(list_inits()) > 15)")
    env = {"PYTHONPATH": str(tmp_path), "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "['fives'] [3.0, 3.0, 3.0, 3.0] True"
    asked = subprocess.run([str(INITBENCH), "run", "--init", "aaa_broken"], capture_output=True,
                           text=True, env=env)
    assert asked.returncode == 2 and "Traceback" not in asked.stderr
    assert "plug-in 'aaa_broken' (no_such_module:fn, group initbench.inits) failed to load" in asked.stderr
    listed = subprocess.run([str(INITBENCH), "list", "inits"], capture_output=True, text=True,
                            env=env, check=True).stdout
    assert "fives" in listed and "(unusable) plug-in 'aaa_broken'" in listed


def test_every_strategy_is_listed_with_a_description():
    names = {s.name for s in list_inits()}
    assert names >= {"pytorch_default", "uniform", "normal", "trunc_normal", "constant", "zeros", "ones", "eye",
                     "dirac", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal",
                     "sparse", "lecun_normal", "lecun_uniform", "variance_scaling", "lsuv"}
    assert all(s.description for s in list_inits())


@pytest.mark.parametrize(("spec", "message"), [
    ("kaiming_normall", "unknown init 'kaiming_normall'; did you mean kaiming_normal"),
    ("normal(sdt=0.1)", "init 'normal' has no parameter 'sdt'; valid: mean, std, bias, norm, fallback"),
    ("normal(std=wide)", "parameter 'std' of init 'normal' must be a number, got 'wide'"),
    ("kaiming_normal(mode=fan_middle)", "parameter 'mode' of init 'kaiming_normal' must be one of fan_in, fan_out"),
    ("dirac(groups=1.5)", "must be a whole number"),
    ("constant", "init 'constant' needs value=..."),
    ("normal(std=", "malformed init spec 'normal(std='"),
    ("normal(0.02)", "arguments must be key=value"),
    ("normal(bias=maybe)", "parameter 'bias' of init 'normal' must be zeros, keep or a number"),
    ("sparse(fallback=nosuch)", "unknown init 'nosuch'"),
    ("sparse(fallback=normal(sd=1))", "init 'normal' has no parameter 'sd'"),
    ("no_such_pkg.sub:fn", "cannot import 'no_such_pkg.sub' for init 'no_such_pkg.sub:fn'"),
    ("math:no_such_fn", "module 'math' has no attribute 'no_such_fn'"),
])
def test_bad_specs_are_one_clear_error(spec, message):
    with pytest.raises(InitbenchError) as err:
        apply_init(nn.Linear(3, 3), spec)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_lists_strategies_with_parameters(capsys):
    from initbench.cli import main

    assert main(["list", "inits"]) == 0
    out = capsys.readouterr().out
    for s in list_inits():
        assert f"\n{s.name} " in f"\n{out}"
    assert "params: a=0.0, mode=fan_in, nonlinearity=auto" in out and "value=<required>" in out
    assert "every init also takes:\n  bias      zeros | keep" in out and "\n  rules     {PATTERN: SPEC" in out
    assert main(["list", "inits", "kaiming*"]) == 0
    assert capsys.readouterr().out.count("He et al. 2015") == 2


@pytest.mark.parametrize("spec", ["normal(std=-1)", "uniform(a=1, b=0)", "sparse(sparsity=1)", "lsuv(tol=0)",
                                  "kaiming_uniform(nonlinearity=tanhh)", "orthogonal(gain=-2)", "dirac(groups=0)",
                                  "variance_scaling(scale=0)", "trunc_normal(std=0)", "normal(bias=maybe)",
                                  "xavier_uniform(fans=both)", "eye(norm=zero)"])
def test_the_check_before_torch_says_what_the_strategy_says(spec):
    """`registry.check_init` (catalog.json, no torch) and the strategy itself refuse a value in the same words."""
    from initbench import registry
    from initbench.inits import resolve_init

    with pytest.raises(InitbenchError) as light:
        registry.check_init(spec)
    with pytest.raises(InitbenchError) as full:
        resolve_init(spec)
    assert str(light.value) == str(full.value)


def test_every_named_gain_has_a_rule():
    from initbench.inits import gains
    from initbench.params import NONLINEARITIES

    assert set(NONLINEARITIES) == {*gains.TORCH_GAINS, *gains._SECOND_MOMENT}
