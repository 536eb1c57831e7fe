"""The on-disk run record: config.json, manifest.json, metrics.csv, and summary.json written last."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

CONFIG, MANIFEST, METRICS, SUMMARY = "config.json", "manifest.json", "metrics.csv", "summary.json"
STATUSES = ("ok", "diverged", "collapsed", "failed")


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_clean(data), f, indent=2, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_complete(run_dir: Path) -> bool:
    """A run is complete once its summary.json exists and parses; anything less is rerun."""
    try:
        return json.loads((run_dir / SUMMARY).read_text()).get("status") in STATUSES
    except (OSError, ValueError, AttributeError):
        return False
