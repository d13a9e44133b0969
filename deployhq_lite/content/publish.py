"""The Contentstack model: publishing documents of a stack to environments.

An environment's published state is the latest completed publish event per (locale,
document). Every publish operation (an entry published, unpublished or rolled back; a
release deployed) is one deployment of the ctx: the new state's delivery tree is
the end snapshot, so diff, apply, lock and marker are the deployment machinery's. Its
events are recorded with it and count once it completed: state never runs ahead of the
delivery target.

A release deploy records, per (release, user, environment, locale, document), the state
it found (the first completed deploy by that user wins); a rollback release restores
that state where nothing else changed it since (see :func:`deploy_release`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..config import Destination, UserConfig
from ..errors import ReleaseRefusedError, UnknownNameError
from ..locking import server_lock
from ..log import get_logger
from ..records import Deployment, ItemAction, ItemOutcome, PublishEvent, Release
from .documents import delivery_tree, stack_catalog

if TYPE_CHECKING:
    from ..context import Context

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PublishChange:
    uid: str
    locale: str
    version: int | None  # None: unpublish


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What one publish operation did to one document in one locale."""

    uid: str
    locale: str
    action: ItemAction
    result: ItemOutcome
    version: int | None = None
    reason: str | None = None

    @classmethod
    def applied(cls, uid: str, locale: str, version: int | None) -> ItemResult:
        """A document published at ``version``, or unpublished (None)."""
        if version is None:
            return cls(uid, locale, ItemAction.UNPUBLISH, ItemOutcome.UNPUBLISHED)
        return cls(uid, locale, ItemAction.PUBLISH, ItemOutcome.PUBLISHED, version)

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "locale": self.locale,
            "action": self.action.value,
            "result": self.result.value,
            "version": self.version,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class PublishResult:
    deployment: Deployment | None  # None when nothing was to be done
    items: tuple[ItemResult, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment.identifier if self.deployment else None,
            "status": self.deployment.status.value if self.deployment else "completed",
            "items": [item.to_json() for item in self.items],
        }


def check_may_deploy(user: str, config: UserConfig, stack: str, environment: str) -> None:
    if config.is_admin or environment in config.environments:
        return
    raise ReleaseRefusedError(
        f"user {user!r} may not deploy to environment {environment!r} of stack {stack!r}",
        code="forbidden",
    )


def locales_of(ctx: Context, stack: str, environment: str, wanted: list[str]) -> list[str]:
    """``wanted`` checked against the environment's locales (all of them when empty)."""
    known = ctx.settings.get_environment(stack, environment).locales
    for locale in wanted:
        if locale not in known:
            raise UnknownNameError(
                "locale", locale, known, scope=f"environment {environment!r} of stack {stack!r}"
            )
    return list(dict.fromkeys(wanted)) or list(known)


def published_versions(ctx: Context, stack: str, environment: str) -> dict[tuple[str, str], int]:
    """(locale, uid) -> version, for every document published in the environment."""
    return {
        key: event.version
        for key, event in ctx.history.published(stack, environment).items()
        if event.version is not None
    }


Planner = Callable[[], tuple[list[PublishChange], list[ItemResult] | None]]


def publish(
    ctx: Context,
    stack: str,
    environment: str,
    changes: list[PublishChange] | Planner,
    *,
    user: str,
    origin: str,
    release: str | None = None,
    items: list[ItemResult] | None = None,
    before_run: Callable[[Deployment], None] | None = None,
) -> PublishResult:
    """Apply publish/unpublish changes to an environment as one deployment.

    ``changes`` may be a planner, called under the lock, returning the changes and the
    items to report (default: one per change); ``before_run`` is called with the
    recorded deployment before it runs (to record what it captures). The environment's
    publish lock is held from reading its state to recording the result, so two
    publishers never build on the same state.
    """
    destination = ctx.settings.destination(Destination.stack_project(stack), environment)
    with server_lock(
        ctx.history, f"{destination.key}#publish", f"publish-{uuid.uuid4()}", break_stale=True
    ):
        return _publish_locked(
            ctx, stack, destination, changes, user, origin, release, items, before_run
        )


