"""RunSpec: everything that defines one run, checked before any work, with one canonical identity."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from initbench.errors import InitbenchError, unknown_name
from initbench.syntax import format_call, format_value, parse_call

# This module stays light (no torch, no Lightning at import): the CLI builds its help from RunSpec at once.
LOGGERS = ("csv", "wandb")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "cosine")
LOCKSTEP_MODES = ("vmap", "loop")  # how a lockstep group computes its members (not part of a run's identity)
# The precisions Lightning's Trainer accepts (Lightning 2.6's list; whether this machine can run one is the trainer's
# check, made before a run starts).
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
              "32-true", "64-true")
DEFAULT_DATASET = {"simplecnn": "cifar10", "mlp": "mnist"}  # when --dataset is not given
# `initbench run`'s learning rate when --lr is not given, per (built-in model, dataset): the lrs of the tuning grid
# ranked best first by the tool's own tuning of the default init with run's other defaults (the studies in
# experiments/defaults/, records in results/defaults/; a test keeps the two equal). The first is the default; a run
# that collapses or diverges suggests the next smaller one. MNIST and KMNIST (28x28, 60,000 images, as Fashion-MNIST)
# take Fashion-MNIST's. CIFAR is not tuned here (no files offline): its rows are Fashion-MNIST's, the MLP's started
# one grid step lower for an input four times larger (0.03 collapsed on CIFAR-format test files, 0.01 trained).
TUNED_LRS = {("mlp", "digits"): (0.1, 0.03, 0.01, 0.3, 0.003), ("simplecnn", "digits"): (0.01, 0.003, 0.03, 0.1, 0.3),
             ("mlp", "fashion-mnist"): (0.03, 0.01, 0.003, 0.1, 0.3),
             ("simplecnn", "fashion-mnist"): (0.003, 0.01, 0.03, 0.1, 0.3),
             ("mlp", "cifar10"): (0.01, 0.003, 0.03, 0.1, 0.3), ("simplecnn", "cifar10"): (0.003, 0.01, 0.03, 0.1, 0.3)}
LIKE = {"mnist": "fashion-mnist", "kmnist": "fashion-mnist", "cifar100": "cifar10"}  # same shape and size


def tuned_lrs(model: str, dataset: str) -> tuple[float, ...]:
    """The table's lrs for a built-in (model, dataset), best first; () for any other pair."""
    return TUNED_LRS.get((model, LIKE.get(dataset, dataset)), ())


def next_lr(model: str, dataset: str, lr: float) -> float:
    """The lr to try after a run at `lr` collapsed or diverged: the table's best-ranked smaller lr, else a third."""
    return next((x for x in tuned_lrs(model, dataset) if x < lr), round(lr / 3, 6))
# The axes of a study: a sweep file's grid lists their values, and the report compares runs that differ in them
# (paired by seed). Every other field that changes the result is a setting, shared by the runs of one comparison.
AXES = ("init", "model", "dataset", "seed")
# Settings that may differ within one comparison: the derived seeds, and how often the curves are logged.
PER_RUN = ("init_seed", "data_seed", "log_every")
# What the members of one lockstep group may differ in: they share everything else, down to the batches.
MEMBER_AXES = ("init", "lr")


LOG_POINTS_PER_EPOCH = 4  # logged points per epoch when log_every is not given


