"""W&B: real offline runs of a real sweep, read back with wandb's own reader (`wandb leet inspect`)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from initbench.cli import main

WANDB = Path(sys.executable).parent / "wandb"
ROOT = Path(__file__).parent.parent


def inspect(run_dir: Path) -> tuple[dict, list[dict]]:
    """(summary object, records) as wandb's reader prints them."""
    summary = subprocess.run([str(WANDB), "leet", "inspect", "--summary", "--json", str(run_dir)],
                             capture_output=True, text=True, check=True, timeout=120).stdout
    records = subprocess.run([str(WANDB), "leet", "inspect", "--json", str(run_dir)],
                             capture_output=True, text=True, check=True, timeout=120).stdout
    return json.loads(summary), [json.loads(line) for line in records.splitlines() if line.strip()]


def _run_record(records: list[dict]) -> dict:
    return next(r["run"] for r in records if r["type"] == "run")


@pytest.fixture(scope="module", params=["lockstep", "sequential"])
def study(tmp_path_factory, request):
    """The same W&B study trained by either engine: W&B must not tell them apart."""
    tmp = tmp_path_factory.mktemp("wb")
    path = tmp / "wb.yaml"
    path.write_text(textwrap.dedent("""
        name: wbstudy
        datasets: [digits]
        models: ["mlp(hidden=[32])"]
        inits: [kaiming_normal, orthogonal]
        seeds: 1
        logger: wandb
        wandb: {project: initbench-test}
        train: {epochs: 2, batch_size: 64, limit_train: 256, limit_val: 128, limit_test: 128, log_every: 2,
                accelerator: cpu}
    """))
    out = tmp / "res"
    with pytest.MonkeyPatch.context() as mp:  # no credentials, no WANDB_MODE: offline must be automatic
        mp.delenv("WANDB_MODE", raising=False)
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.setenv("HOME", str(tmp))
        assert main(["sweep", str(path), "--out", str(out), "--no-progress", "--no-report", "--engine",
                     request.param]) == 0
        assert main(["report", str(out), "--wandb"]) == 0  # the project comes from the sweep file
    engines = {json.loads(p.read_text())["engine"] for p in out.glob("*/*/config.json")}
    assert engines == {request.param}
    runs = sorted((out / "wandb" / "wandb").glob("offline-run-*"))
    return out, runs


def test_each_training_run_is_a_finished_offline_run(study):
    out, runs = study
    train = []
    for run_dir in runs:
        summary, records = inspect(run_dir)
        if _run_record(records).get("job_type") == "train":
            train.append((summary, records))
    assert len(train) == 2  # one W&B run per training run: finished before the next, never merged
    inits = set()
    for summary, records in train:
        run = _run_record(records)
        assert summary["state"] == "finished" and summary["project"] == "initbench-test"
        config = summary["config"]
        inits.add(config["init"])
        assert config["seed"] == 0 and config["init_name"] in run["tags"] and "digits" in run["tags"]
        assert summary["name"] == f"{config['init']}-seed0"
        assert run["run_group"] == f"wbstudy/digits_mlp(hidden=[32])/{config['init']}"  # seeds of one init together
        assert config["init_manifest"]["constant"] == 2  # the manifest summary: two biases zeroed
        assert summary["summary"]["status"] == "ok" and 0 < summary["summary"]["test/acc"] <= 1
        run_dir = next((out / "digits_mlp").glob(f"{config['init']}-seed0-*"))
        record = json.loads((run_dir / "summary.json").read_text())
        assert summary["summary"]["test/acc"] == pytest.approx(record["test_acc"])
        assert summary["summary"]["val/acc"] == pytest.approx(record["val_acc_final"])
        assert not {"test_acc", "test_loss", "val_acc_final"} & set(summary["summary"])  # no key said twice
        check_manifest_table(run_dir, summary)
        check_record_artifact(run_dir, records)
        logged = json.loads((run_dir / "wandb.json").read_text())["runs"]  # the record knows its W&B run
        assert [(r["id"], r["project"], r["from_record"]) for r in logged] == [(summary["run_id"], "initbench-test",
                                                                               False)]
        history = [r["history"]["item"] for r in records if r["type"] == "history"]
        keys = set().union(*history)
        manifest = next((out / "digits_mlp").glob(f"{config['init']}-seed0-*/manifest.json"))
        layers = [r["name"] for r in json.loads(manifest.read_text())["records"]]
        assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/acc", "grad_norm/total"} <= keys
        assert {f"grad_norm/{n}" for n in layers} <= keys and {f"weight_norm/{n}" for n in layers} <= keys
        assert all("trainer/global_step" in item for item in history)  # the shared x-axis
        steps = [item["trainer/global_step"] for item in history if "train/loss" in item]
        assert steps == [0, 2, 4, 6, 7]
    assert inits == {"kaiming_normal", "orthogonal"}


