"""The `model.named_modules()` walk: every parameter once, by the role its module gives it, into the manifest.

Weights of known layers (and >=2-D parameters of custom modules) get the scheme, block by block
where a weight packs several matrices; biases follow the bias policy; norm layers get weight 1 /
bias 0; per-parameter rules override all of these; everything else is kept, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from initbench.errors import InitbenchError, raise_stop
from initbench.inits import gains
from initbench.inits.manifest import Manifest, ParamRecord
from initbench.inits.registry import InitSpec, NotApplicable, Sampled, Strategy, get_strategy, parse_init
from initbench.inits.roles import (
    Param,
    declared_fans,
    iter_params,
    layer_fans,
    rnn_nonlinearity,
    split_blocks,
)
from initbench.inits.rules import Rule, first_match, resolve_fallback, resolve_rules, unmatched


class PluginFailed(RuntimeError):
    """A plug-in init raised while filling a tensor: a failure of the run, recorded with this message."""


@dataclass
class Resolved:
    """An init spec checked in full: strategy, parameters, fallback and rules (before any tensor changes)."""

    spec: InitSpec
    strategy: Strategy
    params: dict[str, Any]
    fallback: tuple[Strategy, dict[str, Any]]
    rules: list[Rule]


def resolve_init(spec: str | Mapping[str, Any] | InitSpec, rules: Mapping[str, Any] | None = None) -> Resolved:
    """Parse and check an init spec; `rules` are added after the spec's own (a pattern in both takes its
    spec from `rules`, its place from the spec's)."""
    spec = parse_init(spec)
    if rules:
        merged = {**(spec.params.get("rules") or {}), **rules}
        spec = parse_init(str(InitSpec(spec.name, {**spec.params, "rules": merged})))  # canonical rule specs
    strategy = get_strategy(spec.name)
    params = strategy.resolve(spec.params)
    fallback = resolve_fallback(params["fallback"], f"init '{spec.name}'")
    return Resolved(spec, strategy, params, fallback, resolve_rules(params["rules"], spec.name, params))


def canonical_init(spec: str | Mapping[str, Any] | InitSpec, _nested: bool = False) -> str:
    """The one spelling of an init: parameters in declaration order, numbers normalised, defaults left out,
    fallbacks and rules canonical too. `normal(std=1.0)`, `normal(std=1)` and `normal` are all `normal`."""
    full = resolve_init(spec)  # every value checked, errors with their context (fallback of ..., rule ...)
    spec, strategy, resolved = full.spec, full.strategy, full.params
    kept: dict[str, Any] = {}
    for key, default in strategy.defaults.items():
        value = resolved[key]
        if key == "fallback":  # a fallback's own fallback is compared as written (it is the default's)
            value, default = ((str(parse_init(value)), str(parse_init(default))) if _nested
                              else (canonical_init(value, True), canonical_init(default, True)))
        elif key == "rules":
            value = {p: r if r == "keep" else canonical_init(r) for p, r in (value or {}).items()} or None
        else:
            value, default = strategy.normalise(key, value), strategy.normalise(key, default)
            if key == "bias" and value == 0.0:
                value = "zeros"
        if value != default:
            kept[key] = value
    return str(InitSpec(spec.name, kept))


