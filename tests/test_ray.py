"""`--executor ray` on real Ray: a local instance equals the sequential executor (both stages of a tuned sweep), a
two-node cluster on this machine loses a node mid-sweep, the driver is killed with SIGKILL and rerun; every run is
recorded exactly once. Every Ray process a test starts is ended by its own handle or process group."""

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from polling import finished

from initbench.record import TIMINGS

INITBENCH = Path(sys.executable).parent / "initbench"
TUNED = """
name: rayed
datasets: [digits]
models: ["mlp(hidden=[16])"]
inits: [kaiming_normal, orthogonal, zeros]
seeds: 2
tune: {lr: [0.01, 0.1], seeds: [100]}
train: {epochs: 2, batch_size: 32, limit_train: 256, limit_val: 128, limit_test: 128, accelerator: cpu, log_every: 4}
"""
LONGER = """
name: longer
datasets: [digits]
models: ["mlp(hidden=[32])"]
inits: [kaiming_normal, orthogonal, xavier_uniform, lecun_normal]
seeds: 3
train: {epochs: 6, batch_size: 16, limit_train: 1024, limit_val: 128, limit_test: 128, accelerator: cpu}
"""


def sweep(tmp_path: Path, text: str, out: Path, *args: str, **popen) -> subprocess.CompletedProcess:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return subprocess.run([str(INITBENCH), "sweep", str(path), "--out", str(out), "--no-progress", *args],
                          capture_output=True, text=True, **popen)


def recorded_once(out: Path, expected: int) -> pd.DataFrame:
    """Every record is whole and no run has two: the folders, their ids, and nothing half-written or locked."""
    ids = [json.loads((p.parent / "config.json").read_text())["run_id"] for p in out.rglob("summary.json")]
    assert len(ids) == expected and len(set(ids)) == expected, sorted(ids)
    assert not list(out.rglob(".*.lock")) and not list(out.rglob(".*incoming*"))
    run_dirs = [p for p in out.glob("*/*") if p.is_dir() and p.parent.name != "wandb"]
    assert len(run_dirs) == expected, run_dirs  # no unfinished folder left beside the records
    return pd.DataFrame({"run_id": ids})


def same_records(a: Path, b: Path) -> int:
    """Two results folders hold the same runs with byte-identical curves, the same summaries (timings aside) and the
    same thread count; returns how many runs."""
    runs = {p.parent.relative_to(a) for p in a.rglob("summary.json")}
    assert runs == {p.parent.relative_to(b) for p in b.rglob("summary.json")}
    for run in runs:
        assert (a / run / "metrics.csv").read_bytes() == (b / run / "metrics.csv").read_bytes(), run
        summaries = [{k: v for k, v in json.loads((root / run / "summary.json").read_text()).items()
                      if k not in TIMINGS} for root in (a, b)]
        assert summaries[0] == summaries[1], run
        threads = [json.loads((root / run / "config.json").read_text())["threads"] for root in (a, b)]
        assert threads[0] == threads[1], run
    return len(runs)


@pytest.mark.slow  # the real head's test below compares a Ray sweep (tuning stage included) with the sequential one
def test_a_local_ray_sweep_equals_the_sequential_one(tmp_path):
    here = sweep(tmp_path, TUNED, tmp_path / "here")
    assert here.returncode == 0, here.stderr
    rayed = sweep(tmp_path, TUNED, tmp_path / "ray", "--executor", "ray")
    assert rayed.returncode == 0, rayed.stderr
    assert "12/12 complete" in rayed.stdout and "report:" in rayed.stdout
    recorded_once(tmp_path / "ray", 12)
    assert same_records(tmp_path / "here", tmp_path / "ray") == 12  # 6 tuning and 6 grid runs: every number equal
    a = pd.read_csv(tmp_path / "here" / "runs.csv").set_index("run_id").sort_index()
    b = pd.read_csv(tmp_path / "ray" / "runs.csv").set_index("run_id").sort_index()
    assert list(a.index) == list(b.index) and (a["status"] == b["status"]).all() and (a["lr"] == b["lr"]).all()
    tuned = [pd.read_csv(tmp_path / where / "tuning.csv")["lr"] for where in ("ray", "here")]
    assert (tuned[0] == tuned[1]).all()
    study = [json.loads((tmp_path / where / "sweep.json").read_text()) for where in ("here", "ray")]
    assert study[0]["threads"] == study[1]["threads"] == len(os.sched_getaffinity(0))


