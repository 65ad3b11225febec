"""Shared test helpers: stores, composed configs, subprocess runs, the 7-class tree, settings.

Tests import from here, never from one another; `tests/conftest.py` turns some into fixtures.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: README.md, docs/, Makefile
FIXTURES = ROOT / "tests" / "fixtures"
