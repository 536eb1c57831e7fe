"""The Ray executor: each task trains one run or one lockstep group in a scratch folder on its worker and returns
the records' files; the driver alone writes them into the results folder, atomically, as they arrive.

No shared filesystem is needed between nodes: datasets are loaded on the workers (`--data-dir`, else
$INITBENCH_DATA_DIR, else the default cache there; digits is bundled), and W&B offline files stay on the worker
that trained the run, under the same results path (`wandb sync` them from there).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from initbench.errors import InitbenchError
from initbench.record import SUMMARY, RunRecord
from initbench.spec import RunSpec, cores

RETRIES = 3  # a task whose worker process or node dies is run again this many times, then counted as lost
CONNECT_TIMEOUT_S = 5.0


NO_RAY = "--executor ray needs Ray, which is not installed: pip install 'initbench[ray]'"


def check_ray(address: str | None = None) -> None:
    """Ray is an optional extra: say how to get it when it is missing. Joining a cluster (`address`) with a token
    found here, Ray's client is put in token mode first: Ray reads its mode when it is imported."""
    if address is not None and address != "auto":
        _address_form(address)
    if address is not None and token_source() and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"  # as ray.init("auto") does on the head; a cluster without auth accepts it
    if importlib.util.find_spec("ray") is None:  # found, not imported: these checks answer in a blink
        raise InitbenchError(NO_RAY)


def _address_form(address: str) -> tuple[str, int]:
    """HOST and PORT of a `--address`, or a one-line error."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InitbenchError(f"--address must be HOST:PORT (the head node's GCS address, e.g. 10.0.0.5:6379) or "
                             f"auto, got {address!r}")
    return host, int(port)


def _reachable(address: str) -> None:
    """A one-line error for an address nobody answers at, before Ray's own long retries."""
    host, port = _address_form(address)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise InitbenchError(f"no Ray cluster answers at {address}: {exc.strerror or exc}; start one with `ray start "
                             "--head` there, or leave out --address for a local Ray on this machine") from None


