"""Every built-in scheme draws from the distribution its manifest declares, checked as PyTorch's own
test/nn/test_init.py does: a Kolmogorov-Smirnov test of the samples against that distribution."""

import math

import pytest
import torch
from scipy import stats
from torch import nn

from initbench import apply_init, list_inits


def _layers() -> dict[str, nn.Module]:
    return {
        "linear": nn.Linear(300, 400),
        "conv": nn.Conv2d(32, 48, 3),
        "deconv": nn.ConvTranspose2d(48, 32, 4, stride=2),
        "lstm": nn.LSTM(48, 64),
        "attention": nn.MultiheadAttention(64, 4),
    }


TENSOR_SCHEMES = sorted(s.name for s in list_inits() if not s.whole_model)
VARIANTS = {
    "normal(mean=0.3, std=0.05)", "uniform(a=-0.2, b=0.6)", "trunc_normal(std=0.3, a=-0.4, b=0.5)",
    "kaiming_uniform(mode=fan_out, nonlinearity=tanh)", "xavier_normal(gain=relu)",
    "variance_scaling(scale=2, mode=fan_avg, distribution=normal)", "variance_scaling(distribution=uniform)",
    "sparse(sparsity=0.3, std=0.05)",
}


def _cdf(dist: dict):
    family = dist["family"]
    if family in ("normal", "sparse_normal"):
        return stats.norm(dist["mean"], dist["std"]).cdf
    if family == "uniform":
        return stats.uniform(dist["low"], dist["high"] - dist["low"]).cdf
    if family == "trunc_normal":
        mean, std = dist["mean"], dist["std"]
        return stats.truncnorm((dist["low"] - mean) / std, (dist["high"] - mean) / std, loc=mean, scale=std).cdf
    return None


def test_the_list_of_schemes_is_complete():
    assert set(TENSOR_SCHEMES) >= {"uniform", "normal", "trunc_normal", "constant", "zeros", "ones", "eye", "dirac",
                                   "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
                                   "orthogonal", "sparse", "variance_scaling", "lecun_normal", "lecun_uniform"}


@pytest.mark.parametrize("layer", list(_layers()))
@pytest.mark.parametrize("spec", [s for s in TENSOR_SCHEMES if s != "constant"] + ["constant(value=0.3)",
                                                                                   *sorted(VARIANTS)])
def test_samples_follow_the_declared_distribution(spec, layer):
    model = _layers()[layer]
    torch.manual_seed(0)
    man = apply_init(model, spec)
    tensors = dict(model.named_parameters())
    checked = 0
    for rec in man.records:
        dist = rec.distribution
        if rec.role != "weight" or dist is None or rec.name == "bias_k":
            continue
        values = tensors[rec.name].detach().double().flatten()
        if dist["family"] == "constant":
            assert tensors[rec.name].eq(dist["value"]).all(), rec.name
        elif dist["family"] == "sparse_normal":
            zeros = tensors[rec.name].eq(0).sum(0)
            assert zeros.min().item() >= dist["zeros_per_column"], rec.name
            values = values[values != 0]
        if dist["family"] in ("normal", "uniform", "trunc_normal", "sparse_normal"):
            result = stats.kstest(values.numpy(), _cdf(dist))
            assert result.pvalue > 1e-4, f"{spec} on {rec.name}: KS p = {result.pvalue:.2g} against {dist}"
        if dist["family"] in ("orthogonal", "identity"):
            continue
        checked += 1
    families = {r.distribution["family"] for r in man.records if r.role == "weight" and r.distribution}
    assert checked or families <= {"orthogonal", "identity"} or "fallback" in " ".join(r.note for r in man.records)


def test_ks_catches_a_wrong_declaration():
    """The check can fail: the same samples against a distribution 10% too wide are rejected."""
    model = nn.Linear(300, 400)
    torch.manual_seed(1)
    rec = apply_init(model, "kaiming_normal(nonlinearity=relu)").records[0]
    values = model.weight.detach().double().flatten().numpy()
    assert stats.kstest(values, stats.norm(0, rec.distribution["std"]).cdf).pvalue > 1e-4
    assert rec.distribution["std"] == pytest.approx(math.sqrt(2 / 300))
    assert stats.kstest(values, stats.norm(0, 1.1 * rec.distribution["std"]).cdf).pvalue < 1e-6
