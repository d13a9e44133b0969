"""pyproject.toml as the build backend reads it: no deprecated metadata (a warning that
every ``pip install`` prints, and an error once setuptools drops the old forms)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_metadata_reads_without_deprecation_warnings() -> None:
    # setuptools warns (here: fails, filterwarnings=error) on `license = { text = ... }`.
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert dist.metadata.license_expression == "MIT"


def test_build_backend_understands_the_license_expression() -> None:
    """An SPDX ``license`` string needs setuptools 77 to build."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "setuptools>=77" in pyproject["build-system"]["requires"]
