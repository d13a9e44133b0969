"""Content stacks: entries, environments, releases and the scheduled-release worker."""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import click

from ..records import Deployment, ItemAction, Release
from ..views import page_of
from .common import (
    _engine,
    _opts,
    _print_json,
    cli,
    common_options,
    echo_table,
    locale_option,
    user_option,
)

if TYPE_CHECKING:
    from ..content.publish import PublishResult


@cli.group()
@common_options
def entries() -> None:
    """Documents of a stack (entries and assets) and their publish state."""


@entries.command("list")
@click.argument("stack")
@click.option("--limit", type=click.IntRange(1, 10_000), default=500, show_default=True)
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@common_options
def list_entries(stack: str, limit: int, page: int) -> None:
    """Every document of STACK with its kind and latest version, by uid."""
    with _engine() as engine:
        documents = sorted(engine.catalog(stack).documents.values(), key=lambda d: d.uid)
        rows = [
            {
                "uid": doc.uid,
                "kind": doc.kind,
                "content_type": doc.content_type,
                "latest_version": doc.latest,
                "deleted": doc.versions[-1].path is None,
            }
            for doc in documents[(page - 1) * limit :][:limit]
        ]
        if _opts().json:
            _print_json(page_of(rows, page=page, per_page=limit, total=len(documents)))
            return
        for row in rows:
            gone = " (deleted)" if row["deleted"] else ""
            click.echo(f"{row['uid']:<32}{row['kind']:<7}v{row['latest_version']}{gone}")


def _publish_command(
    stack: str,
    uid: str,
    environment: str,
    locales: tuple[str, ...],
    user: str | None,
    **how: Any,
) -> None:
    with _engine() as engine:
        result = engine.publish_entry(
            stack, uid, environment=environment, user=user, locales=list(locales), **how
        )
        _emit_publish(result)


def _emit_publish(result: PublishResult) -> None:
    if _opts().json:
        _print_json(result.to_json())
        return
    for item in result.items:
        version = f" v{item.version}" if item.version else ""
        why = f"  ({item.reason})" if item.reason else ""
        click.echo(f"{item.result:<12}{item.uid}{version} [{item.locale}]{why}")


@entries.command("publish")
@click.argument("stack")
@click.argument("uid")
@click.option("--environment", required=True, help="The environment to publish to.")
@locale_option
@click.option("--version", "version", type=click.IntRange(min=1), help="Default: latest.")
@user_option
@common_options
def publish_entry(
    stack: str,
    uid: str,
    environment: str,
    locales: tuple[str, ...],
    version: int | None,
    user: str | None,
) -> None:
    """Publish one document (a version, default the latest) in an environment."""
    _publish_command(stack, uid, environment, locales, user, version=version)


@entries.command("unpublish")
@click.argument("stack")
@click.argument("uid")
@click.option("--environment", required=True, help="The environment to unpublish from.")
@locale_option
@user_option
@common_options
def unpublish_entry(
    stack: str, uid: str, environment: str, locales: tuple[str, ...], user: str | None
) -> None:
    """Unpublish one document from an environment."""
    _publish_command(stack, uid, environment, locales, user, unpublish=True)


@entries.command("rollback")
@click.argument("stack")
@click.argument("uid")
@click.option("--environment", required=True, help="The environment.")
@locale_option
@click.option("--to-version", "to_version", type=click.IntRange(min=1), required=True)
@user_option
@common_options
def rollback_entry(
    stack: str,
    uid: str,
    environment: str,
    locales: tuple[str, ...],
    to_version: int,
    user: str | None,
) -> None:
    """Republish a version of one document that was published there before."""
    _publish_command(stack, uid, environment, locales, user, rollback_to=to_version)


@cli.group()
@common_options
def environments() -> None:
    """Environments of a stack and what they publish."""


@environments.command("show")
@click.argument("stack")
@click.argument("environment")
@click.option("--locale", help="The locale (default: the environment's first).")
@common_options
def show_environment(stack: str, environment: str, locale: str | None) -> None:
    """The documents published in ENVIRONMENT: uid and version."""
    with _engine() as engine:
        state = engine.published(stack, environment, locale)
        if _opts().json:
            _print_json(state)
            return
        for uid, version in state.items():
            click.echo(f"{uid:<32}v{version}")


@cli.group()
@common_options
def releases() -> None:
    """Releases of a stack: items deployed together, and rollback releases."""


def _emit_release(release: Release) -> None:
    if _opts().json:
        _print_json(release.to_json())
        return
    kind = f" (rollback of {release.rollback_of})" if release.is_rollback else ""
    click.echo(f"{release.uid}  {release.name}{kind}")
    click.echo(f"  creator {release.creator}, deployed: {'yes' if release.deployed else 'no'}")
    if release.scheduled_at:
        click.echo(f"  scheduled at {release.scheduled_at} ({release.schedule_status})")
    for item in release.items:
        ref = " (reference)" if item.reference else ""
        where = f" [{', '.join(item.locales)}]" if item.locales else ""
        version = f" v{item.version}" if item.version else ""
        click.echo(f"    {item.action:<10}{item.uid}{version}{where}{ref}")


