"""GPU code paths: selected with `pytest -m gpu` on a machine with CUDA (never in CI, which has none)."""

import json

import pytest
import torch

from initbench.execute.units import run


@pytest.mark.gpu
def test_a_run_trains_on_the_gpu_and_records_it(tiny_spec, tmp_path):
    assert torch.cuda.is_available(), "the gpu marker is for machines with CUDA"
    run_dir, summary = run(tiny_spec(model="simplecnn", accelerator="gpu", init="lsuv"), tmp_path, progress=False)
    assert summary["status"] == "ok" and summary["test_acc"] > 0.2
    assert json.loads((run_dir / "config.json").read_text())["device"].startswith("cuda")


@pytest.mark.gpu
def test_divergence_is_found_on_the_gpu(tiny_spec, tmp_path):
    _, summary = run(tiny_spec(init="normal(std=100)", lr=1e8, accelerator="gpu"), tmp_path, progress=False)
    assert summary["status"] == "diverged" and summary["diverged_step"] >= 0
