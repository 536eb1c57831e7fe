"""Sweep files that could hurt the tool are refused in one line, exit 2, before anything is built or written: files
too large, not UTF-8, YAML aliases that expand without bound, grids of a billion runs, a study name that would put
the results folder outside the results."""

import pytest

from initbench.cli import main

GRID = "datasets: [digits]\nmodels: [mlp]\ninits: [zeros]\n"
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))


@pytest.mark.parametrize(("content", "message"), [
    (b"name: big\n" + b"# " + b"x" * (1 << 20) + b"\n", "bytes; a sweep file may hold at most 1,048,576"),
    (b"name: caf\xe9\n" + GRID.encode() + b"seeds: 1\n", "is not UTF-8 text: byte 0xe9 at offset 9"),
    ((GRID + "seeds: 1\n" + LAUGHS).encode(), "its YAML aliases expand to "),
    ((GRID + "seeds: 1000000000\n").encode(), "the grid has 1,000,000,000 runs (seeds x datasets x models x inits)"),
    ((GRID + "seeds: 4294967296\n").encode(), "the grid has 4,294,967,296 runs"),
    ((GRID + "seeds: 1\nname: ../../escaped\n").encode(), "the study name '../../escaped' must be a plain folder name"),
    ((GRID + "seeds: 1\nname: ..\n").encode(), "the study name '..' must be a plain folder name"),
    (GRID.replace("[mlp]", "['simplecnn(channels=[8, 0])']").encode() + b"seeds: 1\n",
     "model 'simplecnn': channels must be a list of positive integers, got [8, 0]"),
    ((GRID + "seeds: 1\ntrain: {val_fraction: 0.9999}\n").encode(), "--val-fraction 0.9999 leaves 0 training"),
], ids=["over-1MiB", "latin-1", "billion-laughs", "billion-seeds", "2^32-seeds", "escaping-name", "dot-dot-name",
        "zero-width-layer", "no-training-split"])
def test_a_hostile_sweep_file_is_one_line_and_writes_nothing(content, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "inside" / "deep" / "hostile.yaml"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["sweep", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no folder, no file


def test_aliases_that_stay_small_are_welcome(tmp_path):
    path = tmp_path / "anchored.yaml"
    path.write_text("name: anchored\ndatasets: [digits]\nmodels: [mlp]\ninits: &schemes [zeros, orthogonal]\n"
                    "seeds: 1\nbaseline: zeros\ndescription: *schemes\n")
    assert main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "out")]) == 0


def test_a_report_cut_short_is_found_and_its_leftovers_removed(tmp_path):
    """A report moves its files into place from a hidden folder, report.json (each file's checksum) last: a kill
    between the renames is found by generation_mismatch, and the next report removes the hidden folders whose
    process is gone (a report being written by a live process keeps its own)."""
    import os

    from initbench.report import generation_mismatch, write_report

    (tmp_path / "s.yaml").write_text("name: s\n" + GRID + "seeds: 2\ntrain: {epochs: 1, batch_size: 32, "
                                     "limit_train: 64, limit_val: 32, limit_test: 32}\n")
    out = tmp_path / "out"
    assert main(["sweep", str(tmp_path / "s.yaml"), "--out", str(out), "--no-progress"]) == 0
    assert generation_mismatch(out) == []
    dead, old, live = out / ".report-4194400-x", out / ".report-k2j3h", out / f".report-{os.getpid()}-y"
    for stage in (dead, old, live):
        stage.mkdir()
        (stage / "report.md").write_text("half")
    (out / "report.md").write_text("a newer generation's file")  # as a kill between the renames leaves it
    assert generation_mismatch(out) == ["report.md"]
    write_report(out)
    assert generation_mismatch(out) == [] and not dead.exists() and not old.exists() and live.exists()


@pytest.mark.parametrize(("dataset", "model"), [("../../etc", "mlp"), ("/abs", "mlp"), ("..", "mlp"),
                                                ("digits", "pkg.mod:build")])
def test_a_record_path_stays_under_the_results_folder(dataset, model, tmp_path):
    from initbench.record import run_dir_for
    from initbench.spec import RunSpec

    out = tmp_path / "out"
    path = run_dir_for(RunSpec(dataset=dataset, model=model), out)
    assert path.parent.parent == out and ".." not in path.parts[len(out.parts):]
