"""The init library on the layers real models use: embeddings, recurrent gates, attention, transposed and
grouped convolutions, custom parameters, activations given as functions, LSUV's coverage, meta tensors."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import init as tinit

from initbench import InitbenchError, apply_init
from initbench.inits import gain


def _singular_values(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(t.detach().double())


# --- embeddings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["normal", "kaiming_normal", "xavier_uniform", "pytorch_default", "ones"])
def test_padding_idx_rows_stay_zero(spec):
    model = nn.ModuleDict({"emb": nn.Embedding(50, 16, padding_idx=3), "bag": nn.EmbeddingBag(40, 8, padding_idx=0)})
    man = apply_init(model, spec)
    assert model["emb"].weight[3].eq(0).all() and model["bag"].weight[0].eq(0).all()
    assert model["emb"].weight[4].ne(0).all()
    if spec != "pytorch_default":  # reset_parameters zeroes the row itself
        assert "padding_idx row 3 kept at zero" in next(r for r in man.records if r.name == "emb.weight").note


# --- recurrent gates --------------------------------------------------------------------------------


def test_lstm_gates_are_orthogonal_one_by_one():
    lstm = nn.LSTM(64, 128)
    torch.manual_seed(0)
    man = apply_init(lstm, "orthogonal")
    for name in ("weight_ih_l0", "weight_hh_l0"):
        for gate in getattr(lstm, name).chunk(4):
            assert torch.allclose(_singular_values(gate), torch.ones(1, dtype=torch.float64), atol=1e-5), name
        rec = next(r for r in man.records if r.name == name)
        assert rec.blocks == ["i", "f", "g", "o"] and "filled per block: 4 blocks" in rec.note
    packed = nn.LSTM(64, 128)
    apply_init(packed, "orthogonal(blocks=packed)")  # PyTorch's way: one orthogonal 512x64 matrix
    worst = min(_singular_values(g).min().item() for g in packed.weight_hh_l0.chunk(4))
    assert worst < 0.5  # the defect, still reachable on purpose


@pytest.mark.parametrize(("cls", "gates"), [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)])
def test_recurrent_fans_are_per_gate(cls, gates):
    rnn = cls(200, 300)
    torch.manual_seed(1)
    man = apply_init(rnn, "xavier_normal")
    per_gate = math.sqrt(2 / (200 + 300))
    assert rnn.weight_ih_l0.std().item() == pytest.approx(per_gate, rel=0.03)
    rec = next(r for r in man.records if r.name == "weight_ih_l0")
    assert (rec.fan_in, rec.fan_out) == (200, 300) and len(rec.blocks) == (gates if gates > 1 else 0)
    packed = cls(200, 300)
    apply_init(packed, "xavier_normal(blocks=packed)")
    assert packed.weight_ih_l0.std().item() == pytest.approx(math.sqrt(2 / (200 + 300 * gates)), rel=0.03)


def test_rnn_gains_come_from_the_cell():
    model = nn.Sequential(nn.Linear(10, 10), nn.ReLU())
    model.add_module("rnn", nn.RNN(10, 400, nonlinearity="tanh"))
    torch.manual_seed(2)
    man = apply_init(model, "kaiming_normal")
    assert model.rnn.weight_hh_l0.std().item() == pytest.approx((5 / 3) / math.sqrt(400), rel=0.03)
    assert "gain of the RNN cell's tanh" in next(r for r in man.records if r.name == "rnn.weight_hh_l0").note


# --- attention --------------------------------------------------------------------------------------


def test_attention_qkv_the_same_packed_or_separate():
    torch.manual_seed(3)
    packed = nn.MultiheadAttention(256, 4)
    separate = nn.MultiheadAttention(256, 4, kdim=128, vdim=128)
    man = apply_init(packed, "xavier_normal")
    apply_init(separate, "xavier_normal")
    q_packed, _, _ = packed.in_proj_weight.chunk(3)
    assert q_packed.std().item() == pytest.approx(separate.q_proj_weight.std().item(), rel=0.03)
    assert q_packed.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.03)
    assert next(r for r in man.records if r.name == "in_proj_weight").blocks == ["q", "k", "v"]


def test_attention_bias_kv_gets_pytorch_default_and_reset_matches_construction():
    torch.manual_seed(4)
    built = nn.MultiheadAttention(64, 4, add_bias_kv=True)
    model = copy.deepcopy(built)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    torch.manual_seed(4)
    man = apply_init(model, "pytorch_default")
    for (name, got), want in zip(model.named_parameters(), built.parameters(), strict=True):
        assert torch.equal(got, want), name
    assert {r.note for r in man.records if r.name == "in_proj_weight"} == {
        "MultiheadAttention._reset_parameters()"}
    man = apply_init(model, "zeros")
    rec = next(r for r in man.records if r.name == "bias_k")
    assert rec.scheme == "xavier_normal" and "PyTorch's default" in rec.note
    assert model.bias_k.abs().sum() > 0 and model.in_proj_weight.eq(0).all()


# --- convolutions -----------------------------------------------------------------------------------


def _output_variance(layer: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        y = layer(x)
    return y[..., 2:-2, 2:-2].var().item()  # away from the borders, where fewer taps land


@pytest.mark.parametrize(("kernel", "stride", "extra"), [(3, 1, 0), (4, 2, 0), (3, 2, 1)])
def test_transposed_conv_fans_preserve_the_forward_signal(kernel, stride, extra):
    torch.manual_seed(5)
    x = torch.randn(16, 128, 12, 12)
    deconv = nn.ConvTranspose2d(128, 64, kernel, stride=stride, padding=(kernel - 1) // 2, output_padding=extra)
    man = apply_init(deconv, "kaiming_normal(nonlinearity=relu)")
    assert _output_variance(deconv, x) == pytest.approx(2.0, rel=0.1)  # He: fan_in * Var(w) * E[x^2] = 2
    rec = man.records[0]
    assert rec.fan_in == pytest.approx(128 * kernel**2 / stride**2) and "transposed conv" in rec.note
    apply_init(deconv, "kaiming_normal(nonlinearity=relu, fans=torch)")
    assert _output_variance(deconv, x) == pytest.approx(2.0 * 128 / 64 / stride**2, rel=0.1)  # PyTorch's


def test_fans_torch_is_exactly_torch_nn_init_on_a_transposed_conv():
    a, b = nn.ConvTranspose2d(16, 8, 3, stride=2), nn.ConvTranspose2d(16, 8, 3, stride=2)
    torch.manual_seed(6)
    apply_init(a, "kaiming_uniform(fans=torch)")
    torch.manual_seed(6)
    with torch.no_grad():
        tinit.kaiming_uniform_(b.weight)
    assert torch.equal(a.weight, b.weight)


def test_grouped_conv_fan_out_counts_one_group():
    depthwise = nn.Conv2d(64, 64, 3, groups=64)
    torch.manual_seed(7)
    man = apply_init(depthwise, "kaiming_normal(mode=fan_out, nonlinearity=relu)")
    assert man.records[0].fan_out == 9
    assert depthwise.weight.std().item() == pytest.approx(math.sqrt(2 / 9), rel=0.05)


# --- roles from the module --------------------------------------------------------------------------


class RelativeBias(nn.Module):  # Swin-style: a 2-D table with "bias" in its name is a weight
    def __init__(self):
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.full((169, 4), 7.0))
        self.proj = nn.Linear(8, 8)
        self.bias = nn.Parameter(torch.full((8,), 7.0))

    def forward(self, x):
        return self.proj(x) + self.bias


def test_roles_come_from_the_module_not_the_name():
    model = RelativeBias()
    man = apply_init(model, "normal(std=0.02)")
    by = {r.name: r for r in man.records}
    assert by["relative_position_bias_table"].role == "weight"
    assert model.relative_position_bias_table.std().item() == pytest.approx(0.02, rel=0.1)
    assert by["bias"].role == "bias" and model.bias.eq(0).all()


# --- gains ------------------------------------------------------------------------------------------


def test_selu_gets_gain_one():
    model = nn.Sequential(nn.Linear(1000, 500), nn.SELU(), nn.Linear(500, 10))
    torch.manual_seed(8)
    man = apply_init(model, "kaiming_normal")
    assert model[0].weight.std().item() == pytest.approx(1 / math.sqrt(1000), rel=0.03)
    assert "selu: gain 1" in man.nonlinearity


def test_activation_functions_of_a_transformer_are_found():
    layer = nn.TransformerEncoderLayer(d_model=256, nhead=4, dim_feedforward=512, activation="gelu")
    torch.manual_seed(9)
    man = apply_init(layer, "kaiming_normal")
    assert man.nonlinearity.startswith("gelu (inferred from model.activation = gelu)") and not man.warnings
    assert layer.linear1.weight.std().item() == pytest.approx(gain("gelu") / math.sqrt(256), rel=0.03)


@pytest.mark.parametrize("name", ["gelu", "silu", "elu", "mish"])
def test_second_moment_gains_preserve_the_signal(name):
    """The gain of an activation PyTorch has none for keeps E[y^2] = 1 through Linear + activation."""
    torch.manual_seed(10)
    act = {"gelu": F.gelu, "silu": F.silu, "elu": F.elu, "mish": F.mish}[name]
    z = torch.randn(4096, 1024)
    w = torch.empty(1024, 1024)
    apply_init(nn.ModuleDict({"l": nn.Linear(1, 1)}), "zeros")  # a call in between must not matter
    with torch.no_grad():
        tinit.normal_(w, 0, gain(name) / math.sqrt(1024))
    y = act(z) @ w.T
    assert y.pow(2).mean().item() == pytest.approx(1.0, rel=0.05)


def test_no_activation_found_is_said_once_in_the_manifest():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    man = apply_init(model, "kaiming_normal")
    assert len(man.warnings) == 1 and "no activation found: kaiming_normal used leaky_relu(a=0)" in man.warnings[0]
    assert apply_init(model, "normal(std=0.02)").warnings == []  # no gain needed, nothing to say
    assert "gain 1 (linear)" in apply_init(model, "xavier_normal(gain=auto)").warnings[0]


# --- LSUV -------------------------------------------------------------------------------------------


class SeqModel(nn.Module):
    """Embedding -> LSTM -> attention -> Linear: layers whose forward hooks LSUV cannot all use."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 32)
        self.lstm = nn.LSTM(32, 32, batch_first=True)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.head = nn.Linear(32, 5)

    def forward(self, tokens):
        h, _ = self.lstm(self.emb(tokens))
        a, _ = self.attn(h, h, h)
        return self.head(a.mean(1))


