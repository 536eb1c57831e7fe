"""SIGTERM, SIGINT and kill -9 at any moment leave only whole records and whole report files; the resumed sweep
ends with the same report as an uninterrupted one. A closed stdout ends quietly."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from initbench.errors import Terminated
from initbench.execute.claims import Claims, RunLock, uninterrupted

INITBENCH = Path(sys.executable).parent / "initbench"
SWEEP = """name: sig
datasets: [digits]
models: ["mlp(hidden=[16])"]
inits: [kaiming_normal, orthogonal, zeros]
seeds: 2
train: {epochs: 3, batch_size: 32, limit_train: 512, limit_val: 128, limit_test: 128, accelerator: cpu, log_every: 2}
"""
TIMING = ["wall_time_s", "images_per_s", "train_time_s"]


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    (root / "sig.yaml").write_text(SWEEP)
    base = root / "uninterrupted"
    done = subprocess.run([str(INITBENCH), "sweep", root / "sig.yaml", "--out", base, "--no-progress"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return root / "sig.yaml", base


def _sweep(plan, out) -> subprocess.Popen:
    return subprocess.Popen([str(INITBENCH), "sweep", str(plan[0]), "--out", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _complete(out: Path) -> int:
    return len(list(out.glob("digits_mlp/*/summary.json")))


def _same_report(a: Path, b: Path) -> None:
    for name in ("ranking.csv", "runs.csv"):
        x, y = pd.read_csv(a / name), pd.read_csv(b / name)
        drop = [c for c in (*TIMING, "path") if c in x]
        pd.testing.assert_frame_equal(x.drop(columns=drop), y.drop(columns=drop))


def _check_whole(out: Path) -> None:
    """Every run folder is a complete record or one a rerun replaces; no lock and no half-written report."""
    assert not list(out.rglob(".*.lock"))
    assert not [p for p in out.glob("*") if p.is_file() and p.stat().st_size == 0]
    for run_dir in out.glob("digits_mlp/*"):
        if (run_dir / "summary.json").exists():
            assert (run_dir / "config.json").exists() and (run_dir / "metrics.csv").exists()


def test_sigterm_mid_sweep_stops_in_one_line_and_the_rerun_ends_with_the_same_report(plan, tmp_path):
    out = tmp_path / "out"
    proc = _sweep(plan, out)
    deadline = time.time() + 60
    while _complete(out) < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("initbench: terminated (SIGTERM) with ")
    assert "Traceback" not in err
    _check_whole(out)
    resumed = subprocess.run([str(INITBENCH), "sweep", plan[0], "--out", out, "--no-progress"], capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert _complete(out) == 6
    _same_report(plan[1], out)


def test_sigterm_during_the_report_leaves_the_old_report_whole(plan, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(plan[1], out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    proc = subprocess.Popen([str(INITBENCH), "report", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(2.5)  # imports done, the report being computed and drawn
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (143, 0), err  # 0: it had finished
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert set(after) == set(before) and not list(out.glob(".report-*"))
    if proc.returncode == 143:
        assert err.strip() == "initbench: terminated (SIGTERM)"
        assert after == before


class _SignalledLock(RunLock):
    """A real lock whose release is where SIGTERM arrives (as it did when a group's records had just finished)."""

    def release(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # a handler left in place would have raised by now
        super().release()


def _raise_terminated(signum, frame):
    raise Terminated


def test_sigterm_while_the_locks_are_released_still_frees_every_one(tmp_path):
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        claims = Claims()
        for name in ["a", "b", "c"]:
            assert claims.take(tmp_path / name) is not None
        signalled = _SignalledLock(tmp_path / "d")
        assert signalled.acquire()
        claims.locks.insert(1, signalled)  # released between the others
        with pytest.raises(Terminated):
            claims.release()
        assert not list(tmp_path.glob(".*.lock")) and claims.locks == []
        assert signal.getsignal(signal.SIGTERM) is _raise_terminated
        with pytest.raises(Terminated):  # a signal outside the block still stops at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigint_inside_uninterrupted_waits_for_the_end_of_the_block():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job starts with SIGINT ignored
    reached = []
    try:
        with pytest.raises(KeyboardInterrupt), uninterrupted():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            reached.append(True)
        assert reached == [True] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_closed_stdout_ends_quietly():
    done = subprocess.run(f"'{INITBENCH}' list inits | head -1", shell=True, capture_output=True, text=True)
    assert done.stdout.startswith("constant") and done.stderr == ""


@pytest.mark.slow
def test_ten_sigterms_and_ten_kill_9s_at_random_moments(plan, tmp_path):
    """Random moments of a sweep (start-up, step-0 validation, training, test, report): after each, resume;
    in the end every run is recorded once and the report equals the uninterrupted one."""
    rng = random.Random(0)
    out = tmp_path / "out"
    kills = [signal.SIGTERM] * 10 + [signal.SIGKILL] * 10
    rng.shuffle(kills)
    for sig in kills:
        shutil.rmtree(out / "digits_mlp" / rng.choice(["kaiming_normal", "orthogonal", "zeros"]), ignore_errors=True)
        for run_dir in list(out.glob("digits_mlp/*")) if rng.random() < 0.3 else []:
            shutil.rmtree(run_dir)  # sometimes start over, so kills land early in the sweep too
        proc = _sweep(plan, out)
        time.sleep(rng.uniform(0.5, 9.0))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode in (0, 143, -9), err
        assert "Traceback" not in err
        if sig == signal.SIGTERM:
            _check_whole(out)
    resumed = subprocess.run([str(INITBENCH), "sweep", plan[0], "--out", out, "--no-progress"], capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert _complete(out) == 6 and len(list(out.glob("digits_mlp/*"))) == 6
    _same_report(plan[1], out)
    os.sync()


def test_a_stop_replaced_by_an_error_of_its_own_clean_up_is_raised_again():
    """vmap's clean-up can fail as a SIGTERM passes through it and raise its own error in the stop's place: the stop,
    anywhere behind an error, is what a handler raises; an error with no stop behind it is left to the handler."""
    from initbench.errors import raise_stop

    def masked(stop: BaseException) -> RuntimeError:
        try:
            try:
                raise stop
            except BaseException:
                raise ValueError("the library's clean-up failed") from None  # __context__ keeps the stop
        except ValueError as inner:
            try:
                raise RuntimeError("and its caller's too") from inner
            except RuntimeError as outer:
                return outer

    for stop in (Terminated(), KeyboardInterrupt()):
        with pytest.raises(type(stop)) as caught:
            raise_stop(masked(stop))
        assert caught.value is stop
    raise_stop(RuntimeError("an error of the run's own"))  # nothing behind it: returns


MASKING_MODEL = '''
from torch import nn

from initbench.errors import Terminated

CALLS = [0]


class Masking(nn.Module):
    """From its third forward pass in training mode on, a SIGTERM arrives and the clean-up it passes through fails."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x):
        if self.training:
            CALLS[0] += 1
            if CALLS[0] >= 3:
                try:
                    raise Terminated
                except Terminated:
                    raise RuntimeError("!dynamicLayerStack.empty() INTERNAL ASSERT FAILED") from None
        return self.net(x)
'''


@pytest.mark.parametrize("engine", ["sequential", "lockstep"])
def test_a_masked_sigterm_inside_training_stops_the_run_and_is_never_recorded(engine, tmp_path, monkeypatch):
    """The stop comes back out of either engine as the stop: no run recorded as failed, no group trained one by one."""
    from initbench.execute.units import claim_and_run_group, run
    from initbench.spec import RunSpec

    (tmp_path / "masking.py").write_text(MASKING_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "masking", raising=False)  # its count of forward passes starts at 0
    spec = RunSpec(dataset="digits", model="masking:Masking", epochs=1, batch_size=32, limit_train=128, limit_val=64,
                   limit_test=64, accelerator="cpu")
    with pytest.raises(Terminated):
        if engine == "lockstep":
            claim_and_run_group([spec, RunSpec(**{**spec.__dict__, "init": "orthogonal"})], tmp_path / "out",
                                progress=False, note=pytest.fail)
        else:
            run(spec, tmp_path / "out", progress=False)
    assert not list((tmp_path / "out").rglob("summary.json"))
