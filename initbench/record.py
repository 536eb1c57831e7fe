"""The run record and the study file, the one owner of their format. A run's record is a folder holding

- `config.json`: the run's spec, package versions, device, engine, data sizes, parameter count;
- `manifest.json`: what the init did to every parameter;
- `diagnostics.json`: the step-0 diagnostics (`initbench.train.diagnostics`): per layer, and their summary;
- `metrics.csv`: one row per step (Lightning's CSV logger writes it; `tidy_metrics` merges its rows);
- `summary.json`: the status and final figures, written last and atomically: a folder without a readable one is an
  unfinished run, rerun by the next sweep;
- `wandb.json`, once the run is logged to W&B: the W&B runs it was logged as.

A results folder of a sweep also holds `sweep.json`: the sweep file's document, its name and size.

Every JSON file is written atomically, with non-finite numbers as the strings "nan", "inf" and "-inf" (JSON has no
such numbers, and null would lose which one it was); reading the files that hold figures (summary, manifest,
diagnostics) turns them back into floats (records written before this policy hold null there, read as None).

The engines write through RunRecord as they train (the metrics stream into metrics.csv through Lightning's CSV
logger); the sweep, the report, W&B and the CLI read everything back from here.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from initbench.errors import InitbenchError
from initbench.spec import RunSpec

CONFIG, MANIFEST, METRICS, SUMMARY = "config.json", "manifest.json", "metrics.csv", "summary.json"
DIAGNOSTICS, WANDB = "diagnostics.json", "wandb.json"
FILES = (CONFIG, MANIFEST, DIAGNOSTICS, METRICS, SUMMARY)  # every complete record's files (WANDB: once logged there)
STATUSES = ("ok", "diverged", "collapsed", "failed")
TIMINGS = ("wall_time_s", "train_time_s", "images_per_s")  # a summary's clock readings: the rest is reproducible
STUDY = "sweep.json"  # in a sweep's results folder
NONFINITE = ("nan", "inf", "-inf")  # how JSON files hold non-finite numbers


def _nonfinite(value: Any, convert: Any, strings: tuple[str, ...] = ()) -> Any:
    """`value` with its non-finite floats (or, reading, the strings that stand for them) converted."""
    if (isinstance(value, float) and not math.isfinite(value)) or (isinstance(value, str) and value in strings):
        return convert(value)
    if isinstance(value, dict):
        return {k: _nonfinite(v, convert, strings) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nonfinite(v, convert, strings) for v in value]
    return value


def read_json(path: Path, numbers: bool = True) -> Any:
    """A JSON file as written by `write_json`, with (`numbers`) its non-finite numbers as floats; a file of names and
    settings is read as written. OSError or ValueError when it is missing or malformed."""
    data = json.loads(Path(path).read_text())
    return _nonfinite(data, float, NONFINITE) if numbers else data


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_nonfinite(data, str), f, indent=2, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_study(out: Path, name: str, source: dict[str, Any], runs: int, **how: Any) -> None:
    """The study file of a sweep's results folder: its name, the sweep file's document, the grid's size, and how it
    was trained where that is not in the document (`lockstep_mode`, `threads`)."""
    write_json(Path(out) / STUDY, {"name": name, "source": source, "runs": runs, **how})


def declare_claims(out: Path, claims: Any) -> list[dict[str, Any]]:
    """The study file's `claims`: each claim (plan.claims.Claim) as written, with when it was declared and whether
    records already existed then (`after_data`). A claim the study file already holds, the same id and the same
    words, keeps its first declaration; a new or changed one is declared now."""
    study = study_or_empty(out)
    after_data = any(Path(out).glob(f"*/*/{SUMMARY}"))
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return [stored_claim(study, claim) or {"id": claim.id, "claim": claim.source, "declared": now,
                                           "after_data": after_data} for claim in claims]


def stored_claim(study: dict[str, Any], claim: Any) -> dict[str, Any] | None:
    """The study file's entry for `claim` when it holds it unchanged (the same id and the same words as written:
    a claim's source is already what JSON stores), else None."""
    return next((c for c in study.get("claims") or [] if isinstance(c, dict) and c.get("id") == claim.id
                 and c.get("claim") == claim.source), None)


