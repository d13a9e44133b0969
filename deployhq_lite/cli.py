"""The ``deployhq-lite`` command line. The only place that configures logging and maps
errors to exit codes: 0 ok, 1 deployment/transport failure, 2 config or usage, 3 refused.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from . import log
from .errors import DeployHQLiteError
from .records import (
    Deployment,
    DeploymentMode,
    DeploymentStatus,
    FileOutcome,
    Preview,
    Release,
)

if TYPE_CHECKING:
    from .deployments import ProgressCallback
    from .engine import Engine
    from .releases import PublishResult

F = TypeVar("F", bound=Callable[..., Any])


SHOWN = 200  # paths listed in human output


@dataclass
class Options:
    config: str | None = None
    json: bool = False
    log_format: str = "console"
    verbose: int = 0


def _merge(ctx: click.Context, name: str, value: Any) -> None:
    opts: Options = ctx.ensure_object(Options)
    if value not in (None, False, 0):
        setattr(opts, name, value)


def common_options(fn: F) -> F:
    """``--config``, ``--json``, ``--log-format``, ``-v`` on the group and every command."""
    decorators = [
        click.option(
            "--config",
            "config",
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=lambda c, p, v: _merge(c, "config", v),
            help="Config file (default: $DEPLOYHQ_LITE_CONFIG or ./deployhq-lite.toml).",
        ),
        click.option(
            "--json",
            "json_output",
            is_flag=True,
            expose_value=False,
            callback=lambda c, p, v: _merge(c, "json", v),
            help="Print JSON (DeployHQ's API shapes).",
        ),
        click.option(
            "--log-format",
            type=click.Choice(["console", "json"]),
            expose_value=False,
            callback=lambda c, p, v: _merge(c, "log_format", v),
            help="Log events to stderr in this format (implies -v).",
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            expose_value=False,
            callback=lambda c, p, v: _merge(c, "verbose", v),
            help="Log events to stderr (-vv for per-file events).",
        ),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@click.version_option(package_name="deployhq-lite")
def cli() -> None:
    """Deploy git revisions to servers and roll them back (DeployHQ semantics)."""


def _opts() -> Options:
    return click.get_current_context().ensure_object(Options)


def _setup_logging(opts: Options) -> None:
    if opts.log_format == "json" and opts.verbose == 0:
        opts.verbose = 1
    # Quiet by default: the outcome and any error are printed once, as a result.
    level = {0: "off", 1: "info"}.get(opts.verbose, "debug")
    log.configure(level=level, fmt=opts.log_format)


@contextmanager
def _engine() -> Iterator[Engine]:
    opts = _opts()
    _setup_logging(opts)
    try:
        from .engine import Engine

        with Engine(opts.config) as engine:
            yield engine
    except DeployHQLiteError as exc:
        _fail(exc)


def _fail(exc: DeployHQLiteError) -> NoReturn:
    if _opts().json:
        body = {"error": str(exc)}
        code = getattr(exc, "code", None)
        if isinstance(code, str):
            body["error_code"] = code
        click.echo(json.dumps(body))
    else:
        click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@contextmanager
def _progress(label: str) -> Iterator[ProgressCallback | None]:
    """A rich progress bar on a terminal (stderr); nothing when piped or with --json."""
    if _opts().json or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        transient=True,
        console=_stderr_console(),
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int, path: str) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


# -- output -----------------------------------------------------------------------------------


def _short(revision: str | None) -> str:
    return revision[:12] if revision else "(nothing)"


def echo_deployment(
    d: Deployment,
    changes: list[FileOutcome] | None = None,
    counts: dict[str, int] | None = None,
) -> None:
    kind = "Rollback" if d.is_rollback else "Deployment"
    click.echo(f"{kind} {d.identifier}: {d.status.value}")
    click.echo(f"  project  {d.project_name} ({d.project})")
    click.echo(f"  server   {d.server_name} ({d.server}, {d.protocol_type})")
    click.echo(f"  revision {_short(d.start_revision)} -> {_short(d.end_revision)} ({d.branch})")
    if d.rollback_of:
        click.echo(f"  rollback to deployment {d.rollback_of}")
    if d.error:
        click.echo(f"  error    {d.error}")
    if changes is not None:
        echo_changes(changes, counts)


def echo_changes(
    changes: list[FileOutcome], counts: dict[str, int] | None = None, limit: int = SHOWN
) -> None:
    """A summary line and up to ``limit`` paths; ``counts`` when ``changes`` is a prefix."""
    if counts is None:
        counts = {"added": 0, "modified": 0, "deleted": 0}
        for c in changes:
            counts[c.change] += 1
    total = sum(counts.values())
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    click.echo(f"  changes  {summary}" if total else "  changes  none")
    sign = {"added": "+", "modified": "M", "deleted": "-"}
    for c in changes[:limit]:
        flag = "" if c.status.value in ("done", "previewed") else f"  [{c.status.value}]"
        click.echo(f"    {sign[c.change]} {c.path}{flag}")
    if total > limit:
        click.echo(f"    ... and {total - limit} more (use --json for all)")


def _show(engine: Engine, d: Deployment) -> None:
    if _opts().json:
        data = d.to_json()
        data["changes"] = [c.to_json() for c in engine.file_changes(d.identifier)]
        _print_json(data)
    else:  # the first paths and the counts: a 50,000-file deploy prints 200
        changes = engine.file_changes(d.identifier, limit=SHOWN)
        echo_deployment(d, changes, engine.change_counts(d.identifier))


# -- commands ---------------------------------------------------------------------------------


@cli.command()
@click.argument("project")
@click.option("--server", "-s", required=True, help="Server name (the table key in the config).")
@click.option("--revision", "-r", help="Any git revision (default: the project's branch head).")
@click.option("--preview", is_flag=True, help="Only list the changes; write nothing.")
@click.option("--break-lock", is_flag=True, help="Take over a lock left by a dead deployment.")
@click.option("--override-marker", is_flag=True, help="Deploy even if the server marker disagrees.")
@common_options
def deploy(
    project: str,
    server: str,
    revision: str | None,
    preview: bool,
    break_lock: bool,
    override_marker: bool,
) -> None:
    """Deploy REVISION of PROJECT to a server."""
    with _engine() as engine:
        if preview:
            result = engine.preview(project, server, revision=revision)
            _emit_preview(result)
            return
        with _progress("deploying") as progress:
            done = engine.deploy(
                project,
                server,
                revision=revision,
                break_lock=break_lock,
                override_marker=override_marker,
                on_progress=progress,
            )
        _show(engine, done)


def _emit_preview(result: Preview) -> None:
    if _opts().json:
        _print_json(result.to_json())
    else:
        echo_deployment(result.deployment, list(result.changes))


@cli.command()
@click.argument("project")
@click.argument("deployment")
@click.option(
    "--mode",
    type=click.Choice([m.value for m in DeploymentMode]),
    default="queue",
    show_default=True,
    help="queue runs the rollback; preview only lists its changes.",
)
@click.option("--copy-config-files/--no-copy-config-files", default=True, show_default=True)
@click.option("--run-build-commands/--no-run-build-commands", default=True, show_default=True)
@click.option("--break-lock", is_flag=True, help="Take over a lock left by a dead deployment.")
@click.option(
    "--override-marker", is_flag=True, help="Roll back even if the server marker disagrees."
)
@common_options
def rollback(
    project: str,
    deployment: str,
    mode: str,
    copy_config_files: bool,
    run_build_commands: bool,
    break_lock: bool,
    override_marker: bool,
) -> None:
    """Roll PROJECT's server back to DEPLOYMENT (a new deployment reversing later changes)."""
    with _engine() as engine, _progress("rolling back") as progress:
        done = engine.rollback(
            project,
            deployment,
            mode=mode,
            copy_config_files=copy_config_files,
            run_build_commands=run_build_commands,
            break_lock=break_lock,
            override_marker=override_marker,
            on_progress=progress,
        )
        if done.status is DeploymentStatus.PREVIEWED:
            if _opts().json:  # DeployHQ's creation response for a preview
                _print_json({"identifier": done.identifier, "status": "preview_pending"})
            else:
                echo_deployment(done, engine.file_changes(done.identifier))
                click.echo(
                    f"  (preview only; see `deployhq-lite deployments preview {project} "
                    f"{done.identifier}`)"
                )
            return
        _show(engine, done)


