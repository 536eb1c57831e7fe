"""Per-parameter rules: fnmatch patterns on parameter names, first match wins, the rest get the main scheme."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from initbench import InitbenchError, apply_init, parse_init
from initbench.spec import RunSpec

INITBENCH = Path(sys.executable).parent / "initbench"


class Block(nn.Module):  # a ResNet basic block: conv-bn-relu-conv-bn + identity
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ResNetish(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.layer1 = nn.Sequential(Block(8), Block(8))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.layer1(torch.relu(self.stem(x))).mean((2, 3)))


def test_rules_override_by_first_match_and_the_rest_get_the_scheme():
    model = ResNetish()
    torch.manual_seed(0)
    man = apply_init(model, "kaiming_normal", rules={"layer1.*.bn2.weight": "zeros", "fc.*": "zeros",
                                                     "fc.weight": "ones", "stem.bias": "keep"})
    by = {r.name: r for r in man.records}
    for i in (0, 1):
        assert model.layer1[i].bn2.weight.eq(0).all() and model.layer1[i].bn1.weight.eq(1).all()
        assert by[f"layer1.{i}.bn2.weight"].note == "rule 'layer1.*.bn2.weight'"
    assert model.fc.weight.eq(0).all() and model.fc.bias.eq(0).all()  # 'fc.*' came first
    assert by["stem.bias"].scheme == "kept" and by["stem.bias"].note == "rule 'stem.bias': keep"
    assert by["stem.weight"].scheme == "kaiming_normal"
    assert model.layer1[0].conv1.weight.std().item() == pytest.approx(math.sqrt(2 / 72), rel=0.1)
    assert man.init == ("kaiming_normal(rules={'layer1.*.bn2.weight': zeros, 'fc.*': zeros, 'fc.weight': ones, "
                        "'stem.bias': keep})")


def test_gpt2_scaled_residual_projections():
    """GPT-2: N(0, 0.02) everywhere, residual output projections N(0, 0.02/sqrt(2 * n_layer))."""
    n_layer = 4
    model = nn.ModuleDict({f"h{i}": nn.ModuleDict({"c_fc": nn.Linear(256, 1024), "c_proj": nn.Linear(1024, 256)})
                           for i in range(n_layer)})
    std = 0.02 / math.sqrt(2 * n_layer)
    torch.manual_seed(1)
    apply_init(model, {"name": "normal", "std": 0.02, "rules": {"*.c_proj.weight": f"normal(std={std})"}})
    assert model["h0"]["c_proj"].weight.std().item() == pytest.approx(std, rel=0.03)
    assert model["h3"]["c_fc"].weight.std().item() == pytest.approx(0.02, rel=0.03)


def test_rules_with_whole_model_schemes():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
    man = apply_init(model, "lsuv", data=torch.randn(256, 16), rules={"2.weight": "zeros"})
    assert model[2].weight.eq(0).all()
    assert {r.name: r.scheme for r in man.records}["2.weight"] == "zeros"
    assert {r.name: r.scheme for r in man.records}["0.weight"] == "lsuv"
    man = apply_init(model, "pytorch_default", rules={"0.bias": "constant(value=0.5)"})
    assert model[0].bias.eq(0.5).all() and model[2].weight.ne(0).any()
    assert [r.scheme for r in man.records] == ["pytorch_default", "constant", "pytorch_default", "pytorch_default"]


def test_the_documented_recipes():
    import yaml

    page = (Path(__file__).parent.parent / "docs" / "inits.md").read_text()
    block = page.split("Common recipes:\n\n```yaml\n")[1].split("```")[0]
    inits = [parse_init(i) for i in yaml.safe_load(block)["inits"]]
    assert [str(i) for i in inits] == [
        "kaiming_normal", "kaiming_normal(mode=fan_out, rules={'layer*.bn2.weight': zeros})",
        "kaiming_normal(rules={'fc.weight': zeros})",
        "normal(std=0.02, rules={'*.c_proj.weight': 'normal(std=0.0040825)'})"]
    model = ResNetish()
    model.add_module("h0", nn.ModuleDict({"c_proj": nn.Linear(8, 8)}))  # a GPT-2 block's projection
    man = apply_init(model, inits[1])
    assert {r.name for r in man.records if r.note.startswith("rule")} == {"layer1.0.bn2.weight", "layer1.1.bn2.weight"}
    apply_init(model, inits[2])
    assert model.fc.weight.eq(0).all() and model.fc.bias.eq(0).all()
    assert {r.name for r in apply_init(model, inits[3]).records if r.note.startswith("rule")} == {"h0.c_proj.weight"}


def test_rules_are_one_canonical_spelling_and_part_of_the_run_identity():
    from_yaml = parse_init({"name": "kaiming_normal", "rules": {"fc.*": {"name": "normal", "std": 0.01}}})
    from_text = parse_init("kaiming_normal(rules={'fc.*': 'normal( std = 0.01 )'})")
    assert str(from_yaml) == str(from_text) == "kaiming_normal(rules={'fc.*': 'normal(std=0.01)'})"
    plain, ruled = RunSpec(init="kaiming_normal"), RunSpec(init=str(from_text))
    assert plain.run_id != ruled.run_id and ruled.name.startswith("kaiming_normal+rules-seed0-")
    assert RunSpec(init="kaiming_normal(rules={'fc.*': normal(std=0.01)})").run_id == ruled.run_id


@pytest.mark.parametrize(("rules", "message"), [
    ("zeros", "parameter 'rules' of init 'kaiming_normal' must be a mapping"),
    ({"fc.*": "xavier"}, "unknown init 'xavier'"),
    ({"fc.*": "lsuv"}, "rule 'fc.*' of init 'kaiming_normal': 'lsuv' initialises a whole model"),
    ({"fc.*": "normal(sdt=1)"}, "init 'normal' has no parameter 'sdt'"),
])
def test_bad_rules_are_refused_before_any_tensor_changes(rules, message):
    model = nn.Linear(3, 3)
    before = model.weight.clone()
    with pytest.raises(InitbenchError, match=message.replace("(", r"\(").replace("*", r"\*")):
        apply_init(model, {"name": "kaiming_normal", "rules": rules})
    assert torch.equal(model.weight, before)


def test_a_rule_that_matches_nothing_is_a_warning():
    man = apply_init(nn.Sequential(nn.Linear(3, 3)), "kaiming_normal(nonlinearity=relu)", rules={"fc3.*": "zeros"})
    assert man.warnings == ["rule 'fc3.*' matches no parameter of this model (its parameters: 0.weight, 0.bias)"]


def test_init_rule_on_the_command_line(tmp_path):
    out = tmp_path / "runs"
    done = subprocess.run([str(INITBENCH), "run", "--model", "mlp(hidden=[16])", "--dataset", "digits", "--epochs",
                           "1", "--limit-train", "128", "--limit-val", "64", "--limit-test", "64", "--accelerator",
                           "cpu", "--no-progress", "--out", str(out), "--init-rule", "layers.out.*=zeros",
                           "--init-rule", "*.bias=normal(std=0.01)"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "kaiming_normal(rules={'layers.out.*': zeros, '*.bias': 'normal(std=0.01)'})" in done.stdout
    manifest = json.loads(next(out.glob("digits_mlp/kaiming_normal+rules-*/manifest.json")).read_text())
    schemes = {r["name"]: r["scheme"] for r in manifest["records"]}
    assert schemes == {"layers.fc1.weight": "kaiming_normal", "layers.fc1.bias": "normal",
                       "layers.out.weight": "zeros", "layers.out.bias": "zeros"}
    bad = subprocess.run([str(INITBENCH), "run", "--init-rule", "fc3"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "initbench: error: --init-rule must be PATTERN=SPEC, e.g. 'classifier.fc3.*=zeros', got 'fc3'")


def test_pytorch_default_with_a_keep_rule_keeps_the_value():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.fill_(7.0)
    man = apply_init(model, "pytorch_default", rules={"0.weight": "keep"})
    assert model[0].weight.eq(7).all() and model[1].weight.ne(7).all()
    assert man.records[0].note == "rule '0.weight': keep"


def test_a_rule_has_its_own_fallback_and_inherits_fans_and_blocks():
    model = nn.Sequential(nn.ConvTranspose2d(32, 16, 3), nn.ReLU(), nn.Conv2d(16, 4, 3))
    man = apply_init(model, "kaiming_normal(fans=torch)", rules={"0.weight": "kaiming_normal", "2.weight":
                                                                 "sparse(fallback=zeros)"})
    by = {r.name: r for r in man.records}
    assert by["0.weight"].fan_in == 16 * 9  # PyTorch's convention, from the main spec
    assert by["2.weight"].scheme == "zeros" and model[2].weight.eq(0).all()
    with pytest.raises(InitbenchError, match=r"parameter '0.bias' \(16,\) \(rule '0.\*'\): neither the scheme nor "
                                             r"its fallback 'kaiming_uniform' fits"):
        apply_init(model, "kaiming_normal", rules={"0.*": "xavier_uniform"})