def test_lsuv_calibrates_attention_output_and_declares_the_rest():
    torch.manual_seed(11)
    model = SeqModel()
    man = apply_init(model, "lsuv", data=torch.randint(0, 30, (256, 12)))
    by = {r.name: r for r in man.records}
    assert by["attn.out_proj.weight"].scheme == "lsuv" and by["head.weight"].scheme == "lsuv"
    for name in ("emb.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "attn.in_proj_weight"):
        assert by[name].scheme == "orthogonal" and "not calibrated" in by[name].note, name
    assert "lsuv left 4 weight(s) orthogonal" in man.warnings[0]
    unused = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    unused.add_module("spare", nn.Linear(4, 4))  # registered, never called by forward
    unused.forward = lambda x: unused[1](unused[0](x))
    man = apply_init(unused, "lsuv", data=torch.randn(64, 4))
    assert "not calibrated: no output seen" in next(r for r in man.records if r.name == "spare.weight").note


def _conv_bn_dropout():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Dropout(0.5),
                         nn.Flatten(), nn.Linear(16 * 64, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10))


def _train_step_variances(model, x):
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.var().item()))
             for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    model.train()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_lsuv_calibrates_in_training_mode_by_default():
    x = torch.tensor(load_digits().data[:512], dtype=torch.float32).view(-1, 1, 8, 8)
    x = (x - x.mean()) / x.std()
    torch.manual_seed(12)
    model = _conv_bn_dropout()
    man = apply_init(model, "lsuv", data=x)
    assert model[1].running_mean.eq(0).all() and model[1].running_var.eq(1).all()  # statistics restored
    assert all(r.params["mode"] == "train" for r in man.records if r.scheme == "lsuv")
    for name, v in _train_step_variances(model, x).items():
        assert v == pytest.approx(1.0, abs=0.2), name
    torch.manual_seed(12)
    evaluated = _conv_bn_dropout()
    apply_init(evaluated, "lsuv(mode=eval)", data=x)
    assert max(_train_step_variances(evaluated, x).values()) > 1.5  # what the first training step sees


