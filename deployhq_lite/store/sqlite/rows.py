"""Deployment rows <-> :class:`~deployhq_lite.records.Deployment` values."""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

from ...records import UNFINISHED, Deployment, DeploymentMode, DeploymentStatus

FIELDS = [f.name for f in dataclasses.fields(Deployment)]
COLUMNS = [name if name != "group" else "group_id" for name in FIELDS if name != "seq"]
FLAGS = (
    "copy_config_files",
    "run_build_commands",
    "config_files_only",
    "repair",
    "full",
    "delete_extra",
    "adopted",
)
UNFINISHED_VALUES = tuple(sorted(status.value for status in UNFINISHED))  # "IN (?, ?, ?)"


def to_sql(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def deployment_values(deployment: Deployment) -> list[Any]:
    """The values of :data:`COLUMNS`, in order."""
    return [to_sql(getattr(deployment, name)) for name in FIELDS if name != "seq"]


def from_row(row: sqlite3.Row) -> Deployment:
    data = dict(zip(row.keys(), row, strict=True))
    data["group"] = data.pop("group_id")
    data["status"] = DeploymentStatus(data["status"])
    data["mode"] = DeploymentMode(data["mode"])
    for flag in FLAGS:
        data[flag] = bool(data[flag])
    return Deployment(**{name: data[name] for name in FIELDS})
