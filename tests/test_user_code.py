"""The user's own model and dataset, by import path and by entry point, through `initbench run`, a sweep
and the report; the torchvision datasets that share the built-in loaders (KMNIST, CIFAR-100)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import pickle_with_md5
from torchvision.datasets import CIFAR100

from initbench.data import decode

INITBENCH = Path(sys.executable).parent / "initbench"

MODELS = '''
from torch import nn


def build(input_shape, num_classes, width: int = 32):
    """A GELU net the user brings."""
    n = 1
    for d in input_shape:
        n *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(n, width), nn.GELU(), nn.Linear(width, num_classes))


def bare(input_shape, num_classes):
    """A linear model: no activation anywhere."""
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], num_classes))


def wrong(input_shape, num_classes):
    return 42


def star(*shape_and_classes, width: int = 8):
    return build(*shape_and_classes, width=width)
'''

DATA = '''
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def load():
    """Digits as flat features, split by the user: (x_train, y_train, x_test, y_test) arrays."""
    d = load_digits()
    return d.data[:1400], d.target[:1400], d.data[1400:], d.target[1400:]


class Pictures:
    """A torchvision-style dataset without data/targets arrays: (PIL image, label) items."""

    def __init__(self, lo, hi):
        d = load_digits()
        self.images, self.labels = d.images[lo:hi], d.target[lo:hi]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return Image.fromarray((self.images[i] * 16).astype(np.uint8)), int(self.labels[i])


def pictures():
    return Pictures(0, 1400), Pictures(1400, 1797)


def torchvision_mnist(root: Path):
    from torchvision.datasets import MNIST

    return MNIST(str(root), train=True), MNIST(str(root), train=False)


def wrong():
    return "hello"


def channels_last():
    d = load_digits()
    x = d.images[..., None]  # (N, 8, 8, 1), as numpy keeps images
    return x[:1400], d.target[:1400], x[1400:], d.target[1400:]


def empty_test():
    d = load_digits()
    return d.data, d.target, d.data[:0], d.target[:0]


class Labelled(Pictures):
    classes = ["zero", "one", "two"]


def too_few_classes():
    return Labelled(0, 100), Labelled(100, 200)
'''


@pytest.fixture
def user_code(tmp_path):
    (tmp_path / "mymodels.py").write_text(MODELS)
    (tmp_path / "mydata.py").write_text(DATA)
    return tmp_path


def _initbench(args, code: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(code)}
    return subprocess.run([str(INITBENCH), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd)


TINY = ["--epochs", "1", "--batch-size", "64", "--limit-train", "256", "--limit-val", "128", "--limit-test", "128",
        "--accelerator", "cpu", "--no-progress"]


def test_user_model_and_dataset_through_run(user_code, tmp_path):
    out = tmp_path / "runs"
    done = _initbench(["run", "--model", "mymodels:build(width=24)", "--dataset", "mydata:load", *TINY, "--out", out],
                      user_code)
    assert done.returncode == 0, done.stderr
    assert "mydata:load_mymodels:build(width=24) / kaiming_normal / seed 0: ok" in done.stdout
    record = next(out.glob("mydata-load_mymodels-build/kaiming_normal-seed0-*"))
    manifest = json.loads((record / "manifest.json").read_text())
    assert manifest["nonlinearity"].startswith("gelu (inferred from nn.GELU)")
    assert json.loads((record / "config.json").read_text())["data"]["input_shape"] == [64, 1, 1]


def test_user_model_and_dataset_through_a_sweep_and_the_report(user_code, tmp_path):
    (tmp_path / "study.yaml").write_text(textwrap.dedent("""
        name: mine
        datasets: [mydata:load]
        models: [mymodels:build, mymodels:bare]
        inits:
          - kaiming_normal
          - {name: kaiming_normal, rules: {"3.*": zeros}}
        seeds: [0, 1, 2]
        train: {epochs: 1, batch_size: 64, limit_train: 256, limit_val: 128, limit_test: 128, accelerator: cpu}
    """))
    out = tmp_path / "results"
    done = _initbench(["sweep", tmp_path / "study.yaml", "--out", out, "--no-progress"], user_code)
    assert done.returncode == 0, done.stderr
    assert "12 ok" in done.stdout
    # the linear model has no activation (kaiming falls back) and no layer '3': each said once, not per run
    assert done.stderr.count("no activation found: kaiming_normal used leaky_relu(a=0)") == 1
    assert done.stderr.count("rule '3.*' matches no parameter of this model") == 1
    report = _initbench(["report", out], user_code)
    assert report.returncode == 0, report.stderr
    ranking = pd.read_csv(out / "ranking.csv")
    assert set(ranking["init"]) == {"kaiming_normal", "kaiming_normal(rules={'3.*': zeros})"}
    assert set(ranking["problem"]) == {"mydata:load_mymodels:build", "mydata:load_mymodels:bare"}


def test_torchvision_style_datasets(user_code, mnist_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(user_code))
    d = decode("mydata:torchvision_mnist", mnist_dir)
    assert tuple(d.x_train.shape) == (1000, 1, 28, 28) and d.num_classes == 10 and len(d.y_test) == 200
    d = decode("mydata:pictures", mnist_dir)
    assert tuple(d.x_train.shape) == (1400, 1, 8, 8) and d.x_train.max() > 0 and d.num_classes == 10


def test_keyword_only_model_parameters(user_code, monkeypatch):
    from initbench.models import build_model, model_params

    monkeypatch.syspath_prepend(str(user_code))
    assert model_params("mymodels:star") == {"width": 8}
    assert build_model("mymodels:star(width=5)", (1, 8, 8), 10)[1].out_features == 5


def test_user_arrays_are_read_as_a_researcher_means_them(user_code, monkeypatch, tmp_path):
    from initbench import InitbenchError

    monkeypatch.syspath_prepend(str(user_code))
    assert tuple(decode("mydata:channels_last", tmp_path).x_train.shape) == (1400, 1, 8, 8)
    with pytest.raises(InitbenchError, match="dataset 'mydata:empty_test': the test split is empty"):
        decode("mydata:empty_test", tmp_path)
    with pytest.raises(InitbenchError, match="dataset 'mydata:too_few_classes' declares 3 classes but has label 9"):
        decode("mydata:too_few_classes", tmp_path)


def test_entry_point_groups_for_models_and_datasets(user_code, tmp_path):
    dist = user_code / "mine-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mine\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[initbench.models]\ntinynet = mymodels:build\nbroken = no_such_module:build\n"
        "[initbench.datasets]\nmydigits = mydata:load\n")
    listed = _initbench(["list", "models"], user_code)
    assert listed.returncode == 0 and "tinynet      A GELU net the user brings." in listed.stdout
    assert "mydigits" in _initbench(["list", "datasets"], user_code).stdout
    done = _initbench(["run", "--model", "tinynet", "--dataset", "mydigits", *TINY, "--out", tmp_path / "r"], user_code)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "mydigits_tinynet").is_dir()
    broken = _initbench(["run", "--model", "broken", "--dataset", "mydigits", *TINY], user_code)
    assert broken.returncode == 2
    assert "plug-in 'broken' (no_such_module:build, group initbench.models) failed to load" in broken.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "nomod:build"], "cannot import 'nomod' for model 'nomod:build': No module named 'nomod'"),
    (["--model", "mymodels:nothing"], "module 'mymodels' has no attribute 'nothing' (model 'mymodels:nothing')"),
    (["--model", "mymodels:wrong"], "model 'mymodels:wrong' returned int, not a torch.nn.Module"),
    (["--model", "mymodels:build(depth=3)"], "model 'mymodels:build' has no parameter 'depth'; valid: width"),
    (["--dataset", "nodata:load"], "cannot import 'nodata' for dataset 'nodata:load'"),
    (["--dataset", "mydata:nothing"], "module 'mydata' has no attribute 'nothing' (dataset 'mydata:nothing')"),
    (["--dataset", "mydata:wrong"], "dataset 'mydata:wrong' returned str; expected (x_train, y_train, x_test, "
                                    "y_test) arrays"),
])
def test_user_code_mistakes_are_one_line_and_exit_2(user_code, tmp_path, args, message):
    base = {"--model": "mymodels:build", "--dataset": "mydata:load"}
    base[args[0]] = args[1]
    done = _initbench(["run", *[x for kv in base.items() for x in kv], *TINY, "--out", tmp_path / "r"], user_code)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("initbench: error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # nothing half-written


# --- torchvision datasets that share the built-in loaders ---------------------------------------------


def test_kmnist_shares_the_mnist_loader(mnist_dir, tmp_path):
    shutil.copytree(mnist_dir / "MNIST" / "raw", tmp_path / "KMNIST" / "raw")
    d = decode("kmnist", tmp_path, download=False)
    assert tuple(d.x_train.shape) == (1000, 1, 28, 28) and d.num_classes == 10


@pytest.fixture
def cifar100_dir(tmp_path, monkeypatch) -> Path:
    """CIFAR-100's python pickles (train, test, meta with fine label names), checksums pointed at them."""
    folder = tmp_path / CIFAR100.base_folder
    folder.mkdir()
    rng = np.random.default_rng(2)

    def split(name: str, n: int) -> list[str]:
        return pickle_with_md5(folder, name, {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                           "fine_labels": rng.integers(0, 100, n).tolist()})

    monkeypatch.setattr(CIFAR100, "train_list", [split("train", 300)])
    monkeypatch.setattr(CIFAR100, "test_list", [split("test", 100)])
    meta = pickle_with_md5(folder, "meta", {"fine_label_names": [f"class{i}" for i in range(100)]})
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": meta[1]})
    return tmp_path


