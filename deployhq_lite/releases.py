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

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from .config import Destination, UserConfig
from .deployments import new_deployment, run_deployment
from .documents import Catalog, delivery_tree, stack_catalog
from .errors import (
    DeployHQLiteError,
    ReleaseRefusedError,
    ReleaseRollbackNotAllowedError,
    UnknownNameError,
)
from .locking import server_lock
from .log import get_logger
from .records import (
    Deployment,
    DeploymentMode,
    ItemAction,
    ItemOutcome,
    PublishEvent,
    Release,
    ReleaseItem,
    utcnow,
)

if TYPE_CHECKING:
    from .context import Context

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
    deployment = new_deployment(
        ctx,
        destination.project,
        environment,
        end_revision=catalog.head,
        end_tree=tree,
        branch=destination.branch,
        mode=DeploymentMode.QUEUE,
    )
    ctx.history.add_publish_events(
        deployment.identifier,
        [
            PublishEvent(stack, environment, c.locale, c.uid, c.version, user, origin, release)
            for c in changes
        ],
    )
    log.info(
        "stack.publish",
        stack=stack,
        environment=environment,
        user=user,
        origin=origin,
        changes=len(changes),
    )
    if before_run is not None:
        before_run(deployment)
    done = run_deployment(ctx, deployment)
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


# -- releases ----------------------------------------------------------------------------------


def _refuse(message: str, code: str) -> ReleaseRefusedError:
    return ReleaseRefusedError(message, code=code)


def get_release(ctx: Context, stack: str, uid: str, user: str | None) -> Release:
    """A release the user may see (a non-admin sees only their own rollback releases)."""
    name, config = ctx.settings.get_user(user)
    ctx.settings.get_stack(stack)
    release = ctx.releases.find(uid)
    if (
        release is None
        or release.stack != stack
        or release.deleted_at is not None
        or (release.is_rollback and not config.is_admin and release.creator != name)
    ):
        raise _refuse(f"release {uid!r} not found in stack {stack!r}", "not_found")
    return release


def list_releases(ctx: Context, stack: str, user: str | None) -> list[Release]:
    name, config = ctx.settings.get_user(user)
    ctx.settings.get_stack(stack)
    return [
        r
        for r in ctx.releases.query(stack)
        if not r.is_rollback or config.is_admin or r.creator == name
    ]


def create_release(ctx: Context, stack: str, name: str, user: str | None) -> Release:
    creator, _ = ctx.settings.get_user(user)
    ctx.settings.get_stack(stack)
    if not name.strip():
        raise _refuse("a release needs a name", "invalid")
    release = Release(uuid.uuid4().hex[:20], stack, name, creator)
    log.info("release.created", stack=stack, release=release.uid, user=creator)
    return ctx.releases.add(release)


def add_item(
    ctx: Context,
    stack: str,
    release_uid: str,
    uid: str,
    *,
    user: str | None,
    version: int | None = None,
    locales: list[str] | None = None,
    action: str = ItemAction.PUBLISH,
    with_references: bool = False,
) -> Release:
    """Add a document (version resolved now; default latest), and with references the
    documents it references, recursively, at their latest versions."""
    release = get_release(ctx, stack, release_uid, user)
    if release.is_rollback:
        raise _refuse(
            f"release {release_uid!r} is a rollback release: its items are read-only",
            "rollback_release_read_only",
        )
    if release.deployed:
        raise _refuse(
            f"release {release_uid!r} was deployed: its items are locked (deploy it again, "
            "or create a new release)",
            "release_locked",
        )
    try:
        kind = ItemAction(action)
    except ValueError:
        raise _refuse(f"action must be publish or unpublish, not {action!r}", "invalid") from None
    catalog = stack_catalog(ctx, stack)
    document = catalog.get(uid)
    number = document.version(version).number if version else document.latest
    if kind is ItemAction.PUBLISH:
        catalog.files(uid, number)  # a deleted version cannot be published
    wanted = tuple(dict.fromkeys(locales or []))
    known = {loc for e in ctx.settings.get_stack(stack).environments.values() for loc in e.locales}
    for locale in wanted:
        if locale not in known:
            raise UnknownNameError("locale", locale, known, scope=f"stack {stack!r}")
    items = {item.uid: item for item in release.items}
    items[uid] = ReleaseItem(uid, number if kind is ItemAction.PUBLISH else None, kind, wanted)
    if with_references and kind is ItemAction.PUBLISH:
        for ref in _references(catalog, uid, number):
            if ref not in items:
                latest = catalog.get(ref).latest
                items[ref] = ReleaseItem(ref, latest, ItemAction.PUBLISH, wanted, reference=True)
    ctx.releases.set_items(release.uid, list(items.values()))
    return get_release(ctx, stack, release_uid, user)