def read_study(results_dir: Path) -> dict[str, Any]:
    """A results folder's study file ({} for a folder of single runs); OSError or ValueError when it is unreadable."""
    path = Path(results_dir) / STUDY
    if not path.exists():
        return {}
    study = read_json(path, numbers=False)
    if not isinstance(study, dict):
        raise ValueError("not a mapping")
    return study


def study_or_empty(results_dir: Path) -> dict[str, Any]:
    """The study file, or {} where there is none or it cannot be read (its reader says which, where that matters)."""
    try:
        return read_study(results_dir)
    except (OSError, ValueError):
        return {}


def study_source(results_dir: Path) -> dict[str, Any]:
    """The sweep file's document stored with a study ({} for a folder of single runs); OSError or ValueError when the
    study file is unreadable."""
    source = read_study(results_dir).get("source", {})
    if not isinstance(source, dict):
        raise ValueError("no source mapping")
    return source


def run_config(spec: RunSpec, versions: dict[str, str], device: str | None, **facts: Any) -> dict[str, Any]:
    """A record's config.json: the run's id and spec, the package versions and device, then what the engine knew
    (`engine`, `group_size`, `group` (the members' run ids, in order: a member's rounding depends on its group),
    `lockstep_mode`, `data`, `parameters`, `threads`, where it knew them)."""
    return {"run_id": spec.run_id, "spec": spec.to_record(), "versions": versions, "device": device, **facts}


def run_dir_for(spec: RunSpec, out: Path) -> Path:
    """Where a run's record is written: <out>/<dataset>_<model>/<init>-seed<seed>-<id>, always inside `out` (the names
    are made file-name safe; checked here as well, whatever a plug-in's name holds)."""
    for part in (spec.folder, spec.name):  # each one plain folder name: no separator, not absolute, not . or ..
        if part in ("", ".", "..") or Path(part).name != part:
            raise InitbenchError(f"a record's path would leave the results folder {out}: {part!r}")
    return Path(out) / spec.folder / spec.name


_RECORD_IDS: dict[Path, str | None] = {}  # a record folder -> the canonical id of the run it holds (read once)


def record_dir(spec: RunSpec, out: Path) -> Path:
    """The folder holding this run's record: its own, or one written under another spelling of the same run
    (e.g. by an earlier version whose ids were not canonical), so that no run is trained twice."""
    own = run_dir_for(spec, out)
    if own.exists() or not own.parent.is_dir():
        return own
    for entry in sorted(own.parent.iterdir()):
        if entry.name.startswith("."):  # locks, and a forced rerun's record before it is swapped in
            continue
        if entry not in _RECORD_IDS and entry.is_dir():
            try:
                stored = RunRecord(entry).config()["spec"]
                _RECORD_IDS[entry] = RunSpec.from_record(stored).run_id
            except (OSError, ValueError, KeyError, TypeError, InitbenchError):
                continue  # not (yet) a readable record: looked at again next time
        if _RECORD_IDS.get(entry) == spec.run_id:
            return entry
    return own