def log_interval(log_every: int | None, steps_per_epoch: int) -> int:
    """Steps between logged points: `log_every` if given, else LOG_POINTS_PER_EPOCH points per epoch (at least
    every step), so a curve has points on any dataset size."""
    return log_every or max(1, steps_per_epoch // LOG_POINTS_PER_EPOCH)


def _setting(default: Any, help: str, **meta: Any) -> Any:
    """A RunSpec field with its help text (and choices): the CLI's flags and `--help` are made from these."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class LogSpec:
    """Where a run's curves go besides its CSV record, and under which names. Not part of the run's identity."""

    loggers: tuple[str, ...] = ("csv",)
    experiment: str = _setting("adhoc", "experiment name (the W&B group is EXPERIMENT/PROBLEM/INIT: seeds of one "
                                        "init together)")
    wandb_project: str = _setting("initbench", "W&B project")
    wandb_entity: str | None = _setting(None, "W&B entity (user or team)")


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run. Its stable hash (`run_id`) keys the record on disk; `log` says where the
    curves go and is not part of the identity."""

    model: str = _setting("mlp", "model spec, e.g. simplecnn, 'mlp(hidden=[512, 256], activation=tanh)' or "
                                 "mypkg.models:build")
    init: str = _setting("kaiming_normal", "init spec, e.g. kaiming_normal or 'normal(std=0.02)' (see `initbench "
                                           "list inits`)")
    dataset: str = _setting("digits", "mnist, fashion-mnist, kmnist, cifar10, cifar100, digits or mypkg.data:load "
                                      "(default: cifar10 for simplecnn, mnist for mlp, else digits)", shown=False)
    seed: int = _setting(0, "seed for the init and the data order")
    init_seed: int | None = _setting(None, "seed for the init alone (default: --seed)")
    # default: seed; shared across inits within a seed -> paired comparisons
    data_seed: int | None = _setting(None, "seed for the data order alone (default: --seed)")
    optimizer: str = _setting("sgd", "optimizer (sgd has momentum)", choices=OPTIMIZERS)
    lr: float = _setting(0.05, "learning rate (default: per model and dataset, tuned: mlp 0.1 on digits, 0.03 on "
                               "the 28x28 sets, 0.01 on CIFAR; simplecnn 0.01 on digits, 0.003 on the others; 0.05 "
                               "for your own model or data)", shown=False)
    momentum: float = _setting(0.9, "SGD momentum")
    weight_decay: float = _setting(0.0, "weight decay")
    schedule: str = _setting("none", "learning-rate schedule", choices=SCHEDULES)
    batch_size: int = _setting(128, "batch size")
    epochs: int = _setting(5, "epochs")
    max_steps: int | None = _setting(None, "stop after this many steps (overrides --epochs when reached first)")
    limit_train: int | None = _setting(None, "use only N training examples")
    limit_val: int | None = _setting(None, "use only N validation examples")
    limit_test: int | None = _setting(None, "use only N test examples")
    val_fraction: float = _setting(0.1, "fraction of the training set held out for validation")
    split_seed: int = _setting(0, "seed of the train/val split (keep it fixed across a study)")
    accelerator: str = _setting("auto", "auto, cpu, gpu, ...")
    devices: str = _setting("auto", "auto or a number of devices")
    precision: str = _setting("32-true", "Lightning precision: 32-true, 16-mixed, bf16-mixed, ...")
    log_every: int | None = _setting(None, "log train loss/acc and gradient norms every N steps and at step 0 "
                                           "(default: 4 times per epoch)")
    log: LogSpec = field(default_factory=LogSpec, compare=False)

    @functools.cached_property
    def model_call(self) -> tuple[str, dict[str, Any]]:
        """The model spec, parsed once: (name, params)."""
        return parse_call(self.model, "model")

    @functools.cached_property
    def init_spec(self) -> Any:
        """The init spec as given, parsed once (an `inits.InitSpec`: what the walk applies and the manifest names)."""
        from initbench.inits import parse_init

        return parse_init(self.init)

    @functools.cached_property
    def canonical_init(self) -> str:
        """The init spec in its one canonical spelling (`normal(std=1.0)` -> `normal`), computed once."""
        from initbench.inits import canonical_init

        return canonical_init(self.init_spec)

    @functools.cached_property
    def canonical_init_spec(self) -> Any:
        """The canonical spelling, parsed (an `inits.InitSpec`): what the record's folder is named by."""
        from initbench.inits import parse_init

        return parse_init(self.canonical_init)

    @property
    def seeds(self) -> tuple[int, int]:
        return (self.seed if self.init_seed is None else self.init_seed,
                self.seed if self.data_seed is None else self.data_seed)

    def identity(self) -> dict[str, Any]:
        """The fields that change the result (loggers and the experiment's name do not), in one spelling:
        the canonical init (`normal(std=1.0)` == `normal`), float settings as floats, and a derived seed equal
        to `seed` left out, so every way of writing the same run is one run."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare}
        d["init"] = self.canonical_init
        for name, (kind, *_) in _FIELDS.items():
            if kind is float and isinstance(d[name], int) and not isinstance(d[name], bool):
                d[name] = float(d[name])
        for derived in ("init_seed", "data_seed"):
            if d[derived] == d["seed"]:
                d[derived] = None
        return d

    def to_record(self) -> dict[str, Any]:
        """The spec as a record's config.json stores it: every field, the logging settings beside the others."""
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "log"},
                **dataclasses.asdict(self.log)}

    @classmethod
    def from_record(cls, spec: Mapping[str, Any]) -> RunSpec:
        """The RunSpec a record's config.json stored (unknown keys from other versions ignored)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"log"}
        logging = {k: v for k, v in spec.items() if k in LOG_FIELDS}
        if isinstance(logging.get("loggers"), list):
            logging["loggers"] = tuple(logging["loggers"])
        return cls(**{k: v for k, v in spec.items() if k in known}, log=LogSpec(**logging))

    @functools.cached_property
    def run_id(self) -> str:
        return hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        """The record's folder name: the canonical init with its parameters, file-name safe, then seed and id,
        e.g. `normal_std-0.02-seed0-1a2b3c4d` (long specs are cut; the id keeps names unique)."""
        init = self.canonical_init_spec
        params = {k: v for k, v in init.params.items() if k != "rules"}
        text = init.name + "".join(f"_{k}-{format_value(v)}" for k, v in params.items())
        text = re.sub(r"[^\w.+-]+", "-", text.replace("'", "")).strip("-")[:80]
        rules = "+rules" if init.params.get("rules") else ""
        return _path_safe(f"{text}{rules}-seed{self.seed}-{self.run_id[:8]}")

    @property
    def group_key(self) -> str:
        """Runs with the same key can train as one lockstep group (they see the same batches): everything that
        defines a run but its init and learning rate."""
        identity = self.identity()
        for axis in MEMBER_AXES:
            del identity[axis]
        return repr(sorted(identity.items()))

    @property
    def problem(self) -> str:
        """DeepOBS-style problem name, <dataset>_<model spec>: model variants are different problems."""
        return f"{self.dataset}_{format_call(*self.model_call)}"

    @property
    def folder(self) -> str:
        """The problem's folder under the results dir: <dataset>_<model name> (runs inside are hashed)."""
        return _path_safe(f"{self.dataset}_{self.model_call[0]}")

    def check_names(self) -> None:
        """The checks that need neither torch nor Lightning, so a typo is refused at once: every setting's type and
        range, the spec syntax, and every name (init, model, dataset, optimizer, ...) against the catalog."""
        from initbench import registry

        for f in dataclasses.fields(self):
            if f.compare:
                _check_field(f.name, getattr(self, f.name))
        registry.check_name("dataset", self.dataset)
        registry.check_model(self.model)
        registry.check_init(self.init)
        if self.optimizer not in OPTIMIZERS:
            raise unknown_name("optimizer", self.optimizer, OPTIMIZERS, ordered=True)
        if self.schedule not in SCHEDULES:
            raise unknown_name("schedule", self.schedule, SCHEDULES, ordered=True)
        from initbench.datasets import DATASET_SIZES, check_limits

        if self.dataset in DATASET_SIZES:  # a built-in: its sizes are known, so limits and batch size are checked here
            check_limits(self.dataset, *DATASET_SIZES[self.dataset], self.val_fraction,
                         (self.limit_train, self.limit_val, self.limit_test), self.batch_size)
        if str(self.devices) not in ("auto", "1"):
            raise InitbenchError(f"devices must be auto or 1, got {self.devices!r}: initbench trains each run on one "
                                 f"device; to use several, run sweep shards side by side (--shard i/N)")
        unknown = [lg for lg in self.log.loggers if lg not in LOGGERS]
        if unknown:
            raise InitbenchError(f"unknown logger '{unknown[0]}'; valid: {', '.join(LOGGERS)}")

    def validate(self) -> None:
        """Check names and numbers before any work or any file is written: the light checks first, then those
        that load the registries, plug-ins and user code (torch). Whether Lightning accepts the accelerator and
        precision here is the trainer's own check (`train.trainer.check_trainer`), made once per pair before a run
        or a sweep starts."""
        from initbench.data import check_dataset
        from initbench.inits import resolve_init
        from initbench.models import check_model

        self.check_names()
        check_dataset(self.dataset)
        resolve_init(self.init_spec)  # the scheme, its parameters, fallback and rules
        check_model(self.model_call)
        if self.precision not in PRECISIONS:
            raise InitbenchError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")