def _publish_locked(
    ctx: Context,
    stack: str,
    destination: Destination,
    planned: list[PublishChange] | Planner,
    user: str,
    origin: str,
    release: str | None,
    items: list[ItemResult] | None,
    before_run: Callable[[Deployment], None] | None,
) -> PublishResult:
    environment = destination.server
    changes, planned_items = planned() if callable(planned) else (planned, None)
    items = items if planned_items is None else planned_items
    if not changes:
        return PublishResult(None, tuple(items or ()))
    catalog = stack_catalog(ctx, stack)
    state = published_versions(ctx, stack, environment)
    new = dict(state)
    reported: list[ItemResult] = []
    for change in changes:
        key = (change.locale, change.uid)
        if change.version is None:
            new.pop(key, None)
        else:
            catalog.files(change.uid, change.version)  # refuses a deleted version early
            new[key] = change.version
        reported.append(ItemResult.applied(change.uid, change.locale, change.version))
    tree = ctx.snapshots.repo.build_tree(delivery_tree(catalog, new))
    log.info(
        "stack.publish",
        stack=stack,
        environment=environment,
        user=user,
        origin=origin,
        changes=len(changes),
    )

    def recorded(deployment: Deployment) -> None:
        ctx.history.add_publish_events(
            deployment.identifier,
            [
                PublishEvent(stack, environment, c.locale, c.uid, c.version, user, origin, release)
                for c in changes
            ],
        )
        if before_run is not None:
            before_run(deployment)

    done = ctx.deliver(destination, end_revision=catalog.head, end_tree=tree, before_run=recorded)
    return PublishResult(done, tuple(reported if items is None else items))


def entry_change(
    ctx: Context,
    stack: str,
    uid: str,
    *,
    environment: str,
    locales: list[str],
    version: int | Literal["latest"] | None,
    user: str | None,
    rollback: bool = False,
) -> PublishResult:
    """``entries publish`` (version or latest), ``unpublish`` (None) and ``rollback``
    (a version that was published there before: a publish event like any other)."""
    name, config = ctx.settings.get_user(user)
    check_may_deploy(name, config, stack, environment)
    targets = locales_of(ctx, stack, environment, locales)
    document = stack_catalog(ctx, stack).get(uid)
    if version == "latest":
        version = document.latest
    if version is not None:
        document.version(version)
    if rollback:
        assert version is not None
        for locale in targets:
            seen = ctx.history.published_versions_of(stack, environment, locale, uid)
            if version not in seen:
                raise ReleaseRefusedError(
                    f"version {version} of {uid!r} was never published in "
                    f"{environment}/{locale} (published there: "
                    f"{', '.join(map(str, seen)) or 'none'})",
                    code="not_found",
                )
    changes = [PublishChange(uid, locale, version) for locale in targets]
    return publish(
        ctx, stack, environment, changes, user=name, origin="rollback" if rollback else "entry"
    )


def deploy_items(
    ctx: Context, release: Release, environment: str, targets: list[str], user: str
) -> PublishResult:
    changes = [
        PublishChange(item.uid, locale, item.version)
        for item in release.items
        for locale in targets
        if not item.locales or locale in item.locales
    ]

    def record(deployment: Deployment) -> None:
        # under the publish lock: the state this deployment starts from
        current = published_versions(ctx, release.stack, environment)
        captures = [(c.locale, c.uid, current.get((c.locale, c.uid))) for c in changes]
        ctx.releases.record_deploy(release.uid, user, environment, deployment.identifier, captures)

    return publish(
        ctx,
        release.stack,
        environment,
        changes,
        user=user,
        origin="release",
        release=release.uid,
        before_run=record,
    )