class RunRecord:
    """One run's folder: written in order (config, manifest, metrics, summary last), read back as dicts."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # writing
    def start(self) -> None:
        """An empty folder for a new record (what an interrupted earlier attempt left is removed)."""
        try:
            if self.path.exists():
                shutil.rmtree(self.path)
            self.path.mkdir(parents=True)
        except OSError as exc:
            raise InitbenchError(f"cannot write the run record to {self.path}: {exc.strerror or exc}") from None

    def begin(self, config: dict[str, Any], manifest: dict[str, Any] | None = None,
              diagnostics: dict[str, Any] | None = None) -> None:
        """A new record (what an interrupted earlier attempt left is removed): its config (`run_config`), then what the
        init did and the step-0 diagnostics, where the run got that far."""
        self.start()
        write_json(self.path / CONFIG, config)
        if manifest is not None:
            write_json(self.path / MANIFEST, manifest)
        if diagnostics is not None:
            write_json(self.path / DIAGNOSTICS, diagnostics)

    def write_whole(self, files: dict[str, bytes]) -> None:
        """The record at once from its files (a record made elsewhere, e.g. by a Ray task): written into a hidden
        folder beside it, the summary last, then renamed into place, so a reader sees no record or the whole one (an
        unfinished earlier attempt there is replaced)."""
        stage = self.path.with_name(f".{self.path.name}.incoming-{os.getpid()}")
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        for name, data in sorted(files.items(), key=lambda kv: kv[0] == SUMMARY):
            (stage / name).write_bytes(data)
        if self.path.exists():
            shutil.rmtree(self.path)
        os.rename(stage, self.path)

    def metrics_logger(self) -> Any:
        """The Lightning logger that streams the run's curves into metrics.csv (a row per logging call, merged into one
        row per step by `tidy_metrics`)."""
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(self.path, name="", version="")

    def finish(self, summary: dict[str, Any]) -> None:
        """The summary, last: from now on the record is complete."""
        write_json(self.path / SUMMARY, summary)

    def note_wandb_run(self, entry: dict[str, Any]) -> None:
        """The record was logged as this W&B run (project, entity, id, group, offline, from_record)."""
        write_json(self.path / WANDB, {"runs": [*self.wandb_runs(), entry]})

    def tidy_metrics(self) -> dict[str, Any]:
        """Merge Lightning's one-row-per-logging-call CSV into one row per step (written back atomically), and read
        the final/best validation accuracy and the final train loss from it."""
        import pandas as pd

        metrics_csv = self.path / METRICS
        if not metrics_csv.exists():
            return {}
        # indexed by step and never inserted into: a deep model's hundreds of columns stay one block (no pandas
        # fragmentation warning)
        df = pd.read_csv(metrics_csv).set_index("step").groupby(level=0, sort=True).first()
        cols = ["epoch", *sorted(c for c in df.columns if c != "epoch")]
        tmp = metrics_csv.with_suffix(".tmp")
        df[cols].to_csv(tmp, index_label="step")
        tmp.replace(metrics_csv)
        out: dict[str, Any] = {}
        if "val/acc" in df:
            val = df["val/acc"].dropna()
            if len(val):
                out.update(val_acc_final=float(val.iloc[-1]), best_val_acc=float(val.max()),
                           best_val_step=int(val.idxmax()))
        if "train/loss" in df:
            train = df.dropna(subset=["train/loss"])
            if len(train):
                out["train_loss_final"] = float(train["train/loss"].iloc[-1])
        return out

    # reading
    def _json(self, name: str) -> Any:
        """A file of the record, parsed (OSError or ValueError when it is missing or malformed); the files that hold
        figures (summary, manifest, diagnostics) with their non-finite numbers as floats."""
        return read_json(self.path / name, numbers=name in (SUMMARY, MANIFEST, DIAGNOSTICS))

    def config(self) -> Any:
        return self._json(CONFIG)

    def manifest(self) -> Any:
        return self._json(MANIFEST)

    def summary(self) -> Any:
        return self._json(SUMMARY)

    def diagnostics(self) -> Any:
        """The step-0 diagnostics; {} for a record made before they were recorded."""
        if not (self.path / DIAGNOSTICS).exists():
            return {}
        return self._json(DIAGNOSTICS)

    def wandb_runs(self) -> list[dict[str, Any]]:
        """The W&B runs this record was logged as ([] when none, or when wandb.json is unreadable)."""
        try:
            return list(self._json(WANDB)["runs"])
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def metrics(self) -> Any:
        """metrics.csv as a DataFrame."""
        import pandas as pd

        return pd.read_csv(self.path / METRICS)

    @property
    def complete(self) -> bool:
        """Complete once summary.json (written last) and config.json parse; anything less is rerun."""
        try:
            summary, config = self.summary(), self.config()
        except (OSError, ValueError):
            return False
        return (isinstance(summary, dict) and summary.get("status") in STATUSES and isinstance(config, dict)
                and isinstance(config.get("spec"), dict))

    @property
    def recorded_at(self) -> datetime.datetime:
        """When the record was completed (its summary written)."""
        return datetime.datetime.fromtimestamp((self.path / SUMMARY).stat().st_mtime)