def check_manifest_table(run_dir: Path, summary: dict) -> None:
    """The W&B table `init/manifest` holds every row of the record's manifest.json."""
    ref = summary["summary"]["init/manifest"]
    assert ref["_type"] == "table-file"
    wandb_dir = Path(summary["file"]).parent
    table = json.loads((wandb_dir / "files" / ref["path"]).read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())["records"]
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [r["parameter"] for r in rows] == [m["name"] for m in manifest]
    for row, m in zip(rows, manifest, strict=True):
        assert (row["type"], row["role"], row["fan_in"]) == (m["module_type"], m["role"], m["fan_in"])
        assert row["scheme"].startswith(m["scheme"]) and json.loads(row["distribution"]) == m["distribution"]
        assert row["std"] == pytest.approx(m["std"], nan_ok=True)


def check_record_artifact(run_dir: Path, records: list[dict]) -> None:
    """The record is an artifact `record-<run id>` whose files are the record's files, byte for byte (md5)."""
    import base64
    import hashlib

    summary = json.loads((run_dir / "summary.json").read_text())
    artifact = next(r["artifact"] for r in records if r["type"] == "artifact" and r["artifact"]["type"] == "run-record")
    assert artifact["name"] == f"record-{summary['run_id']}"
    contents = {c["path"]: c["digest"] for c in artifact["manifest"]["contents"]}
    assert set(contents) == {"config.json", "manifest.json", "diagnostics.json", "metrics.csv", "summary.json"}
    for name, digest in contents.items():
        assert base64.b64encode(hashlib.md5((run_dir / name).read_bytes()).digest()).decode() == digest


def test_the_report_is_a_run_with_its_table(study):
    _, runs = study
    reports = [inspect(d) for d in runs]
    reports = [(s, r) for s, r in reports if _run_record(r).get("job_type") == "report"]
    assert len(reports) == 1
    summary, records = reports[0]
    assert _run_record(records)["run_group"] == "wbstudy/digits_mlp(hidden=[32])"
    assert summary["project"] == "initbench-test"  # the sweep file's project, without --wandb-project
    table = summary["summary"]["ranking"]
    assert table["_type"] == "table-file" and table["nrows"] == 2
    assert summary["summary"]["best_init"] in {"kaiming_normal", "orthogonal"}
    assert "ranking_chart_table" in summary["summary"] or "ranking_chart" in summary["summary"]
    plots = {k for k in summary["summary"] if k.startswith("plots/")}
    assert {p.split("_")[0] for p in plots} == {"plots/forest", "plots/curves", "plots/final", "plots/gradnorm0",
                                                "plots/grad", "plots/update", "plots/step0"}


