"""The README and the pages it leads to stay true: the loss documentation (docs/methods.md)
matches the code and its example runs; the make targets and commands named exist."""

from __future__ import annotations

import contextlib
import inspect
import io
import math
import re
from pathlib import Path

from clusterbench.__main__ import COMMANDS
from clusterbench.methods.self_distillation import losses
from tests.helpers import ROOT

README = ROOT / "README.md"
METHODS = ROOT / "docs" / "methods.md"
MAKEFILE = ROOT / "Makefile"


def _section(path: Path, title: str) -> str:
    """From the heading `title` to the next heading of the same or a higher level (or the end)."""
    text = path.read_text()
    start = text.index(title)
    level = len(title) - len(title.lstrip("#"))
    following = re.search(rf"^#{{1,{level}}} ", text[start + len(title) :], flags=re.MULTILINE)
    end = len(text) if following is None else start + len(title) + following.start()
    return text[start:end]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def _loss_section() -> str:
    return _section(METHODS, "## The losses as a library")


def _documented_signatures() -> dict[str, list[tuple[str, str | None]]]:
    """name -> [(parameter, default or None)] from lines like `f(a, b=1.0) -> (H,)`."""
    out = {}
    for line in _python_blocks(_loss_section())[0].splitlines():
        match = re.match(r"(\w+)\((.*)\) ->", line)
        if not match:
            continue
        params = []
        for part in match.group(2).split(","):
            name, _, default = part.strip().partition("=")
            params.append((name, default or None))
        out[match.group(1)] = params
    return out


def test_docs_list_the_public_loss_signatures():
    documented = _documented_signatures()
    assert set(documented) == {"temi_loss", "scan_loss", "update_prior"}
    for name, params in documented.items():
        actual = inspect.signature(getattr(losses, name)).parameters.values()
        expected = [
            (p.name, None if p.default is inspect.Parameter.empty else repr(p.default))
            for p in actual
        ]
        assert params == expected, f"docs/methods.md signature of {name} is out of date"


def test_docs_loss_example_runs_and_prints_finite_losses():
    example = _python_blocks(_loss_section())[1]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(example, "docs/methods.md example", "exec"), {})
    values = [float(v) for v in re.findall(r"tensor\(([-0-9.e]+)\)", printed.getvalue())]
    assert len(values) == 2, printed.getvalue()
    assert all(math.isfinite(v) for v in values)
    # SCANv2's loss is a cross-entropy (>= 0) plus alpha times a negative entropy (>= -log C).
    assert values[1] >= -5.0 * math.log(10) - 1e-4


def _make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", MAKEFILE.read_text(), flags=re.MULTILINE))


def test_every_make_target_named_in_the_docs_exists():
    targets = _make_targets()
    for page in [README, *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text()
        blocks = "\n".join(re.findall(r"^```.*?^```", text, flags=re.DOTALL | re.MULTILINE))
        # `make demo` in a sentence, or a command line of a code block
        named = set(re.findall(r"`make ([a-z][\w-]*)", text))
        named |= set(re.findall(r"^make ([a-z][\w-]*)", blocks, flags=re.MULTILINE))
        assert named <= targets, f"{page.name} names missing make targets: {named - targets}"


def test_readme_quick_start_is_make_demo_and_make_test():
    quick_start = _section(README, "## Quick start")
    block = re.search(r"```bash\n(.*?)```", quick_start, flags=re.DOTALL).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    assert {"demo", "test"} <= _make_targets()


def test_readme_command_list_is_the_cli():
    section = _section(README, "## Commands")
    line = re.search(r"^Commands: (.*?);", section, flags=re.MULTILINE | re.DOTALL).group(1)
    listed = re.findall(r"`(\w+)`", line)
    assert listed == list(COMMANDS), "README's command list differs from clusterbench.__main__"


def test_docs_command_table_is_the_cli():
    table = _section(README.parent / "docs" / "index.md", "## One front door")
    listed = re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE)
    assert listed == list(COMMANDS), "docs/index.md's command table differs from the CLI"
