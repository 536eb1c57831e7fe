"""The on-disk run record: config.json, manifest.json, metrics.csv, and summary.json written last."""

from __future__ import annotations

import json
import math
import os
import socket
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
    """A run is complete once its summary.json (written last) and config.json parse; anything less is rerun."""
    try:
        summary = json.loads((run_dir / SUMMARY).read_text())
        config = json.loads((run_dir / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(summary, dict) and summary.get("status") in STATUSES and isinstance(config, dict)
            and isinstance(config.get("spec"), dict))


class RunLock:
    """An exclusive claim on one run, so two processes never train (or clear) the same run at once.
    A claim whose process is gone (same host) is stale and taken over."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir.parent / f".{run_dir.name}.lock"
        self.me = f"{socket.gethostname()} {os.getpid()}"

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale():
                    return False
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.me)
            return True
        return False

    def _stale(self) -> bool:
        try:
            host, pid = self.path.read_text().split()
        except (OSError, ValueError):
            return True
        if host != socket.gethostname():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