def test_a_node_removed_mid_sweep_loses_no_run_and_records_none_twice(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        out = tmp_path / "out"
        path = tmp_path / "s.yaml"
        path.write_text(textwrap.dedent(LONGER))
        driver = subprocess.Popen([str(INITBENCH), "sweep", str(path), "--out", str(out), "--no-progress",
                                   "--executor", "ray", "--address", cluster.address, "--engine", "sequential",
                                   "--threads", "1"],  # each node has 1 CPU
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while not finished(out) and time.time() < deadline:
            time.sleep(0.1)
        assert finished(out), "no run finished"
        cluster.remove_node(worker)  # the tasks running there die with it; Ray runs them again on the head
        stdout, stderr = driver.communicate(timeout=300)
        assert driver.returncode == 0, stderr
        assert "12/12 complete" in stdout, stdout
        recorded_once(out, 12)
    finally:
        cluster.shutdown()


def test_the_driver_killed_with_sigkill_loses_nothing_returned_and_a_rerun_finishes(tmp_path):
    out = tmp_path / "out"
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(LONGER))
    command = [str(INITBENCH), "sweep", str(path), "--out", str(out), "--no-progress", "--executor", "ray",
               "--engine", "sequential"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 120
        while len(finished(out)) < 2 and time.time() < deadline:
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        before = len(list(out.rglob("summary.json")))
        assert 2 <= before < 12
    finally:  # the local Ray it started goes with it; its process group is ended here in any case
        time.sleep(1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{before} already done" in rerun.stdout and "12/12 complete" in rerun.stdout, rerun.stdout
    recorded_once(out, 12)


@contextlib.contextmanager
def ray_head(tmp_path: Path, auth: str, token: Path | None):
    """A real head, started as users start one (`ray start --head --block`), in its own process group; yields its
    address, then ends that group and waits until no process of the cluster is left."""
    port = _free_port()
    home = tmp_path / "head-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HOME": str(home), "RAY_AUTH_MODE": auth}
    if token:
        env["RAY_AUTH_TOKEN_PATH"] = str(token)
    log = tmp_path / "head.log"
    temp = tempfile.mkdtemp(prefix="ib-ray-", dir="/tmp")  # its session files (short: socket paths are bounded)
    with open(log, "w") as said:
        head = subprocess.Popen([str(INITBENCH.parent / "ray"), "start", "--head", "--block", "--port", str(port),
                                 "--node-ip-address", "127.0.0.1", "--num-cpus", str(len(os.sched_getaffinity(0))),
                                 "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                                stdout=said, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 90
        while "Ray runtime started" not in log.read_text() and head.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert "Ray runtime started" in log.read_text(), log.read_text()[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # the head and its processes (SIGTERM would drain for 30 s)
        head.wait(timeout=30)
        deadline = time.time() + 60  # its workers (in their own sessions) leave once its raylet is gone
        while _cluster_processes(port) and time.time() < deadline:
            time.sleep(0.5)
        shutil.rmtree(temp, ignore_errors=True)
        assert not _cluster_processes(port)


def _cluster_processes(port: int) -> list[int]:
    """The processes whose command line names the cluster's GCS port (read from /proc; none is ended by name)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if f":{port}".encode() in (proc / "cmdline").read_bytes() and proc.name != str(os.getpid()):
                    found.append(int(proc.name))
    return found


@pytest.mark.parametrize("auth", ["token", pytest.param("disabled", marks=pytest.mark.slow)])  # token covers joining
def test_a_head_started_with_ray_start_is_joined_and_gives_the_sequential_records(auth, tmp_path):
    """`ray start --head`, with token authentication on (the token in a file the driver finds through
    RAY_AUTH_TOKEN_PATH, as Ray's own clients do) or off; the records equal the sequential executor's, number for
    number. Without the token, the driver says so in one line and writes nothing."""
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(32))
    here = sweep(tmp_path, TUNED, tmp_path / "here")
    assert here.returncode == 0, here.stderr
    driver = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HOME": str(tmp_path / "driver")}
    with ray_head(tmp_path, auth, token if auth == "token" else None) as address:
        if auth == "token":
            started = time.time()
            refused = sweep(tmp_path, TUNED, tmp_path / "refused", "--executor", "ray", "--address", address,
                            env=driver | {"RAY_gcs_server_port_wait_time_s": "2"})  # Ray's retries: 2 s, not 20
            assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
            assert (f"the Ray cluster at {address} uses token authentication, and no token was found here: put the "
                    "head's token (`ray get-auth-token` on the head prints it) in RAY_AUTH_TOKEN") in refused.stderr
            assert not (tmp_path / "refused").exists() and time.time() - started < 60
        joined = sweep(tmp_path, TUNED, tmp_path / "cluster", "--executor", "ray", "--address", address,
                       env=driver | {"RAY_AUTH_TOKEN_PATH": str(token)})
        assert joined.returncode == 0, joined.stderr
        assert "12/12 complete" in joined.stdout and not joined.stderr.strip(), joined.stderr
    recorded_once(tmp_path / "cluster", 12)
    assert same_records(tmp_path / "here", tmp_path / "cluster") == 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("args", "message"), [
    (["--executor", "ray", "--address", f"127.0.0.1:{_free_port()}"], "no Ray cluster answers at 127.0.0.1:"),
    (["--executor", "ray", "--address", "nohost"], "--address must be HOST:PORT"),
    (["--executor", "ray", "--gpus-per-task", "0.25"], "--gpus-per-task 0.25: the Ray cluster has no GPU"),
    (["--executor", "ray", "--cpus-per-task", "0"], "--cpus-per-task must be above 0, got 0"),
    (["--address", "127.0.0.1:6379"], "--address is for --executor ray"),
    (["--executor", "dask"], "argument --executor: invalid choice: 'dask'"),
])
def test_bad_ray_settings_are_one_line_errors_with_nothing_written(args, message, tmp_path):
    done = sweep(tmp_path, TUNED, tmp_path / "out", *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("resources", "args", "message"), [
    ("{cpus_per_task: 0}", ["--executor", "ray"], "rayed: resources cpus_per_task must be above 0, got 0"),
    ("{gpus_per_task: 0.5}", ["--executor", "ray"], "rayed: resources gpus_per_task 0.5: the Ray cluster has no GPU"),
    ("{cpus_per_task: 1}", ["--cpus-per-task", "1"], "--cpus-per-task is for --executor ray"),
])
def test_the_sweep_files_resources_are_checked_as_the_flags_are(resources, args, message, tmp_path):
    done = sweep(tmp_path, TUNED + f"resources: {resources}\n", tmp_path / "out", *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "out").exists()


def test_wandb_logs_from_ray_workers_and_the_flags_override_the_files_resources(tmp_path):
    """W&B offline runs land on the worker under the results folder (here: the same machine), readable by wandb's own
    reader; the file asks for half a GPU, the flag for none, and the flag wins."""
    from test_wandb import inspect

    text = TUNED.replace("tune: {lr: [0.01, 0.1], seeds: [100]}", "logger: wandb\nwandb: {project: ray-test}")
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")} | {"HOME": str(tmp_path)}
    out = tmp_path / "out"
    done = sweep(tmp_path, text + "resources: {cpus_per_task: 1, gpus_per_task: 0.5}\n", out, "--executor", "ray",
                 "--gpus-per-task", "0", env=env)
    assert done.returncode == 0, done.stderr
    recorded_once(out, 6)
    offline = sorted((out / "wandb" / "wandb").glob("offline-run-*"))
    assert len(offline) == 6
    logged = {}
    for run_dir in offline:
        summary, _ = inspect(run_dir)
        assert summary["state"] == "finished" and summary["project"] == "ray-test"
        logged[summary["run_id"]] = summary["summary"]["val/acc"]
    for record in out.glob("*/*/summary.json"):  # each record returned from its worker knows its W&B run
        (run,) = json.loads((record.parent / "wandb.json").read_text())["runs"]
        assert logged.pop(run["id"]) == pytest.approx(json.loads(record.read_text())["val_acc_final"])
    assert not logged


def test_on_a_terminal_the_drivers_bar_counts_runs_with_the_tally(tmp_path):
    from terminal import on_terminal

    (tmp_path / "s.yaml").write_text(textwrap.dedent(TUNED))
    code, screen = on_terminal([str(INITBENCH), "sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"),
                                "--no-report", "--executor", "ray", "--engine", "sequential"], cols=160)
    assert code == 0, screen[-2000:]
    done = [int(n) for n in re.findall(r"(\d+)/12 runs \|", screen)]  # 6 tuning runs, then 6 to compare
    assert done == sorted(done) and done[0] < 6 and done[-1] == 12, screen[-2000:]
    assert re.search(r"100%\|.*\| \d\d:\d\d<\d\d:\d\d, 12/12 runs \| \d+ ok( \d+ collapsed)?", screen)


def test_without_ray_installed_the_executor_says_how_to_get_it(tmp_path):
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)  # a Python where `import ray` fails as it does without the package
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "shadow")}
    done = sweep(tmp_path, TUNED, tmp_path / "out", "--executor", "ray", env=env)
    assert done.returncode == 2 and "pip install 'initbench[ray]'" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()
