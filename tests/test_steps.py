"""A training batch Lightning sees holds many optimizer steps (data.STEPS_PER_BATCH); nothing a run records may
depend on how many."""

import json

import pandas as pd
import pytest
import torch

from initbench import data
from initbench.data import TensorBatches
from initbench.execute.units import claim_and_run_group, run

TIMES = ("train_time_s", "images_per_s", "wall_time_s")


def test_items_hold_the_same_batches_in_the_same_order_whatever_their_size():
    x, y = torch.arange(103).float().view(-1, 1), torch.arange(103)
    one, many = TensorBatches(x, y, 10, True, seed=3), TensorBatches(x, y, 10, True, seed=3, steps=4)
    assert one.steps_per_epoch == many.steps_per_epoch == 10 and len(one) == 10 and len(many) == 3
    waiting = []
    for _ in range(3):  # epochs
        items = [yb for _, yb in many]
        assert [len(i) for i in items] == [40, 40, 20]  # never across an epoch's end, and no short last batch
        batches = [yb for _, yb in one]
        assert torch.equal(torch.cat(items), torch.cat(batches)) and {len(b) for b in batches} == {10}
        waiting.append(set(range(103)) - set(torch.cat(batches).tolist()))
    assert [len(w) for w in waiting] == [3, 3, 3] and waiting[0] != waiting[1]  # other examples wait each epoch
    evaluation = TensorBatches(x, y, 10, False)  # validation and test keep every example
    assert evaluation.steps_per_epoch == 11 and torch.equal(torch.cat([yb for _, yb in evaluation]), y)


def _record(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    return pd.read_csv(run_dir / "metrics.csv"), {k: v for k, v in summary.items() if k not in TIMES}


CASES = {  # 400 training examples in batches of 8: 50 steps an epoch, in items of 16, 16, 16 and 2 steps
    "three epochs, cosine": dict(epochs=3, schedule="cosine", optimizer="adam", lr=0.003),
    "max_steps inside an epoch's last item": dict(epochs=3, max_steps=90),
    "diverged inside an item": dict(init="normal(std=100)", lr=1e8, epochs=2, log_every=5),
}


@pytest.mark.parametrize("case", CASES)
def test_a_run_records_the_same_whatever_a_batch_holds(case, tiny_spec, tmp_path, monkeypatch):
    spec = tiny_spec(batch_size=8, limit_train=400, **CASES[case])
    records = []
    for steps in (1, 16):
        monkeypatch.setattr(data, "STEPS_PER_BATCH", steps)
        run_dir, _ = run(spec, tmp_path / str(steps), progress=False)
        records.append(_record(run_dir))
    (metrics, summary), (metrics_one, summary_one) = records
    pd.testing.assert_frame_equal(metrics, metrics_one)
    assert summary == summary_one
    val_steps = metrics.dropna(subset=["val/acc"])["step"].tolist()
    test_steps = metrics.dropna(subset=["test/acc"])["step"].tolist()
    if case == "max_steps inside an epoch's last item":  # validated at step 0, each epoch's end and the last step
        assert summary["steps"] == 90 and val_steps == [0, 49, 89] and test_steps == [90]
    elif case == "diverged inside an item":  # stopped right after the step it was found at, and validated there
        steps = summary["steps"]
        assert summary["status"] == "diverged" and steps % 5 == 1 and (steps % 50) % 16  # mid-item, after a flush
        assert val_steps[-1] == steps - 1 and test_steps == [steps]
    else:
        assert summary["steps"] == 150 and val_steps == [0, 49, 99, 149] and test_steps == [150]
        assert metrics["train/loss"].notna().sum() == 150 // 2 + 1  # every log_every steps, and the last


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_a_lockstep_group_records_the_same_whatever_a_batch_holds(mode, tiny_spec, tmp_path, monkeypatch):
    specs = [tiny_spec(batch_size=8, limit_train=400, epochs=2, max_steps=70, init=init, lr=lr)
             for init, lr in (("kaiming_normal", 0.05), ("orthogonal", 0.01), ("normal(std=100)", 1e8))]
    records = []
    for steps in (1, 16):  # in each mode (the two round differently)
        monkeypatch.setattr(data, "STEPS_PER_BATCH", steps)
        out = claim_and_run_group(specs, tmp_path / str(steps), progress=False, note=pytest.fail, lockstep_mode=mode)
        records.append([_record(run_dir) for _, run_dir, _, _ in out])
        assert {json.loads((d / "config.json").read_text())["lockstep_mode"] for _, d, _, _ in out} == {mode}
    for (metrics, summary), (metrics_one, summary_one) in zip(*records, strict=True):
        pd.testing.assert_frame_equal(metrics, metrics_one)
        assert summary == summary_one
    assert [s["status"] for _, s in records[0]][2] == "diverged"
    assert [s["steps"] for _, s in records[0]][:2] == [70, 70]
