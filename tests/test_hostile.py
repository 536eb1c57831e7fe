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
], ids=["over-1MiB", "latin-1", "billion-laughs", "billion-seeds", "2^32-seeds", "escaping-name", "dot-dot-name"])
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
