"""Contentstack's releases: lists of documents deployed to an environment together, and
rollback releases that restore, document by document, what a deploy found there.

A release deploy records, per (release, user, environment, locale, document), the state
it found (the first completed deploy by that user wins); a rollback release restores
that state where nothing else changed it since (see :func:`deploy_release`). Who may see,
deploy, roll back and delete a release is decided here too.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import ReleaseRefusedError, ReleaseRollbackNotAllowedError, UnknownNameError
from ..log import get_logger
from ..records import (
    Deployment,
    ItemAction,
    ItemOutcome,
    PublishEvent,
    Release,
    ReleaseItem,
    utcnow,
)
from .documents import Catalog, stack_catalog
from .publish import (
    ItemResult,
    PublishChange,
    PublishResult,
    check_may_deploy,
    deploy_items,
    locales_of,
    publish,
)
from .schedule import schedule_release

if TYPE_CHECKING:
    from ..context import Context

log = get_logger(__name__)


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
        schedule_release(ctx, release, environment, targets, name, schedule_at)
        return get_release(ctx, stack, release.uid, name)
    if not release.items:
        raise _refuse(f"release {release.uid!r} has no items", "invalid")
    return deploy_items(ctx, release, environment, targets, name)


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