@dataclass
class Walk:
    """State of one `apply_init` call: resolved parameters, the inferred nonlinearity, the manifest."""

    strategy: Strategy
    params: dict[str, Any]
    nonlinearity: str | None
    negative_slope: float
    manifest: Manifest
    fallback: tuple[Strategy, dict[str, Any]]
    rules: list[Rule] = field(default_factory=list)
    tensors: dict[str, Tensor] = field(default_factory=dict)
    ruled: set[str] = field(default_factory=set)  # parameters a rule decided

    def rule_for(self, name: str) -> Rule | None:
        return first_match(self.rules, name)

    def record(self, p: Param, scheme: str, params: Mapping[str, Any] | None = None, note: str = "",
               fans: tuple[Any, Any] = (None, None), blocks: tuple[str, ...] = (),
               distribution: dict[str, Any] | None = None) -> None:
        rec = ParamRecord(p.name, type(p.module).__name__, p.role, list(p.tensor.shape), *fans, scheme,
                          dict(params or {}), note, blocks=list(blocks), distribution=distribution)
        records = self.manifest.records
        at = next((i for i, r in enumerate(records) if r.name == p.name), None) if p.name in self.tensors else None
        if at is None:
            records.append(rec)
        else:  # a second pass over the same parameter (a rule after pytorch_default, LSUV's rescale)
            records[at] = rec
        self.tensors[p.name] = p.tensor

    def run(self, model: nn.Module, strategy: Strategy | None = None) -> None:
        """The walk proper: every parameter of `model` once, by rule or by role."""
        for p in iter_params(model):
            self.apply(p, strategy)

    def apply(self, p: Param, strategy: Strategy | None = None) -> None:
        rule = self.rule_for(p.name)
        if rule is not None:
            self.ruled.add(p.name)
            if rule.strategy is None:
                self.record(p, "kept", note=f"rule '{rule.pattern}': keep")
            else:
                self.fill_weight(p, rule.strategy, rule.params, rule)
        elif p.role == "norm":
            self.apply_norm(p)
        elif p.role == "bias":
            self.apply_bias(p)
        elif p.role == "attn_bias_kv":  # PyTorch's own default for them: xavier_normal_ on [1, 1, embed_dim]
            drawn = get_strategy("xavier_normal").fn(p.tensor)
            self.record(p, "xavier_normal", note="MultiheadAttention's bias_k/bias_v: PyTorch's default "
                        "(xavier_normal_), whatever the scheme", distribution=drawn.as_dict())
        elif p.role == "keep":
            self.record(p, "kept", note=p.note)
        else:
            self.fill_weight(p, strategy or self.strategy, self.params)

    def fill_weight(self, p: Param, strategy: Strategy, params: Mapping[str, Any], rule: Rule | None = None) -> None:
        """Fill a weight (or any tensor a rule names), block by block where it packs several matrices."""
        pieces = split_blocks(p, params["blocks"] == "split")
        notes = [f"rule '{rule.pattern}'" if rule else "", p.note]
        # plug-in functions compute their own fans, as torch.nn.init does: they get (and the manifest shows) PyTorch's
        signal = params["fans"] == "signal" and strategy.source == "builtin"
        fallback = rule.fallback if rule else self.fallback
        where = f"parameter '{p.name}' {tuple(p.tensor.shape)}" + (f" (rule '{rule.pattern}')" if rule else "")
        for _, block in pieces:
            fan_in = fan_out = None
            fan_note = ""
            if block.dim() >= 2:
                fan_in, fan_out, fan_note = layer_fans(p.module, block, signal)
            with declared_fans(block, fan_in, fan_out):
                scheme, used, why, dist = self.fill(strategy, params, block, p.module, fallback, where)
        notes += [fan_note, why]
        if len(pieces) > 1:
            shape = "x".join(map(str, pieces[0][1].shape))
            notes.append(f"filled per block: {len(pieces)} blocks ({', '.join(p.blocks)}) of {shape}")
        elif len(p.blocks) > 1:
            notes.append(f"{len(p.blocks)} packed blocks ({', '.join(p.blocks)}) filled as one matrix")
        padding = getattr(p.module, "padding_idx", None)
        if isinstance(p.module, nn.Embedding | nn.EmbeddingBag) and p.local == "weight" and padding is not None:
            p.tensor[padding].zero_()
            notes.append(f"padding_idx row {padding} kept at zero")
        self.record(p, scheme, used, "; ".join(n for n in notes if n), (fan_in, fan_out),
                    p.blocks if len(pieces) > 1 else (), dist)

    def fill(self, strategy: Strategy, params: Mapping[str, Any], t: Tensor, module: nn.Module,
             fallback: tuple[Strategy, dict[str, Any]],
             where: str) -> tuple[str, dict[str, Any], str, dict[str, Any] | None]:
        """Fill one tensor; falls back (and says so) where the scheme does not fit."""
        resolved, gain_note = self.tensor_params(strategy, params, module)
        try:
            out = strategy.fn(t, **resolved)  # torch.nn.init functions return the tensor: not a note
        except NotApplicable as exc:
            why = str(exc)
        except Exception as exc:  # a plug-in that raised: the run fails, with the error (never a silent stand-in)
            raise_stop(exc)
            if strategy.source == "builtin":
                raise
            why = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise PluginFailed(f"init '{strategy.name}' failed on {where}: {why} (a function raises "
                               f"initbench.inits.NotApplicable to ask for the fallback)") from exc
        else:
            if isinstance(out, Sampled):
                note = "; ".join(n for n in (gain_note, out.note) if n)
                return strategy.name, resolved, note, out.as_dict()
            note = "; ".join(n for n in (gain_note, out if isinstance(out, str) else "") if n)
            return strategy.name, resolved, note, None
        fb_strategy, fb_params = fallback
        if strategy is fb_strategy:
            raise InitbenchError(f"{where}: neither the scheme nor its fallback '{strategy.name}' fits: {why}")
        name, used, _, dist = self.fill(fb_strategy, fb_params, t, module, fallback, where)
        return name, used, f"fallback for {strategy.name}: {why}", dist

    def tensor_params(self, strategy: Strategy, params: Mapping[str, Any], module: nn.Module) -> tuple[dict, str]:
        """The tensor function's own parameters with `auto` nonlinearities and gains resolved for `module`."""
        out = {k: v for k, v in params.items() if k in strategy.params}
        nonlinearity, slope, note = self.nonlinearity, self.negative_slope, ""
        auto = "auto" in (out.get("nonlinearity"), out.get("gain"))
        if auto and rnn_nonlinearity(module):  # the cell's own activation
            nonlinearity, slope = rnn_nonlinearity(module), 0.0
            note = f"gain of the {type(module).__name__} cell's {nonlinearity}"
        if out.get("nonlinearity") == "auto":
            if nonlinearity is None:
                self.manifest.warn(f"{self.unknown_why()}: {strategy.name} used leaky_relu(a=0), torch.nn.init's "
                                   f"default (gain sqrt(2)); set model.nonlinearity or pass nonlinearity=...")
            out["nonlinearity"] = nonlinearity or "leaky_relu"
            if nonlinearity == "leaky_relu" and out.get("a") == 0.0:
                out["a"] = slope
        if out.get("gain") == "auto":
            if nonlinearity is None:
                self.manifest.warn(f"{self.unknown_why()}: {strategy.name}(gain=auto) used gain 1 (linear); "
                                   f"set model.nonlinearity or pass gain=...")
            out["gain"] = gains.gain(nonlinearity or "linear", slope)
        elif isinstance(out.get("gain"), str):
            out["gain"] = gains.gain(out["gain"])
        return out, note

    def unknown_why(self) -> str:
        """Why no nonlinearity is known: no activation found, or mixed activations."""
        return self.manifest.nonlinearity.removeprefix("unknown (").removesuffix(")")

    def apply_bias(self, p: Param) -> None:
        policy = self.params["bias"]
        if policy == "keep":
            self.record(p, "kept", note="bias policy: keep")
        else:
            value = 0.0 if policy == "zeros" else float(policy)
            p.tensor.fill_(value)
            self.record(p, "constant", {"value": value}, "bias policy",
                        distribution={"family": "constant", "value": value})

    def apply_norm(self, p: Param) -> None:
        if self.params["norm"] == "keep":
            self.record(p, "kept", note="norm policy: keep")
        else:
            value = 0.0 if p.local == "bias" else 1.0
            p.tensor.fill_(value)
            self.record(p, "constant", {"value": value}, "norm layer", distribution={"family": "constant",
                                                                                     "value": value})


