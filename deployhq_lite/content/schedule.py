"""Scheduled releases: a release deploy set for a time, run by a queue worker when due."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..errors import DeployHQLiteError, ReleaseRefusedError
from ..records import Release, utcnow
from .publish import deploy_items

if TYPE_CHECKING:
    from ..context import Context


def schedule_release(
    ctx: Context, release: Release, environment: str, targets: list[str], user: str, at: str
) -> None:
    """Set ``release`` to be deployed to ``environment``'s ``targets`` locales at ``at``
    (ISO 8601; without a zone: UTC) by a queue worker, as ``user``."""
    when = _parse_time(at)
    schedule = json.dumps({"environment": environment, "locales": targets, "user": user})
    ctx.releases.update(
        release.uid, scheduled_at=when, schedule=schedule, schedule_status="pending"
    )


def run_due(ctx: Context, *, now: str | None = None) -> list[tuple[Release, str]]:
    """Deploy every scheduled release that is due; (release, outcome) for each."""
    done: list[tuple[Release, str]] = []
    for release in ctx.releases.due(now or utcnow()):
        schedule = json.loads(release.schedule or "{}")
        try:
            deploy_items(
                ctx, release, schedule["environment"], schedule["locales"], schedule["user"]
            )
        except DeployHQLiteError as exc:
            ctx.releases.update(release.uid, schedule_status="failed")
            done.append((release, f"failed: {exc}"))
            continue
        ctx.releases.update(release.uid, schedule_status="done")
        done.append((release, "deployed"))
    return done


def _parse_time(text: str) -> str:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReleaseRefusedError(
            f"--schedule-at {text!r} is not an ISO 8601 time", code="invalid"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