def test_offline_is_announced_once_with_the_sync_command(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    args = ["run", "--dataset", "digits", "--limit-train", "128", "--epochs", "1", "--logger", "wandb",
            "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 0 and main([*args, "--seed", "1"]) == 0
    err = capsys.readouterr().err
    assert err.count("W&B is offline") == 1 and f"wandb sync {tmp_path / 'out' / 'wandb' / 'wandb'}" in err


def test_a_complete_run_asked_for_with_wandb_is_logged_from_its_record_once(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    out = tmp_path / "out"
    args = ["run", "--dataset", "digits", "--model", "mlp(hidden=[16])", "--limit-train", "256", "--epochs", "2",
            "--log-every", "4", "--out", str(out), "--no-progress"]
    assert main(args) == 0  # trained with CSV only: W&B has never seen it
    capsys.readouterr()
    assert main([*args, "--logger", "wandb"]) == 0
    said = capsys.readouterr().out
    assert "already complete" in said and "logged to W&B from the record" in said
    runs = list((out / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    summary, records = inspect(runs[0])
    run_dir = next((out / "digits_mlp").glob("kaiming_normal-seed0-*"))
    assert summary["state"] == "finished" and summary["config"]["from_record"] is True
    assert _run_record(records)["run_group"] == "adhoc/digits_mlp(hidden=[16])/kaiming_normal"
    metrics = [line.split(",") for line in (run_dir / "metrics.csv").read_text().splitlines()]
    step, val = metrics[0].index("step"), metrics[0].index("val/acc")
    from_csv = {int(row[step]): float(row[val]) for row in metrics[1:] if row[val]}
    history = {r["history"]["item"]["trainer/global_step"]: r["history"]["item"]["val/acc"]
               for r in records if r["type"] == "history" and "val/acc" in r["history"]["item"]}
    assert history == pytest.approx(from_csv) and len(history) == 3  # step 0 and each epoch's end
    check_manifest_table(run_dir, summary)
    check_record_artifact(run_dir, records)

    assert main([*args, "--logger", "wandb"]) == 0  # now it is saved offline: said, with how to upload it
    said = capsys.readouterr().out
    assert "not logged to W&B again: it was saved offline for project initbench (run " in said
    assert f"`wandb login`, then `wandb sync {out / 'wandb' / 'wandb'}/offline-run-*` uploads it" in said
    assert len(list((out / "wandb" / "wandb").glob("offline-run-*"))) == 1
    entry = json.loads((run_dir / "wandb.json").read_text())  # as a run logged online records itself
    entry["runs"][-1]["offline"] = False
    (run_dir / "wandb.json").write_text(json.dumps(entry))
    assert main([*args, "--logger", "wandb"]) == 0
    assert "not logged to W&B again: it is already in project initbench (run " in capsys.readouterr().out

    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")  # a W&B agent hands the complete run out: it waits for a run
    assert main([*args, "--logger", "wandb"]) == 0
    assert "logged to W&B from the record" in capsys.readouterr().out
    assert len(list((out / "wandb" / "wandb").glob("offline-run-*"))) == 2


@pytest.mark.parametrize(("extra", "env", "message"), [
    (["--wandb-project", "a/b"], {}, "bad W&B project name 'a/b'"),
    ([], {"WANDB_DIR": "FILE/sub"}, "cannot write W&B files to"),
])
def test_misconfigured_wandb_is_one_line(extra, env, message, tmp_path, capsys, monkeypatch):
    (tmp_path / "FILE").write_text("a file, not a folder")
    for k, v in env.items():
        monkeypatch.setenv(k, v.replace("FILE", str(tmp_path / "FILE")))
    code = main(["run", "--dataset", "digits", "--limit-train", "64", "--batch-size", "32", "--logger", "wandb",
                 "--out", str(tmp_path / "out"), "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not list((tmp_path).rglob("summary.json"))


def test_wandb_missing_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now fails as if it were not installed
    code = main(["run", "--dataset", "digits", "--logger", "wandb", "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "needs the wandb package: pip install 'initbench[wandb]'" in err


def test_csv_logger_never_imports_wandb(tmp_path):
    code = (f"import sys; from pathlib import Path; from initbench.cli import main; "
            f"main(['run', '--dataset', 'digits', '--limit-train', '64', '--epochs', '1', '--no-progress', "
            f"'--out', {str(tmp_path)!r}]); print('wandb' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_emitted_wandb_sweep_drives_initbench_run(tmp_path, capsys):
    target = tmp_path / "sweep.yaml"
    study = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
    del study["tune"]  # the quickstart at one lr: a grid W&B can run
    (tmp_path / "quickstart.yaml").write_text(yaml.safe_dump(study))
    assert main(["sweep", str(tmp_path / "quickstart.yaml"), "--emit-wandb-sweep", str(target)]) == 0
    assert "a W&B grid of 200 runs" in capsys.readouterr().out
    config = yaml.safe_load(target.read_text())
    assert config["method"] == "grid" and config["metric"] == {"name": "val/acc", "goal": "maximize"}
    assert config["project"] == "initbench" and "entity" not in config  # an agent logs where the sweep says
    params = config["parameters"]
    assert len(params["init"]["values"]) == 10 and params["seed"]["values"] == list(range(10))
    assert params["model"]["values"] == ["mlp", "simplecnn"] and params["batch_size"] == {"value": 64}
    command = config["command"]
    assert command[:2] == ["initbench", "run"] and command[-1] == "${args}"
    # what an agent runs for one grid point: ${args} expands to --name=value for every parameter
    point = {k: (v["values"][0] if "values" in v else v["value"]) for k, v in params.items()}
    args = [f"--{k}={v}" for k, v in point.items()]
    cli = command[1:-1]
    cli[cli.index("--out") + 1] = str(tmp_path / "agent")
    assert main([*cli, *args, "--limit-train", "128", "--epochs", "1"]) == 0
    record = json.loads(next((tmp_path / "agent").rglob("config.json")).read_text())
    assert record["spec"]["init"] == point["init"] and record["spec"]["batch_size"] == 64
    assert record["spec"]["experiment"] == "quickstart"


def test_per_model_overrides_cannot_become_a_wandb_grid(tmp_path, capsys):
    path = tmp_path / "o.yaml"
    path.write_text("datasets: [digits]\nmodels: [mlp, {name: simplecnn, train: {lr: 0.01}}]\n"
                    "inits: [zeros]\nseeds: 1\n")
    assert main(["sweep", str(path), "--emit-wandb-sweep", str(tmp_path / "s.yaml")]) == 2
    assert "cannot express per-model or per-dataset settings (lr)" in capsys.readouterr().err