def token_source() -> str | None:
    """Where a Ray client finds the cluster's token, in Ray's order (RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH
    names, ~/.ray/auth_token): the first that holds one, None when none does."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    for named, path in (("RAY_AUTH_TOKEN_PATH", os.environ.get("RAY_AUTH_TOKEN_PATH")),
                        ("", str(Path.home() / ".ray" / "auth_token"))):
        if path:
            try:
                if Path(path).read_text().strip():
                    return f"{named} ({path})" if named else path
            except (OSError, UnicodeDecodeError):
                pass
            if named:  # Ray looks no further once the variable is set
                return None
    return None


TOKEN_HELP = ("put the head's token (`ray get-auth-token` on the head prints it) in RAY_AUTH_TOKEN, in a file named by "
              "RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token")


def _join(address: str) -> None:
    """Join a cluster started with `ray start --head`, with its token where one is found (`check_ray` chose the mode).
    Ray's retries print a warning a second: they are kept off the terminal, and an authentication failure is said in
    one line."""
    import ray
    from ray.exceptions import RayError

    if address != "auto":
        _reachable(address)
    source = token_source()
    with tempfile.TemporaryFile(mode="w+") as said:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(said.fileno(), 2)  # Ray's C++ client writes to the process's stderr
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR", configure_logging=True)
            return
        except (ConnectionError, RuntimeError, ValueError, RayError) as exc:
            error = exc
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        said.seek(0)
        warnings = said.read()
    if "InvalidAuthToken" in warnings or "Authentication" in type(error).__name__:
        mode = os.environ.get("RAY_AUTH_MODE")
        if mode == "disabled":
            raise InitbenchError(f"the Ray cluster at {address} uses token authentication, and RAY_AUTH_MODE is "
                                 f"'disabled' here: unset it, and {TOKEN_HELP}") from None
        if source:
            raise InitbenchError(f"the Ray cluster at {address} refused the token in {source}: {TOKEN_HELP}") from None
        raise InitbenchError(f"the Ray cluster at {address} uses token authentication, and no token was found "
                             f"here: {TOKEN_HELP}") from None
    raise InitbenchError(f"cannot join the Ray cluster at {address}: {str(error).splitlines()[0]}") from None


def connect(address: str | None, cpus_per_task: float, gpus_per_task: float,
            named: tuple[str, str] = ("--cpus-per-task", "--gpus-per-task")) -> Callable[[], None]:
    """Join the cluster at `address` (`auto`: the one `ray start` made on this machine), or start a local Ray on
    this machine's cores; check that some node can give a task what it asks for (`named`: where the CPUs and GPUs
    asked for were given). Returns the disconnect."""
    try:
        import ray
        from ray.exceptions import RayError
    except ImportError:  # installed but broken, or shadowed
        raise InitbenchError(NO_RAY) from None

    no_gpu = f"{named[1]} {gpus_per_task:g}: the Ray cluster has no GPU; leave it out to train on CPUs"
    if address is None and gpus_per_task > 0:  # a local Ray has this machine's GPUs: none, said before it starts
        import torch

        if not torch.cuda.is_available():
            raise InitbenchError(no_gpu)
    if address is None:
        try:
            ray.init(address="local", num_cpus=cores(), include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=True)  # local: never a cluster `ray start` left behind
        except (ConnectionError, RuntimeError, ValueError, RayError) as exc:
            raise InitbenchError(f"cannot start a local Ray: {str(exc).splitlines()[0]}") from None
    else:
        _join(address)
    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus_per_task > 0 and gpus == 0:
        ray.shutdown()
        raise InitbenchError(no_gpu)
    most = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
    if cpus_per_task > most:  # Ray would wait for such a node for ever
        ray.shutdown()
        raise InitbenchError(f"{named[0]} {cpus_per_task:g}: no node of the Ray cluster has more than {most:g} CPUs; "
                             "ask for fewer (a task asks for the study's --threads unless told otherwise)")
    return ray.shutdown


def _train_unit(specs: list[dict[str, Any]], lockstep: bool, data_dir: str | None, download: bool, out: str,
                threads: int, lockstep_mode: str = "auto") -> tuple[list[tuple[str, str, dict[str, bytes]]], list[str]]:
    """On a worker: train the unit in a scratch folder; return (run id, the record's path under the results folder,
    its files) per run, and the notes the training made (a lockstep group that trained one by one says why). W&B
    files move to the results path on this worker. Trains with the study's `threads`, as the sequential executor
    does: the records are the same whichever executor made them."""
    from initbench.execute.units import claim_and_run, claim_and_run_group
    from initbench.record import run_dir_for
    from initbench.train.trainer import use_threads

    use_threads(threads)
    runs = [RunSpec.from_record(s) for s in specs]
    scratch = Path(tempfile.mkdtemp(prefix="initbench-task-"))
    notes: list[str] = []
    try:
        if lockstep:
            claim_and_run_group(runs, scratch, progress=False, data_dir=Path(data_dir) if data_dir else None,
                                download=download, keep_going=True, note=notes.append, lockstep_mode=lockstep_mode)
        else:
            claim_and_run(runs[0], scratch, progress=False, data_dir=Path(data_dir) if data_dir else None,
                          download=download, keep_going=True)
        if (scratch / "wandb").is_dir():  # merged into what earlier tasks on this worker left there
            shutil.copytree(scratch / "wandb", Path(out) / "wandb", dirs_exist_ok=True)
        returned = []
        for spec in runs:
            run_dir = run_dir_for(spec, scratch)
            files = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} if run_dir.is_dir() else {}
            returned.append((spec.run_id, str(run_dir.relative_to(scratch)), files))
        return returned, notes
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_units(units: list[list[RunSpec]], lockstep: Callable[[list[RunSpec]], bool], out: Path,
              data_dir: Path | None, download: bool, cpus: float, gpus: float,
              finished: Callable[[list[RunSpec], list[tuple[RunSpec, dict[str, Any] | None]]], None],
              note: Callable[[str], None] = print, lockstep_mode: str = "auto", threads: int = 1) -> None:
    """Submit every unit as a task and write each returned record as it arrives; `finished(unit, [(spec, summary
    or None when the task was lost)])` after each, and `note` for what a task's training said. The caller holds the
    units' locks."""
    import ray
    from ray.exceptions import RayError

    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=RETRIES)(_train_unit)
    pending = {task.remote([s.to_record() for s in unit], lockstep(unit), str(data_dir) if data_dir else None,
                           download, str(Path(out).resolve()), threads, lockstep_mode): unit for unit in units}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        unit = pending.pop(done[0])
        try:
            records, notes = ray.get(done[0])
            returned = {run_id: (relative, files) for run_id, relative, files in records}
        except RayError:
            finished(unit, [(spec, None) for spec in unit])  # retried and lost: rerun the sweep to train it
            continue
        results = []
        for spec in unit:
            relative, files = returned.get(spec.run_id, ("", {}))
            if SUMMARY in files:
                record = RunRecord(Path(out) / relative)
                record.write_whole(files)
                results.append((spec, record.summary()))
            else:
                results.append((spec, None))
        for message in notes:
            note(message)
        finished(unit, results)