@cli.group()
@common_options
def deployments() -> None:
    """List and inspect deployments."""


@deployments.command("list")
@click.argument("project")
@click.option("--server", "-s", help="Only this server's deployments.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@common_options
def list_deployments(project: str, server: str | None, limit: int, page: int) -> None:
    """Deployments of PROJECT, newest first."""
    with _engine() as engine:
        found = engine.list_deployments(project, server, limit=limit, offset=(page - 1) * limit)
        if _opts().json:
            _print_json(
                {
                    "pagination": {
                        "current_page": page,
                        "per_page": limit,
                        "offset": (page - 1) * limit,
                    },
                    "records": [d.to_json() for d in found],
                }
            )
            return
        if not found:
            click.echo(f"no deployments of {project} yet")
        for d in found:
            kind = "rollback " if d.is_rollback else ""
            click.echo(
                f"{d.identifier}  {d.status.value:<15} {d.server:<12} "
                f"{_short(d.start_revision)} -> {_short(d.end_revision)}  {kind}{d.queued_at[:19]}Z"
            )


@deployments.command("show")
@click.argument("project")
@click.argument("deployment")
@common_options
def show_deployment(project: str, deployment: str) -> None:
    """One deployment with its per-file outcomes."""
    with _engine() as engine:
        _show(engine, engine.get_deployment(project, deployment))


@deployments.command("preview")
@click.argument("project")
@click.argument("deployment")
@common_options
def show_preview(project: str, deployment: str) -> None:
    """A preview deployment's status and the file changes it would make."""
    with _engine() as engine:
        _emit_preview(engine.get_preview(project, deployment))


def user_option(fn: F) -> F:
    return click.option(
        "--user",
        envvar="DEPLOYHQ_LITE_USER",
        help="Who acts (a [users] name; default $DEPLOYHQ_LITE_USER).",
    )(fn)


def locale_option(fn: F) -> F:
    return click.option(
        "--locale",
        "locales",
        multiple=True,
        help="A locale of the environment (repeatable; default: all of them).",
    )(fn)


@cli.group()
@common_options
def entries() -> None:
    """Documents of a stack (entries and assets) and their publish state."""


@entries.command("list")
@click.argument("stack")
@common_options
def list_entries(stack: str) -> None:
    """Every document of STACK with its kind and latest version."""
    with _engine() as engine:
        catalog = engine.catalog(stack)
        rows = [
            {
                "uid": doc.uid,
                "kind": doc.kind,
                "content_type": doc.content_type,
                "latest_version": doc.latest,
                "deleted": doc.versions[-1].path is None,
            }
            for doc in sorted(catalog.documents.values(), key=lambda d: d.uid)
        ]
        if _opts().json:
            _print_json(rows)
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
    from .releases import create_release as create

    with _engine() as engine:
        release = create(engine, stack, name, user)
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
@click.option("--action", type=click.Choice(["publish", "unpublish"]), default="publish")
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
    from .releases import add_item

    with _engine() as engine:
        _emit_release(
            add_item(
                engine,
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
@user_option
@common_options
def list_releases(stack: str, user: str | None) -> None:
    """Releases you may see (rollback releases: your own; all for an admin)."""
    from .releases import list_releases as query

    with _engine() as engine:
        found = query(engine, stack, user)
        if _opts().json:
            _print_json([r.to_json() for r in found])
            return
        for r in found:
            kind = "rollback" if r.is_rollback else "release"
            click.echo(f"{r.uid}  {kind:<9}{r.creator:<12}{r.name}")


@releases.command("show")
@click.argument("stack")
@click.argument("release")
@user_option
@common_options
def show_release(stack: str, release: str, user: str | None) -> None:
    """One release and its items."""
    from .releases import get_release

    with _engine() as engine:
        _emit_release(get_release(engine, stack, release, user))


@releases.command("delete")
@click.argument("stack")
@click.argument("release")
@user_option
@common_options
def delete_release(stack: str, release: str, user: str | None) -> None:
    """Delete a release; live content and the original release are left as they are."""
    from .releases import delete_release as delete

    with _engine() as engine:
        gone = delete(engine, stack, release, user)
        if _opts().json:
            _print_json({**gone.to_json(), "deleted": True})
        else:
            click.echo(f"deleted {gone.uid}")


@cli.command()
@click.option("--once", is_flag=True, help="Run what is due, then exit.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@common_options
def worker(once: bool, interval: float) -> None:
    """Deploy scheduled releases when they are due."""
    import time

    from .releases import run_due

    with _engine() as engine:
        while True:
            for release, outcome in run_due(engine):
                line = {"release": release.uid, "stack": release.stack, "outcome": outcome}
                if _opts().json:
                    click.echo(json.dumps(line))
                else:
                    click.echo(f"{release.stack}/{release.uid}: {outcome}")
            if once:
                return
            time.sleep(interval)


@cli.group()
@common_options
def servers() -> None:
    """Check servers and trust their host keys."""


@servers.command("check")
@click.argument("project")
@click.argument("server")
@common_options
def check_server(project: str, server: str) -> None:
    """Connect to SERVER and report what a deployment would rely on."""
    with _engine() as engine, engine.transport(project, server) as transport:
        probe = getattr(transport, "probe", None)
        report: dict[str, object] = (
            probe() if probe else {"root": str(engine.settings.get_server(project, server).root)}
        )
        report = {"server": f"{project}/{server}", "ok": True, **report}
        if _opts().json:
            _print_json(report)
            return
        for key, value in report.items():
            click.echo(f"{key:<22}{value}")


@servers.command("trust")
@click.argument("project")
@click.argument("server")
@click.option("--yes", is_flag=True, help="Record the key without asking (check it first!).")
@click.option(
    "--fingerprint",
    "expected",
    metavar="SHA256:...",
    help="Record the key only if it has this fingerprint (obtained out of band).",
)
@click.option("--replace", is_flag=True, help="Drop a changed key and record the new one.")
@common_options
def trust_server(project: str, server: str, yes: bool, expected: str | None, replace: bool) -> None:
    """Show the host key SERVER offers; record it in known_hosts only when confirmed."""
    from .errors import ConfigError, HostKeyError

    with _engine() as engine:
        config = engine.settings.get_server(project, server)
        if config.protocol_type != "ssh":
            _fail(ConfigError(f"server {project}/{server} is not an ssh server; nothing to trust"))
        from .transports.sftp import SFTPTransport

        transport = SFTPTransport(config, server=f"{project}/{server}")
        try:
            offer = transport.offered_host_key()
            report: dict[str, object] = {
                "server": f"{project}/{server}",
                "host": offer.host,
                "key_type": offer.key_type,
                "fingerprint": offer.fingerprint,
                "status": offer.status,
                "recorded": None,
            }
            if not _opts().json:
                click.echo(f"{offer.host} offers {offer.key_type} {offer.fingerprint}")
                click.echo(offer.detail)
            if offer.status == "trusted":
                _emit_report(report)
                return
            if config.host_key_fingerprint:
                raise HostKeyError(
                    f"server {project}/{server} pins host_key_fingerprint "
                    f"{config.host_key_fingerprint}; if the new key is right, set it to "
                    f"{offer.fingerprint} in the config",
                    server=f"{project}/{server}",
                )
            if expected is not None and expected != offer.fingerprint:
                raise HostKeyError(
                    f"server {project}/{server} offers {offer.fingerprint}, not {expected}; "
                    "nothing recorded",
                    server=f"{project}/{server}",
                )
            if not (yes or expected) and not _confirm("Trust this key and record it?"):
                raise HostKeyError(
                    f"host key of {project}/{server} not recorded; compare the fingerprint "
                    "with the server's administrator, then pass --yes or --fingerprint",
                    server=f"{project}/{server}",
                )
            report["recorded"] = str(transport.trust_host_key(offer, replace=replace))
        except DeployHQLiteError as exc:
            _fail(exc)
        _emit_report(report)


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return click.confirm(question, default=False, err=True)


def _emit_report(report: dict[str, object]) -> None:
    if _opts().json:
        _print_json(report)
    elif report.get("recorded"):
        click.echo(f"recorded in {report['recorded']}")


@cli.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Where the demo keeps its repository, state and site "
    "(default: $XDG_STATE_HOME/deployhq-lite/demo).",
)
@common_options
def demo(directory: str | None) -> None:
    """Build a sample repository, deploy two revisions locally, roll back; print each step."""
    from .demo import run_demo

    opts = _opts()
    _setup_logging(opts)
    try:
        run_demo(directory, echo=click.echo, show=echo_deployment, as_json=opts.json)
    except DeployHQLiteError as exc:
        _fail(exc)


def main() -> None:
    try:
        cli(prog_name="deployhq-lite")
    except KeyboardInterrupt:
        click.echo("interrupted; the marker was not moved (deploy again to converge)", err=True)
        sys.exit(130)