def apply_init(model: nn.Module, spec: str | Mapping[str, Any] | InitSpec, data: Tensor | None = None,
               rules: Mapping[str, Any] | None = None) -> Manifest:
    """Initialise every parameter of `model` with `spec` and return what was done to each.

    `spec` is a name (`"orthogonal"`), a spec string (`"normal(std=0.02)"`), a YAML-style mapping,
    an `InitSpec`, or `"package.module:function"`. `rules` maps fnmatch patterns on parameter names
    to specs (first match wins). Data-dependent strategies (lsuv) need `data`, a batch of model
    inputs. Randomness comes from torch's global RNG only.
    """
    resolved = resolve_init(spec, rules)
    meta = [n for n, p in model.named_parameters() if p.is_meta]
    if meta:
        raise InitbenchError(f"parameter '{meta[0]}' is on the meta device (a shape without storage): "
                             f"materialise the model first, e.g. model.to_empty(device='cpu')")
    nl, slope, nl_note = gains.infer_nonlinearity(model)
    if nl and gains.gain_note(nl):
        nl_note += f"; {gains.gain_note(nl)}"
    walk = Walk(resolved.strategy, resolved.params, nl, slope, Manifest(str(resolved.spec), nl_note),
                resolved.fallback, resolved.rules)
    for message in unmatched(resolved.rules, [p.name for p in iter_params(model)]):
        walk.manifest.warn(message)
    with torch.no_grad():
        if resolved.strategy.whole_model:
            params = {k: v for k, v in resolved.params.items() if k in resolved.strategy.params}
            resolved.strategy.fn(model, data, walk, **params)
        else:
            walk.run(model)
        for rec in walk.manifest.records:
            t = walk.tensors[rec.name].detach().float()
            rec.mean = t.mean().item()
            rec.std = t.std().item() if t.numel() > 1 else None
    return walk.manifest


def display_init(init: Any) -> str:
    """An init as the report names it: its canonical spelling where it still resolves, else as written."""
    try:
        return canonical_init(init)
    except InitbenchError:
        try:
            return str(parse_init(init))
        except InitbenchError:
            return str(init)
