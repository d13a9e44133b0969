"""The store package's boundaries: SQL stays inside it, its parts share one connection."""

from __future__ import annotations

import ast
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

import deployhq_lite
from deployhq_lite.store import History, LockRecord
from deployhq_lite.store.sqlite import Database
from deployhq_lite.store.sqlite.queue import SqliteDeploymentQueue

PACKAGE = Path(deployhq_lite.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_sqlite3_is_imported_only_inside_the_store_package() -> None:
    users = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "sqlite3" in _imports(path)
    }
    assert users, "the scan found no sqlite3 user at all"
    assert {user for user in users if not user.startswith("store/")} == set()


def test_parts_of_the_history_share_one_connection(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    history = History(path)
    lock = LockRecord("website/production", "d1", "me@host:1", "2026-01-01T00:00:00Z")
    assert history.try_lock(lock) == (True, None)
    assert history.releases.query("site") == []
    history.close()
    with pytest.raises(sqlite3.ProgrammingError):  # the release history's connection too
        history.releases.query("site")
    with closing(Database(path)) as database:  # one part alone, on its own connection
        assert SqliteDeploymentQueue(database).find_lock("website/production") == lock
