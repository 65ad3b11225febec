"""The documentation site builds, names every module of the package, and points at real files."""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"
PACKAGE = ROOT / "clusterbench"
ARCHITECTURE = DOCS / "architecture.md"

# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", flags=re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _prose(path: Path) -> str:
    """The Markdown without code: links inside code blocks or spans are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", path.read_text()))


def _relative_links(path: Path) -> list[str]:
    targets = LINK.findall(_prose(path))
    return [t for t in targets if not re.match(r"^(?:[a-z][a-z0-9+.-]*:|#|//)", t)]


@pytest.mark.slow  # a subprocess
def test_mkdocs_build_is_strict_clean(tmp_path):
    # mkdocs and mkdocs-material come with the dev extra, as pytest does (make install)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "architecture" / "index.html").is_file()


def test_mkdocs_nav_lists_every_page():
    nav = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r":\s*([\w/.-]+\.md)\s*$", nav, flags=re.MULTILINE))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert listed == pages


def _modules() -> list[str]:
    """Every module of the package but __init__.py, by its path relative to clusterbench/."""
    return sorted(
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    )


def _packages() -> list[str]:
    """Every directory of the package that holds Python code, as `name/` relative to it."""
    return sorted(
        {
            p.parent.relative_to(PACKAGE).as_posix() + "/"
            for p in PACKAGE.rglob("*.py")
            if p.parent != PACKAGE and "__pycache__" not in p.parts
        }
    )


def test_architecture_names_every_module():
    text = ARCHITECTURE.read_text()
    missing = [m for m in _modules() if f"`{m}`" not in text]
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_architecture_names_every_package():
    text = ARCHITECTURE.read_text()
    missing = [p for p in _packages() if f"`{p}`" not in text]
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_architecture_names_no_module_that_is_gone():
    text = ARCHITECTURE.read_text()
    named = set(re.findall(r"`([\w/]+\.py)`", text))
    gone = sorted(m for m in named if not (PACKAGE / m).is_file() and not (ROOT / m).is_file())
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


def test_readme_is_one_screen():
    lines = README.read_text().splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_files(page):
    broken = []
    for target in _relative_links(page):
        path = target.split("#", 1)[0]
        if path and not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_readme_picture_is_small_and_committed_under_docs_assets():
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README.read_text())
    assert images, "README.md shows no picture"
    for image in images:
        path = README.parent / image
        assert path.parent == DOCS / "assets" and path.suffix == ".png"
        assert path.stat().st_size < 150_000, f"{image} is {path.stat().st_size} bytes"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_named_package_files_exist(page):
    """Paths such as `clusterbench/conf/method/kmeans.yaml` or `conf/probe.yaml` are real."""
    missing = []
    for path in re.findall(
        r"`((?:clusterbench/)?conf/[^`\s]*|clusterbench/[^`\s]*)`", page.read_text()
    ):
        if re.search(r"[<{]", path):
            continue
        full = ROOT / path if path.startswith("clusterbench/") else PACKAGE / path
        if not glob.glob(str(full)):
            missing.append(path)
    assert not missing, f"{page.relative_to(ROOT)} names missing files: {missing}"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_m_modules_exist(page):
    missing = [
        module
        for module in re.findall(r"python -m (clusterbench(?:\.\w+)+)", page.read_text())
        if importlib.util.find_spec(module) is None
    ]
    assert not missing, f"{page.relative_to(ROOT)} runs modules that do not exist: {missing}"