def test_cifar100_shares_the_cifar10_loader(cifar100_dir):
    d = decode("cifar100", cifar100_dir, download=False)
    assert tuple(d.x_train.shape) == (300, 3, 32, 32) and d.num_classes == 100 and len(d.y_test) == 100


def test_the_readme_example_finds_a_package_in_the_working_folder(tmp_path):
    """`initbench run --model 'mypkg.models:build(width=16)' --dataset mypkg.data:load` from the folder holding mypkg,
    through the installed console script (which, unlike `python -m`, does not put the working folder on the path)."""
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "models.py").write_text(
        "from torch import nn\n\n"
        "def build(input_shape, num_classes, width=64):\n"
        "    c, h, w = input_shape\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.GELU(),\n"
        "                         nn.Linear(width, num_classes))\n")
    (tmp_path / "mypkg" / "data.py").write_text(
        "from sklearn.datasets import load_digits\n\n"
        "def load():\n"
        "    d = load_digits()\n"
        "    return d.images[:1400], d.target[:1400], d.images[1400:], d.target[1400:]\n")
    exe = Path(sys.executable).parent / "initbench"
    done = subprocess.run([str(exe), "run", "--model", "mypkg.models:build(width=16)", "--dataset", "mypkg.data:load",
                           "--init", "kaiming_normal", "--epochs", "1", "--out", "out", "--no-progress",
                           "--accelerator", "cpu"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-800:]
    assert len(list((tmp_path / "out").glob("*/*/summary.json"))) == 1