def _references(catalog: Catalog, uid: str, version: int) -> list[str]:
    """Documents referenced from ``uid`` (recursively, at their latest versions)."""
    found: list[str] = []
    queue = [(uid, version)]
    seen = {uid}
    while queue:
        current, number = queue.pop(0)
        if catalog.get(current).versions[number - 1].path is None:
            continue
        for ref in catalog.references(current, number):
            if ref in seen or ref not in catalog.documents:
                continue
            seen.add(ref)
            found.append(ref)
            queue.append((ref, catalog.get(ref).latest))
    return found


def deploy_release(
    ctx: Context,
    stack: str,
    release_uid: str,
    *,
    environment: str,
    user: str | None,
    locales: list[str] | None = None,
    schedule_at: str | None = None,
) -> PublishResult | Release:
    """Deploy a release (or schedule it: the release is returned); a rollback release
    restores what its original found, document by document, where nothing changed."""
    name, config = ctx.settings.get_user(user)
    release = get_release(ctx, stack, release_uid, name)
    check_may_deploy(name, config, stack, environment)
    targets = locales_of(ctx, stack, environment, list(locales or []))
    if release.is_rollback:
        if schedule_at is not None:
            raise _refuse(
                "a rollback release cannot be scheduled; deploy it now",
                "rollback_release_not_schedulable",
            )
        if release.creator != name and not config.is_admin:
            raise _refuse(
                f"rollback release {release.uid!r} may be deployed only by "
                f"{release.creator!r} or an admin",
                "forbidden",
            )
        return _deploy_rollback(ctx, release, environment, targets, name)
    if schedule_at is not None:
        when = _parse_time(schedule_at)
        schedule = json.dumps({"environment": environment, "locales": targets, "user": name})
        ctx.releases.update(
            release.uid, scheduled_at=when, schedule=schedule, schedule_status="pending"
        )
        return get_release(ctx, stack, release.uid, name)
    if not release.items:
        raise _refuse(f"release {release.uid!r} has no items", "invalid")
    return _deploy_items(ctx, release, environment, targets, name)