# --- meta tensors -----------------------------------------------------------------------------------


def test_meta_device_model_is_one_clear_error():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(InitbenchError, match=r"parameter '0.weight' is on the meta device .*to_empty"):
        apply_init(model, "kaiming_normal")


# --- layers a model may subclass, cells, tied and frozen parts ---------------------------------------


class ScaledLinear(nn.Linear):  # a known layer with a parameter of its own
    def __init__(self, a, b):
        super().__init__(a, b)
        self.scale = nn.Parameter(torch.full((b,), 7.0))


def test_extra_parameters_of_a_known_layer_follow_the_custom_rules():
    model = nn.Sequential(ScaledLinear(20, 30), nn.ReLU())
    man = apply_init(model, "kaiming_normal")
    by = {r.name: r for r in man.records}
    assert by["0.weight"].scheme == "kaiming_normal" and by["0.scale"].scheme == "kept"
    assert model[0].scale.eq(7).all()


@pytest.mark.parametrize(("cell", "gates"), [(nn.LSTMCell, 4), (nn.GRUCell, 3)])
def test_recurrent_cells_are_filled_per_gate_with_their_own_gain(cell, gates):
    model = nn.Sequential(nn.Linear(8, 300), nn.ReLU())
    model.add_module("cell", cell(300, 200))
    torch.manual_seed(13)
    man = apply_init(model, "orthogonal")
    for gate in model.cell.weight_hh.chunk(gates):
        assert torch.allclose(_singular_values(gate), torch.ones(1, dtype=torch.float64), atol=1e-5)
    assert len(next(r for r in man.records if r.name == "cell.weight_ih").blocks) == gates
    apply_init(model, "kaiming_normal")  # the cell's tanh, not the model's ReLU
    assert model.cell.weight_ih.std().item() == pytest.approx((5 / 3) / math.sqrt(300), rel=0.03)


