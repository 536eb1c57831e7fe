"""The command line's options, each declared once: the ones several commands share (`add_data_options`,
`add_out_option`, `add_progress_option`, `add_logger_option`, `add_wandb_options`, `add_batch_size_option`), taking a
command's own help text or default where those differ; the `run` command's, made from RunSpec's and LogSpec's own
fields (help, choices, defaults); and the RunSpec they describe. Light: no torch or Lightning at import."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from initbench.errors import InitbenchError
from initbench.spec import DEFAULT_DATASET, LOGGERS, LogSpec, RunSpec, tuned_lrs
from initbench.syntax import parse_call


def _flag_fields(cls: type) -> list[dataclasses.Field]:
    """The RunSpec or LogSpec fields that are flags (those with help)."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


_FLAG_TYPES = {"int": int, "float": float, "str": str}


def add_data_options(p: argparse.ArgumentParser, *, download: bool = True) -> None:
    """--data-dir, and --no-download unless `download` is False (a command that does not take it)."""
    p.add_argument("--data-dir", type=Path, default=None, help="where datasets live (default: $INITBENCH_DATA_DIR "
                   "or ~/.cache/initbench/data)")
    if download:
        p.add_argument("--no-download", action="store_true", help="never try to download a missing dataset")


def add_out_option(p: argparse.ArgumentParser, default: Path | None, help: str) -> None:
    """--out, the folder a command writes into: its default and help are the command's own."""
    p.add_argument("--out", type=Path, default=default, help=help)


def add_threads_option(p: argparse.ArgumentParser, help: str) -> None:
    """--threads, the torch threads a run trains with (None: the command's default, said in `help`)."""
    p.add_argument("--threads", type=int, default=None, metavar="N", help=help)


def add_progress_option(p: argparse.ArgumentParser, help: str = "no progress bar") -> None:
    p.add_argument("--no-progress", action="store_true", help=help)


def add_logger_option(p: argparse.ArgumentParser, help: str) -> None:
    """--logger, one of spec.LOGGERS (default: csv); what wandb adds is the command's own help."""
    p.add_argument("--logger", choices=LOGGERS, default="csv", help=help)


def add_wandb_options(p: argparse.ArgumentParser, project: str | None, project_help: str, entity_help: str) -> None:
    """--wandb-project (default `project`) and --wandb-entity (default: none), with the command's own help."""
    p.add_argument("--wandb-project", default=project, help=project_help)
    p.add_argument("--wandb-entity", default=None, help=entity_help)


def add_batch_size_option(p: argparse.ArgumentParser, default: int = 128) -> None:
    """--batch-size of a command outside RunSpec's flags (`run` takes RunSpec's own)."""
    p.add_argument("--batch-size", type=int, default=default, help=f"batch size (default: {default})")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """A flag per RunSpec and LogSpec setting: --field-name (and --field_name, as W&B agents pass them), its type,
    help, choices and default from the field itself."""
    for f in [*_flag_fields(RunSpec), *_flag_fields(LogSpec)]:
        name = f.name
        flags = ["--" + name.replace("_", "-")] + (["--" + name] if "_" in name else [])
        help_ = f.metadata["help"]
        if "choices" in f.metadata:
            help_ = f"{help_}: {', '.join(f.metadata['choices'])}"
        if f.default is not None and f.metadata.get("shown", True):
            help_ = f"{help_} (default: {f.default})"
        kind = _FLAG_TYPES[str(f.type).split(" |")[0]]  # `int | None` -> int
        p.add_argument(*flags, dest=name, type=kind, default=None, help=help_)
    add_data_options(p)
    p.add_argument("--init-rule", dest="init_rules", action="append", metavar="PATTERN=SPEC",
                   help="parameters whose name matches PATTERN (fnmatch) get SPEC instead of --init; repeatable, "
                        "first match wins (e.g. 'classifier.fc3.*=zeros')")


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """The RunSpec the `run` flags describe, its names checked (torch and Lightning are not loaded)."""
    given = {f.name: getattr(args, f.name) for f in _flag_fields(RunSpec) if getattr(args, f.name) is not None}
    log = {f.name: getattr(args, f.name) for f in _flag_fields(LogSpec) if getattr(args, f.name) is not None}
    if args.logger == "wandb":
        log["loggers"] = ("csv", "wandb")
    given["log"] = LogSpec(**log)
    if args.init_rules:
        from initbench import registry

        rules = {}
        for text in args.init_rules:
            pattern, sep, rule = text.partition("=")
            if not sep or not pattern.strip() or not rule.strip():
                raise InitbenchError(f"--init-rule must be PATTERN=SPEC, e.g. 'classifier.fc3.*=zeros', got {text!r}")
            rules[pattern.strip()] = rule.strip()
        name, params = parse_call(given.get("init", RunSpec.init), "init")
        registry.check_init({"name": name, **params, "rules": {**(params.get("rules") or {}), **rules}})
        from initbench.inits import resolve_init

        given["init"] = str(resolve_init(given.get("init", RunSpec.init), rules).spec)
    model = parse_call(given.get("model", RunSpec.model), "model")[0]
    if "dataset" not in given:
        given["dataset"] = DEFAULT_DATASET.get(model, "digits")
    if "lr" not in given and tuned_lrs(model, given["dataset"]):
        given["lr"] = tuned_lrs(model, given["dataset"])[0]
    spec = RunSpec(**given)
    spec.check_names()  # before torch and Lightning load
    return spec