def cores() -> int:
    """The cores this process may use: the default thread count of a run or study."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_threads(threads: int | None, named: str = "--threads", here: bool = True) -> None:
    """A thread count is a whole number from 1; training `here` (not on Ray's nodes), at most this machine's cores."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InitbenchError(f"{named} must be a whole number of at least 1, got {threads!r}")
    if here and threads > cores():
        raise InitbenchError(f"{named} {threads}: this machine lets initbench use {cores()} cores (more threads than "
                             "cores slow every run about tenfold)")


# Fields that change the result, less the axes: what a sweep file may set under `train:`.
SETTINGS = tuple(f.name for f in dataclasses.fields(RunSpec) if f.compare and f.name not in AXES)
LOG_FIELDS = tuple(f.name for f in dataclasses.fields(LogSpec))  # where curves go: never part of a run's identity


def setting_defaults() -> dict[str, Any]:
    """Each training setting's default (what a run that does not set it trains with)."""
    return {f.name: f.default for f in dataclasses.fields(RunSpec) if f.name in SETTINGS}


SEED_LIMIT = 2**32  # seeds are 0 <= seed < 2**32: torch's generators and the data order's arithmetic stay exact
# field -> (type, lowest, highest, whether the highest is excluded, how messages name it)
_FIELDS: dict[str, tuple[type, float | None, float | None, bool, str]] = {
    "seed": (int, 0, SEED_LIMIT, True, "seed"), "init_seed": (int, 0, SEED_LIMIT, True, "init seed"),
    "data_seed": (int, 0, SEED_LIMIT, True, "data seed"), "split_seed": (int, 0, SEED_LIMIT, True, "split seed"),
    "lr": (float, 0, None, False, "learning rate (lr)"), "momentum": (float, 0, 1, True, "momentum"),
    "weight_decay": (float, 0, None, False, "weight decay (weight_decay)"),
    "val_fraction": (float, 0, 1, True, "val fraction (val_fraction)"),
    "batch_size": (int, 1, None, False, "batch size (batch_size)"), "epochs": (int, 1, None, False, "epochs"),
    "max_steps": (int, 1, None, False, "max steps (max_steps)"),
    "log_every": (int, 1, None, False, "log every (log_every)"),
    "limit_train": (int, 1, None, False, "--limit-train"), "limit_val": (int, 1, None, False, "--limit-val"),
    "limit_test": (int, 1, None, False, "--limit-test"),
    **{k: (str, None, None, False, k) for k in ("model", "dataset", "optimizer", "schedule", "accelerator",
                                                  "precision")},
}


def _check_field(name: str, value: Any) -> None:
    """One setting's type and range; None is allowed where the field is optional (limits, derived seeds)."""
    kind, low, high, open_high, label = _FIELDS.get(name, (object, None, None, False, name))
    if value is None and getattr(RunSpec, name, 0) is None:
        return
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InitbenchError(f"{label} must be a whole number, got {value!r}")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InitbenchError(f"{label} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise InitbenchError(f"{label} must be finite, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise InitbenchError(f"{label} must be a name, got {value!r}")
    if name == "lr" and value <= 0:
        raise InitbenchError(f"learning rate (lr) must be positive, got {value}")
    if name == "val_fraction" and value <= 0:
        raise InitbenchError(f"val fraction (val_fraction) must be above 0, got {value}")
    if low is not None and value < low:
        raise InitbenchError(f"{label} must be at least {low}, got {value}")
    if high is not None and (value >= high if open_high else value > high):
        raise InitbenchError(f"{label} must be {'below' if open_high else 'at most'} {high}, got {value}")


def _path_safe(name: str) -> str:
    """A file name from a name that may be an import path (`mypkg.models:build` -> `mypkg.models-build`)."""
    return re.sub(r"[^\w.+-]+", "-", name)