def test_lsuv_calibrates_a_tied_weight_once():
    class TiedLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc, self.head = nn.Embedding(40, 16), nn.Linear(16, 16), nn.Linear(16, 40, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, tokens):
            return self.head(torch.tanh(self.fc(self.emb(tokens))))

    torch.manual_seed(14)
    model = TiedLM()
    man = apply_init(model, "lsuv", data=torch.randint(0, 40, (512,)))
    by = {r.name: r for r in man.records}
    assert "head.weight" not in by and by["emb.weight"].scheme == "lsuv" and by["fc.weight"].scheme == "lsuv"
    assert model.head.weight is model.emb.weight


def test_lsuv_leaves_frozen_parts_frozen_and_refuses_what_it_cannot_run():
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.1), nn.Linear(8, 2))
    model.train()
    model[1].eval()  # the user froze the dropout
    apply_init(model, "lsuv", data=torch.randn(64, 8))
    assert model.training and not model[1].training
    with pytest.raises(InitbenchError, match=r"forward pass failed on a batch of shape \(64, 5\)"):
        apply_init(model, "lsuv", data=torch.randn(64, 5))
    with pytest.raises(InitbenchError, match="the model has no parameters"):
        apply_init(nn.ReLU(), "lsuv", data=torch.randn(4, 4))


def test_the_default_fallback_is_pytorch_default_whatever_the_activation():
    model = nn.Sequential(nn.Conv2d(16, 32, 3), nn.ReLU())
    torch.manual_seed(15)
    man = apply_init(model, "sparse")
    assert model[0].weight.std().item() == pytest.approx(1 / math.sqrt(3 * 144), rel=0.05)  # U(+-1/sqrt(fan_in))
    assert man.records[0].params == {"a": math.sqrt(5), "mode": "fan_in", "nonlinearity": "leaky_relu"}


def test_a_plugin_that_raises_fails_the_run_and_one_that_declines_gets_the_fallback(tmp_path, monkeypatch):
    from initbench.inits.walk import PluginFailed

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 4))
    with pytest.raises(PluginFailed, match=r"init 'torch.nn.init:eye_' failed on parameter '0.weight' \(4, 3, 3, 3\): "
                                           r"ValueError: Only tensors with 2 dimensions are supported"):
        apply_init(model, "torch.nn.init:eye_")
    (tmp_path / "polite.py").write_text(
        "from initbench.inits import NotApplicable\nfrom torch.nn import init\n\n"
        "def eye_or_decline(t):\n    if t.dim() != 2:\n        raise NotApplicable('matrices only')\n"
        "    init.eye_(t)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    man = apply_init(model, "polite:eye_or_decline")
    by = {r.name: r for r in man.records}
    assert by["3.weight"].scheme == "polite:eye_or_decline" and torch.equal(model[3].weight, torch.eye(4))
    assert by["0.weight"].scheme == "kaiming_uniform" and "fallback for polite:eye_or_decline: matrices only" in (
        by["0.weight"].note)


def test_the_mlp_declares_gelu_and_gets_its_gain():
    from initbench.models import build_model

    mlp = build_model("mlp(activation=gelu, hidden=[400])", (1, 20, 20), 10)
    torch.manual_seed(16)
    apply_init(mlp, "kaiming_normal")
    assert mlp.layers.fc1.weight.std().item() == pytest.approx(gain("gelu") / 20, rel=0.03)
