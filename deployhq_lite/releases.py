"""The Contentstack model: publishing documents of a stack to environments.

An environment's published state is the latest completed publish event per (locale,
document). Every publish operation (an entry published, unpublished or rolled back; a
release deployed) is one deployment of the engine: the new state's delivery tree is
the end snapshot, so diff, apply, lock and marker are the deployment machinery's. Its
events are recorded with it and count once it completed: state never runs ahead of the
delivery target.

Releases (items, captures, rollback releases) build on :func:`publish` (issue 5, next).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .config import STACK_PREFIX, UserConfig
from .deployments import new_deployment, run_deployment
from .documents import delivery_tree
from .errors import ReleaseRefusedError, UnknownNameError
from .log import get_logger
from .records import Deployment, DeploymentMode, PublishEvent

if TYPE_CHECKING:
    from .engine import Engine

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
    action: str  # "publish" or "unpublish"
    result: str  # "published", "unpublished" or "skipped"
    version: int | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "locale": self.locale,
            "action": self.action,
            "result": self.result,
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


def locales_of(engine: Engine, stack: str, environment: str, wanted: list[str]) -> list[str]:
    """``wanted`` checked against the environment's locales (all of them when empty)."""
    known = engine.settings.get_environment(stack, environment).locales
    for locale in wanted:
        if locale not in known:
            raise UnknownNameError(
                "locale", locale, known, scope=f"environment {environment!r} of stack {stack!r}"
            )
    return list(dict.fromkeys(wanted)) or list(known)


def published_versions(engine: Engine, stack: str, environment: str) -> dict[tuple[str, str], int]:
    """(locale, uid) -> version, for every document published in the environment."""
    return {
        key: event.version
        for key, event in engine.history.published(stack, environment).items()
        if event.version is not None
    }


def publish(
    engine: Engine,
    stack: str,
    environment: str,
    changes: list[PublishChange],
    *,
    user: str,
    origin: str,
    release: str | None = None,
) -> PublishResult:
    """Apply publish/unpublish changes to an environment as one deployment."""
    engine.settings.get_environment(stack, environment)
    catalog = engine.catalog(stack)
    state = published_versions(engine, stack, environment)
    new = dict(state)
    items: list[ItemResult] = []
    for change in changes:
        key = (change.locale, change.uid)
        if change.version is None:
            new.pop(key, None)
            items.append(ItemResult(change.uid, change.locale, "unpublish", "unpublished"))
        else:
            catalog.files(change.uid, change.version)  # refuses a deleted version early
            new[key] = change.version
            items.append(
                ItemResult(change.uid, change.locale, "publish", "published", change.version)
            )
    tree = engine.snapshots.repo.build_tree(delivery_tree(catalog, new))
    deployment = new_deployment(
        engine,
        STACK_PREFIX + stack,
        environment,
        end_revision=catalog.head,
        end_tree=tree,
        branch=engine.settings.get_stack(stack).branch,
        mode=DeploymentMode.QUEUE,
    )
    engine.history.add_publish_events(
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
    done = run_deployment(engine, deployment)
    return PublishResult(done, tuple(items))


def entry_change(
    engine: Engine,
    stack: str,
    uid: str,
    *,
    environment: str,
    locales: list[str],
    version: int | Literal["latest"] | None,
    user: str,
    rollback: bool = False,
) -> PublishResult:
    """``entries publish`` (version or latest), ``unpublish`` (None) and ``rollback``
    (a version that was published there before: a publish event like any other)."""
    _, config = engine.settings.get_user(user)
    check_may_deploy(user, config, stack, environment)
    targets = locales_of(engine, stack, environment, locales)
    document = engine.catalog(stack).get(uid)
    if version == "latest":
        version = document.latest
    if version is not None:
        document.version(version)
    if rollback:
        assert version is not None
        for locale in targets:
            seen = engine.history.published_versions_of(stack, environment, locale, uid)
            if version not in seen:
                raise ReleaseRefusedError(
                    f"version {version} of {uid!r} was never published in "
                    f"{environment}/{locale} (published there: "
                    f"{', '.join(map(str, seen)) or 'none'})",
                    code="not_found",
                )
    changes = [PublishChange(uid, locale, version) for locale in targets]
    return publish(
        engine, stack, environment, changes, user=user, origin="rollback" if rollback else "entry"
    )
