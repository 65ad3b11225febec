"""The README's loss documentation stays true: its signatures match the code and its example runs."""

from __future__ import annotations

import contextlib
import inspect
import io
import math
import re
from pathlib import Path

import pytest

from clusterbench.methods.self_distillation import losses

README = Path(__file__).resolve().parent.parent / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(title)
    end = text.index("\n## ", start)
    return text[start:end]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def _documented_signatures() -> dict[str, list[tuple[str, str | None]]]:
    """name -> [(parameter, default or None)] from lines like `f(a, b=1.0) -> (H,)`."""
    out = {}
    for line in _python_blocks(_section("### The losses as a library"))[0].splitlines():
        match = re.match(r"(\w+)\((.*)\) ->", line)
        if not match:
            continue
        params = []
        for part in match.group(2).split(","):
            name, _, default = part.strip().partition("=")
            params.append((name, default or None))
        out[match.group(1)] = params
    return out


def test_readme_lists_the_public_loss_signatures():
    documented = _documented_signatures()
    assert set(documented) == {"temi_loss", "scan_loss", "update_prior"}
    for name, params in documented.items():
        actual = inspect.signature(getattr(losses, name)).parameters.values()
        expected = [
            (p.name, None if p.default is inspect.Parameter.empty else repr(p.default))
            for p in actual
        ]
        assert params == expected, f"README signature of {name} is out of date"


def test_readme_loss_example_runs_and_prints_finite_losses():
    example = _python_blocks(_section("### The losses as a library"))[1]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(example, "README example", "exec"), {})
    values = [float(v) for v in re.findall(r"tensor\(([-0-9.e]+)\)", printed.getvalue())]
    assert len(values) == 2, printed.getvalue()
    assert all(math.isfinite(v) for v in values)
    # SCANv2's loss is a cross-entropy (>= 0) plus alpha times a negative entropy (>= -log C).
    assert values[1] >= -5.0 * math.log(10) - 1e-4


@pytest.mark.parametrize("make_target", ["install", "demo", "test", "bench"])
def test_readme_quick_start_names_existing_make_targets(make_target):
    makefile = (README.parent / "Makefile").read_text()
    assert re.search(rf"^{make_target}:", makefile, flags=re.MULTILINE)
    assert f"make {make_target}" in README.read_text()
