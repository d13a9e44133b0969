"""The import-linter contracts in pyproject.toml: found and kept by ``lint-imports``, and
the "only X imports Y" contracts name every other top-level module of the package."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import deployhq_lite
import deployhq_lite.transports

ROOT = Path(__file__).resolve().parent.parent

# Each of these contracts lists, as source modules, every top-level module but these.
EXEMPT = {
    "pygit2-only-in-git": {"git"},
    "sqlite3-only-in-store": {"store"},
    "paramiko-only-in-ssh": {"transports"},  # and transports.ssh, listed apart
    "cli-is-the-top": {"cli", "__main__"},
    "testing-is-for-tests": {"testing"},
}


def _contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert config["root_package"] == "deployhq_lite"
    contracts: list[dict[str, Any]] = config["contracts"]
    return contracts


def test_lint_imports_finds_and_keeps_every_contract() -> None:
    contracts = _contracts()
    lint_imports = Path(sys.executable).with_name("lint-imports")  # the dev extra's
    done = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Contracts: {len(contracts)} kept, 0 broken." in done.stdout


@pytest.mark.parametrize("contract_id", sorted(EXEMPT))
def test_only_contracts_name_every_other_top_level_module(contract_id: str) -> None:
    contract = {c["id"]: c for c in _contracts()}[contract_id]
    listed = {name.removeprefix("deployhq_lite.") for name in contract["source_modules"]}
    top_level = {module.name for module in pkgutil.iter_modules(deployhq_lite.__path__)}
    assert {name for name in listed if "." not in name} == top_level - EXEMPT[contract_id]


def test_paramiko_contract_names_every_transport_but_ssh() -> None:
    contract = {c["id"]: c for c in _contracts()}["paramiko-only-in-ssh"]
    listed = {name for name in contract["source_modules"] if name.count(".") == 2}
    transports = {
        f"deployhq_lite.transports.{module.name}"
        for module in pkgutil.iter_modules(deployhq_lite.transports.__path__)
    }
    assert listed == transports - {"deployhq_lite.transports.ssh"}
