"""The documentation site builds strictly, a broken link fails that build, and the README's links into docs/ hold."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def mkdocs_build(root: Path, site: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of root/mkdocs.yml into site, as `make docs` runs it."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner: not a warning of ours
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", "mkdocs.yml",
                           "--site-dir", str(site)], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def nav_pages(nav) -> list[str]:
    """Every page of a MkDocs nav (nested sections included), as paths under docs/."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return [page for item in nav for page in nav_pages(item)]


def config() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_the_site_builds_strictly_with_every_page(tmp_path):
    done = mkdocs_build(ROOT, tmp_path / "site")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    cfg = config()
    assert cfg["use_directory_urls"] is False  # so docs/<page>.md is site/<page>.html
    pages = nav_pages(cfg["nav"])
    assert "index.md" in pages and len(pages) == len(set(pages))
    assert sorted(pages) == sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert (tmp_path / "site" / "index.html").is_file()
    for page in pages:
        assert (tmp_path / "site" / page).with_suffix(".html").is_file(), page


@pytest.mark.parametrize(("link", "named"), [("[x](no-such-page.md)", "no-such-page.md"),
                                              ("[x](runs.md#no-such-anchor)", "no-such-anchor")])
def test_a_broken_link_fails_the_strict_build(tmp_path, link, named):
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", copy / "docs")
    page = copy / "docs" / "getting-started.md"
    page.write_text(page.read_text() + f"\n{link}\n")
    done = mkdocs_build(copy, tmp_path / "site")
    assert done.returncode != 0
    assert named in done.stdout + done.stderr


def test_the_readme_links_into_docs_exist():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#[^)\s]*)?\)", readme)
    assert links, "the README links into the documentation"
    pages = nav_pages(config()["nav"])
    for link in links:
        assert (ROOT / link).is_file(), link
        assert link.removeprefix("docs/") in pages, f"{link} is not in mkdocs.yml's nav"
