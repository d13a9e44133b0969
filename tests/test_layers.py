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


def _own_imports() -> dict[str, set[str]]:
    """Each module of the package -> the modules of the package it imports (anywhere in
    it: at the top, under TYPE_CHECKING, or inside a function)."""
    import grimp  # import-linter's own graph builder

    graph = grimp.build_graph("deployhq_lite", cache_dir=None)
    return {
        module: {
            imported
            for imported in graph.find_modules_directly_imported_by(module)
            if imported.startswith("deployhq_lite")
        }
        for module in graph.modules
    }


def _reaches(edges: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def _cycles(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Each import ``a -> b`` where ``b`` leads back to ``a``: an edge of a cycle."""
    return sorted((a, b) for a, bs in edges.items() for b in bs if _reaches(edges, b, a))


def test_no_import_cycle_among_the_package_modules() -> None:
    assert _cycles(_own_imports()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [("a", "b"), ("b", "c"), ("c", "a")]


def _function_imports(path: Path) -> list[tuple[int, str]]:
    """(line, source) of each import inside a function of a module, but those under
    ``if TYPE_CHECKING:``."""
    import ast

    lines = path.read_text().splitlines()
    found: list[tuple[int, str]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if inside and isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child.lineno, lines[child.lineno - 1]))
            walk(child, inside)

    walk(ast.parse("\n".join(lines)), False)
    return found


def test_every_import_inside_a_function_says_why() -> None:
    """Imports inside functions stay only where they keep start-up fast or load an
    optional piece (paramiko for SSH servers only, say), each with a comment saying so
    on its line."""
    unexplained = [
        f"{path.relative_to(ROOT)}:{line}: {text.strip()}"
        for path in sorted((ROOT / "deployhq_lite").rglob("*.py"))
        for line, text in _function_imports(path)
        if "#" not in text
    ]
    assert unexplained == []


def test_no_subpackage_hides_a_public_name() -> None:
    """``import deployhq_lite.x`` sets the attribute ``x`` on the package: no module may
    be named like a public function (``dhq.deploy(...)`` must stay the function)."""
    top_level = {module.name for module in pkgutil.iter_modules(deployhq_lite.__path__)}
    assert top_level.isdisjoint(deployhq_lite.__all__)


def test_modules_stay_small_and_long_functions_say_why() -> None:
    """No module over 500 lines; a function over 60 lines opens with a comment saying
    why it is long (``# Longer than ...``)."""
    import ast

    too_long: list[str] = []
    for path in sorted((ROOT / "deployhq_lite").rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        where = path.relative_to(ROOT)
        if len(lines) > 500:
            too_long.append(f"{where}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            opening = lines[node.lineno : node.lineno + 12]
            if length > 60 and not any("# Longer than" in line for line in opening):
                too_long.append(f"{where}:{node.lineno}: {node.name} is {length} lines")
    assert too_long == []
