"""Claims a sweep file declares before its runs (pre-registration): a `claims:` block of statements about schemes,
checked when the file is loaded and judged by the report (report.claims) by the rules of the verdicts.

    claims:
      - {id: he-beats-xavier, better: kaiming_normal, than: xavier_normal, where: {depth: 30}}
      - {id: xavier-stalls, fails: xavier_normal, than: kaiming_normal, where: {depth: 30}}
      - {id: same-when-shallow, equivalent: [kaiming_normal, xavier_normal], where: {depth: 2}, margin: 1.0}
      - {id: he-sooner, better: kaiming_normal, than: xavier_normal, metric: auc_val_acc, where: {depth: 22}}
      - {id: xavier-first, fails_sooner: xavier_normal, than: kaiming_normal, along: depth}

`where` picks one problem of the study by its dataset, model, model parameters and training settings (any of them:
`{depth: 30}`, `{dataset: digits, activation: tanh}`); it may be left out when the study has one problem. A
trend (`fails_sooner`) names its axis with `along` and `where` picks the rest. Torch-free: the names are compared as
written (`normal(std=0.02)` is `normal(std=0.02)`)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from initbench.errors import InitbenchError
from initbench.plan.axes import spec_value
from initbench.syntax import format_call, format_value, parse_call

# The claim kinds and what each says (the first word of the claim is its kind's key).
KINDS = {
    "better": "better: A, than: B: A scores higher than B, seed by seed (paired test, Holm over the claims)",
    "worse": "worse: A, than: B: A scores lower than B, seed by seed (paired test, Holm over the claims)",
    "equivalent": "equivalent: [A, B], margin: M: the 95% CI of the mean paired difference lies inside +-M points",
    "not_worse": "not_worse: A, than: B, margin: M: A matches or beats B: the CI's lower end lies above -M points",
    "fails": "fails: A[, than: B]: A's runs fail (diverge or collapse) more often than B's (Fisher's exact test), "
             "or, alone, in more than half its runs (exact binomial test)",
    "trains": "trains: A[, than: B]: A's runs fail less often than B's, or, alone, train in more than half its runs",
    "fails_sooner": "fails_sooner: A, than: B, along: AXIS: A mostly fails at an earlier value of the axis than B "
                    "(Fisher's exact test at that value)",
}
PAIRED = ("better", "worse", "equivalent", "not_worse")  # on the paired differences of the ranking metric
COUNTED = ("fails", "trains", "fails_sooner")  # on the failure counts
NEEDS_THAN = ("better", "worse", "not_worse", "fails_sooner")
KEYS = ("id", *KINDS, "than", "where", "margin", "metric", "along", "note")
METRICS = ("val_acc_final", "best_val_acc", "auc_val_acc", "test_acc")  # the report's ranking metrics
MARGIN_POINTS = 0.5  # the default margin of equivalent / not_worse, as the verdicts'
_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,63}")


@dataclass(frozen=True)
class Claim:
    """One declared claim: its id, kind, schemes (A, or A and B), where (key -> value), margin in points,
    metric (None: the report's), the axis a trend runs along, and the mapping as written."""

    id: str
    kind: str
    schemes: tuple[str, ...]
    where: tuple[tuple[str, Any], ...] = ()
    margin: float = MARGIN_POINTS
    metric: str | None = None
    along: str | None = None
    note: str = ""
    source: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def words(self) -> str:
        """The claim in words: `kaiming_normal better than xavier_normal (auc_val_acc) where depth=30`."""
        a, b = self.schemes[0], self.schemes[1] if len(self.schemes) > 1 else None
        if self.kind == "equivalent":
            text = f"{a} equivalent to {b} within ±{self.margin:g} accuracy points"
        elif self.kind == "not_worse":
            text = f"{a} not worse than {b} by more than {self.margin:g} accuracy points"
        elif self.kind == "fails_sooner":
            text = f"{a} fails at a smaller {self.along} than {b}"
        elif self.kind in ("fails", "trains"):
            text = f"{a} {self.kind}" + (f" more often than {b}" if b else " (in most runs)")
        else:
            text = f"{a} {self.kind} than {b}"
        if self.metric:
            text += f" on {self.metric}"
        if self.where:
            text += " where " + ", ".join(f"{k}={format_value(v)}" for k, v in self.where)
        return text


def cell_attributes(dataset: str, model: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a claim's `where` can name of a problem: its dataset and model by name, the model's parameters, and the
    training settings."""
    model_name, params = parse_call(model, "model")
    return {**settings, **params, "dataset": parse_call(dataset, "dataset")[0], "model": model_name}


def _spelling(spec: Any) -> str:
    name, params = parse_call(spec, "init")
    return format_call(name, params)


def parse_claims(value: Any, where_text: str, inits: list[Any], cells: list[dict[str, Any]],
                 metrics: tuple[str, ...]) -> tuple[Claim, ...]:
    """The `claims:` block, checked against the study: each scheme one of `inits`, each `where` picking one of
    `cells` (the problems' attributes; a trend: one per value of its axis), margins and metrics valid, ids unique.
    Every bad claim is refused together in one line."""
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        raise InitbenchError(f"{where_text}: 'claims' must be a non-empty list of claims, e.g. - {{id: he-wins, "
                             "better: kaiming_normal, than: xavier_normal}")
    spellings = {}
    for init in inits:
        try:
            spellings[_spelling(init)] = init
        except InitbenchError:
            continue
    claims, bad, ids = [], [], set()
    for i, item in enumerate(value, 1):
        try:
            claim = _claim(item, i, spellings, cells, metrics)
        except InitbenchError as exc:
            bad.append(str(exc))
            continue
        if claim.id in ids:
            bad.append(f"claim {claim.id}: the id is used twice")
        ids.add(claim.id)
        claims.append(claim)
    if len(bad) == 1:
        raise InitbenchError(f"{where_text}: {bad[0]}")
    if bad:
        raise InitbenchError(f"{where_text}: {len(bad)} bad claims: " + "; ".join(f"({i}) {m}"
                                                                                for i, m in enumerate(bad, 1)))
    return tuple(claims)


def _claim(item: Any, index: int, spellings: dict[str, Any], cells: list[dict[str, Any]],
           metrics: tuple[str, ...]) -> Claim:
    if not isinstance(item, Mapping):
        raise InitbenchError(f"claim {index} must be a mapping like {{id: ..., better: A, than: B}}, got {item!r}")
    name = item.get("id")
    label = f"claim {name}" if isinstance(name, str) else f"claim {index}"
    unknown = [k for k in item if k not in KEYS]
    if unknown:
        close = [m for k in unknown for m in difflib.get_close_matches(str(k), KEYS, n=1, cutoff=0.6)]
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise InitbenchError(f"{label}: unknown key {', '.join(map(str, unknown))}; {hint}valid: {', '.join(KEYS)}")
    if not isinstance(name, str) or not _ID.fullmatch(name):
        raise InitbenchError(f"{label}: needs an id: a short name of letters, digits, '-', '_' or '.', got {name!r}")
    kinds = [k for k in KINDS if k in item]
    if len(kinds) != 1:
        raise InitbenchError(f"{label}: say one of {', '.join(KINDS)} (got {', '.join(kinds) or 'none'})")
    kind = kinds[0]
    named = item[kind]
    if kind == "equivalent":
        if not isinstance(named, list) or len(named) != 2 or "than" in item:
            raise InitbenchError(f"{label}: equivalent takes a list of two schemes, e.g. equivalent: [A, B]")
        schemes = list(named)
    else:
        schemes = [named] + ([item["than"]] if item.get("than") is not None else [])
        if kind in NEEDS_THAN and len(schemes) < 2:
            raise InitbenchError(f"{label}: {kind} needs than: (the scheme it is compared with)")
    found = []
    for scheme in schemes:
        try:
            spelled = _spelling(scheme)
        except InitbenchError as exc:
            raise InitbenchError(f"{label}: {exc}") from None
        if spelled not in spellings:
            raise InitbenchError(f"{label}: {spelled} is not one of the study's inits; valid: "
                                 f"{', '.join(spellings)}")
        found.append(spelled)
    if len(found) == 2 and found[0] == found[1]:
        raise InitbenchError(f"{label}: compares {found[0]} with itself")
    margin = item.get("margin", MARGIN_POINTS)
    if "margin" in item and kind not in ("equivalent", "not_worse"):
        raise InitbenchError(f"{label}: margin applies to equivalent and not_worse claims only")
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 < margin < 100:
        raise InitbenchError(f"{label}: margin is in accuracy points, above 0 and below 100, got {margin!r}")
    metric = item.get("metric")
    if metric is not None and (kind not in PAIRED or metric not in metrics):
        raise InitbenchError(f"{label}: metric {metric!r}: " + (f"valid: {', '.join(metrics)}" if kind in PAIRED
                                                               else "failure claims count failed runs, no metric"))
    along = item.get("along")
    if along is not None and not isinstance(along, str):
        raise InitbenchError(f"{label}: along names one key of the problems (e.g. along: depth), got {along!r}")
    if (along is None) != (kind != "fails_sooner"):
        raise InitbenchError(f"{label}: along: (the axis) goes with fails_sooner claims, and they need it")
    where = item.get("where") or {}
    if not isinstance(where, Mapping):
        raise InitbenchError(f"{label}: where must map keys to values, e.g. where: {{depth: 30}}")
    note = item.get("note", "")
    source = json.loads(json.dumps(dict(item), default=str))  # as sweep.json stores it (a YAML date as its text)
    claim = Claim(name, kind, tuple(found), tuple(where.items()), float(margin), metric, along,
                  str(note) if note is not None else "", source)
    select(claim, cells, label)
    return claim


def select(claim: Claim, cells: list[dict[str, Any]], label: str | None = None) -> list[int]:
    """The indices of the `cells` (problems' attributes) the claim is about: one, or for a trend one per value of its
    axis (in the order the cells come). InitbenchError when its `where` or axis names nothing, or too much."""
    label = label or f"claim {claim.id}"
    keys = sorted({k for c in cells for k in c})
    for key, value in claim.where:
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise InitbenchError(f"{label}: where names {key!r}, which no problem has{hint}; valid: "
                                 f"{', '.join(keys)}")
        seen = [c[key] for c in cells if key in c]
        if not any(_same(value, s) for s in seen):
            values = ", ".join(dict.fromkeys(format_value(s) for s in seen))
            raise InitbenchError(f"{label}: where {key}={format_value(value)} matches no problem; {key} is one of "
                                 f"{values}")
    picked = [i for i, c in enumerate(cells) if all(k in c and _same(v, c[k]) for k, v in claim.where)]
    if not picked:
        raise InitbenchError(f"{label}: no problem has all of where's values together")
    if claim.along is None:
        if len(picked) > 1:
            differ = sorted(k for k in keys if len({format_value(cells[i].get(k)) for i in picked}) > 1)
            raise InitbenchError(f"{label}: where picks {len(picked)} problems; tell them apart with "
                                 f"{' or '.join(differ) or 'where'}")
        return picked
    if not all(claim.along in cells[i] for i in picked):
        problem = "no problem" if not any(claim.along in cells[i] for i in picked) else "not every problem"
        raise InitbenchError(f"{label}: along {claim.along!r}: {problem} that where picks has it (narrow where to "
                             f"the problems along it); keys: {', '.join(keys)}")
    values = [format_value(cells[i].get(claim.along)) for i in picked]
    if len(set(values)) < 2 or len(set(values)) != len(values):
        raise InitbenchError(f"{label}: along {claim.along} needs one problem per value, at two values or more "
                             f"(where picks {len(picked)} problems with {claim.along} = {', '.join(values)})")
    numbers = [cells[i][claim.along] for i in picked]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):  # a trend runs upwards
        picked = [i for _, i in sorted(zip(numbers, picked, strict=True))]
    return picked


def _same(a: Any, b: Any) -> bool:
    """A where value against a problem's: equal as values, as a spec reads the word (`norm: none` is None), or as
    their spelling."""
    if isinstance(a, str):
        a = spec_value(a)
    return a == b or format_value(a) == format_value(b)