def _deploy_items(
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


def _deploy_rollback(
    ctx: Context, release: Release, environment: str, targets: list[str], user: str
) -> PublishResult:
    assert release.rollback_of is not None
    captured = ctx.releases.captures(release.rollback_of, release.creator, environment)
    if not captured:
        raise _refuse(
            f"release {release.rollback_of!r} was never deployed to {environment!r} by "
            f"{release.creator!r}: there is nothing to roll back there",
            "no_capture_for_environment",
        )

    def plan() -> tuple[list[PublishChange], list[ItemResult] | None]:
        # under the publish lock: what was published since is final
        latest = ctx.history.published(release.stack, environment)
        changes: list[PublishChange] = []
        items: list[ItemResult] = []
        for item in release.items:
            for locale in [t for t in targets if not item.locales or t in item.locales]:
                key = (locale, item.uid)
                before = captured.get(key, -1)
                event = latest.get(key)
                if before == -1:
                    why = f"not deployed in {locale} by the original release"
                elif (
                    event is None
                    or event.release != release.rollback_of
                    or event.origin != "release"
                ):
                    why = _changed_since(event)
                else:
                    version = before if isinstance(before, int) else None
                    changes.append(PublishChange(item.uid, locale, version))
                    items.append(ItemResult.applied(item.uid, locale, version))
                    continue
                action = ItemAction.UNPUBLISH if before is None else ItemAction.PUBLISH
                items.append(ItemResult(item.uid, locale, action, ItemOutcome.SKIPPED, None, why))

        return changes, items

    def record(deployment: Deployment) -> None:
        ctx.releases.record_deploy(release.uid, user, environment, deployment.identifier, [])

    return publish(
        ctx,
        release.stack,
        environment,
        plan,
        user=user,
        origin="rollback",
        release=release.uid,
        before_run=record,
    )


def _changed_since(event: PublishEvent | None) -> str:
    if event is None:
        return "its published state changed since the release was deployed"
    what = "unpublished" if event.version is None else f"published (version {event.version})"
    by = {"entry": "by hand", "rollback": "by a rollback", "release": "by another release"}
    return (
        f"{what} {by.get(event.origin, '')} by {event.user} at {event.created_at}, after the "
        "release was deployed; it keeps that newer state"
    )


def rollback_release(ctx: Context, stack: str, release_uid: str, user: str | None) -> Release:
    """The user's rollback release of a deployed release: made once, then returned."""
    name, _ = ctx.settings.get_user(user)
    original = get_release(ctx, stack, release_uid, name)
    if original.is_rollback:
        raise ReleaseRollbackNotAllowedError(
            f"release {release_uid!r} is a rollback release; it cannot be rolled back",
            code="cannot_rollback_rollback_release",
        )
    deploys = ctx.releases.completed_deploys(original.uid, name)
    if not deploys:
        pending = (
            " (it is scheduled and has not run yet)"
            if original.schedule_status == "pending"
            else ""
        )
        raise ReleaseRollbackNotAllowedError(
            f"release {release_uid!r} has not been deployed by {name!r}{pending}: only a "
            "deployed release can be rolled back",
            code="release_not_deployed",
        )
    mine = ctx.releases.rollbacks_of(original.uid, name)
    live = [r for r in mine if r.deleted_at is None]
    if live:
        return live[0]
    deleted = [r.deleted_at for r in mine if r.deleted_at is not None]
    if deleted and not ctx.releases.completed_deploys(original.uid, name, since=max(deleted)):
        raise ReleaseRollbackNotAllowedError(
            f"your rollback release of {release_uid!r} was deleted: deploy the release again "
            "before creating another rollback release",
            code="redeploy_required",
        )
    rollback = Release(
        uuid.uuid4().hex[:20],
        stack,
        f"Rollback of {original.name}",
        name,
        kind="rollback",
        rollback_of=original.uid,
        items=original.items,
    )
    log.info("release.rollback_created", stack=stack, release=original.uid, user=name)
    return ctx.releases.add(rollback)


def delete_release(ctx: Context, stack: str, release_uid: str, user: str | None) -> Release:
    """Delete a release (its creator or an admin); live content is never touched."""
    name, config = ctx.settings.get_user(user)
    release = get_release(ctx, stack, release_uid, name)
    if release.creator != name and not config.is_admin:
        raise _refuse(
            f"release {release_uid!r} may be deleted only by {release.creator!r} or an admin",
            "forbidden",
        )
    ctx.releases.update(release.uid, deleted_at=utcnow())
    return replace(release, deleted_at=utcnow())


def run_due(ctx: Context, *, now: str | None = None) -> list[tuple[Release, str]]:
    """Deploy every scheduled release that is due; (release, outcome) for each."""
    done: list[tuple[Release, str]] = []
    for release in ctx.releases.due(now or utcnow()):
        schedule = json.loads(release.schedule or "{}")
        try:
            _deploy_items(
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
        raise _refuse(f"--schedule-at {text!r} is not an ISO 8601 time", "invalid") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