@releases.command("create")
@click.argument("stack")
@click.argument("name")
@user_option
@common_options
def create_release(stack: str, name: str, user: str | None) -> None:
    """Create an empty release; prints its uid."""
    with _engine() as engine:
        release = engine.create_release(stack, name, user=user)
        if _opts().json:
            _print_json(release.to_json())
        else:
            click.echo(release.uid)


@releases.command("add-item")
@click.argument("stack")
@click.argument("release")
@click.argument("uid")
@click.option("--version", type=click.IntRange(min=1), help="Default: the latest, now.")
@locale_option
@click.option(
    "--action", type=click.Choice([a.value for a in ItemAction]), default=ItemAction.PUBLISH.value
)
@click.option("--with-references", is_flag=True, help="Add referenced documents too.")
@user_option
@common_options
def add_release_item(
    stack: str,
    release: str,
    uid: str,
    version: int | None,
    locales: tuple[str, ...],
    action: str,
    with_references: bool,
    user: str | None,
) -> None:
    """Add a document to a release (not once it was deployed)."""
    with _engine() as engine:
        _emit_release(
            engine.add_release_item(
                stack,
                release,
                uid,
                user=user,
                version=version,
                locales=list(locales),
                action=action,
                with_references=with_references,
            )
        )


@releases.command("deploy")
@click.argument("stack")
@click.argument("release")
@click.option("--environment", required=True, help="The environment to deploy to.")
@locale_option
@click.option("--schedule-at", help="Deploy later (ISO 8601), by `deployhq-lite worker`.")
@user_option
@common_options
def deploy_release(
    stack: str,
    release: str,
    environment: str,
    locales: tuple[str, ...],
    schedule_at: str | None,
    user: str | None,
) -> None:
    """Deploy a release (a rollback release restores what was published before)."""
    with _engine() as engine:
        result = engine.deploy_release(
            stack,
            release,
            environment=environment,
            user=user,
            locales=list(locales),
            schedule_at=schedule_at,
        )
        if isinstance(result, Release):
            _emit_release(result)
        else:
            _emit_publish(result)


@releases.command("rollback")
@click.argument("stack")
@click.argument("release")
@user_option
@common_options
def rollback_release(stack: str, release: str, user: str | None) -> None:
    """Create (or show) your rollback release of a deployed release."""
    with _engine() as engine:
        _emit_release(engine.rollback_release(stack, release, user=user))


@releases.command("list")
@click.argument("stack")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@user_option
@common_options
def list_releases(stack: str, limit: int, page: int, user: str | None) -> None:
    """Releases you may see (rollback releases: your own; all for an admin), oldest first."""
    with _engine() as engine:
        every = engine.list_releases(stack, user=user)
        found = every[(page - 1) * limit :][:limit]
        if _opts().json:
            records = [r.to_json() for r in found]
            _print_json(page_of(records, page=page, per_page=limit, total=len(every)))
            return
        if not found:
            click.echo(f"no releases of {stack} yet")
            return
        echo_table(
            ["RELEASE", "KIND", "CREATOR", "NAME"],
            ([r.uid, "rollback" if r.is_rollback else "release", r.creator, r.name] for r in found),
        )


@releases.command("show")
@click.argument("stack")
@click.argument("release")
@user_option
@common_options
def show_release(stack: str, release: str, user: str | None) -> None:
    """One release and its items."""
    with _engine() as engine:
        _emit_release(engine.get_release(stack, release, user=user))


@releases.command("delete")
@click.argument("stack")
@click.argument("release")
@user_option
@common_options
def delete_release(stack: str, release: str, user: str | None) -> None:
    """Delete a release; live content and the original release are left as they are."""
    with _engine() as engine:
        gone = engine.delete_release(stack, release, user=user)
        if _opts().json:
            _print_json({**gone.to_json(), "deleted": True})
        else:
            click.echo(f"deleted {gone.uid}")


@cli.command()
@click.option("--once", is_flag=True, help="Run what is queued and due, then exit.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@common_options
def worker(once: bool, interval: float) -> None:
    """Run queued deployments and scheduled releases (several workers may run at once)."""
    from ..queue import run_worker  # the engine loads for a command that runs, not --help

    stop = threading.Event()
    # SIGTERM: finish the deployment being run, then stop; Ctrl-C: interrupt it now.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        with _engine() as engine:
            run_worker(
                engine,
                once=once,
                interval=interval,
                stop=stop,
                on_event=_echo_worker_deployment,
                on_release=_echo_worker_release,
            )
    except KeyboardInterrupt:
        click.echo("worker interrupted", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _echo_worker_deployment(event: str, d: Deployment) -> None:
    if _opts().json:
        line = {"deployment": d.identifier, "status": d.status.value}
        click.echo(json.dumps({**line, "project": d.project, "server": d.server}))
    else:
        click.echo(f"{d.identifier} {d.status.value} {d.project}/{d.server}")


def _echo_worker_release(release: Release, outcome: str) -> None:
    if _opts().json:
        click.echo(json.dumps({"release": release.uid, "stack": release.stack, "outcome": outcome}))
    else:
        click.echo(f"{release.stack}/{release.uid}: {outcome}")
