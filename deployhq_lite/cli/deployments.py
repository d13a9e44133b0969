"""Deploy, roll back, look at deployments, and the demo."""

from __future__ import annotations

import click

from ..errors import ConfigError, DeployHQLiteError
from ..records import DeploymentMode, DeploymentStatus, Preview
from ..views import page_of
from .common import (
    _engine,
    _fail,
    _opts,
    _print_json,
    _progress,
    _setup_logging,
    _short,
    _show,
    cli,
    common_options,
    echo_build_output,
    echo_deployment,
    echo_table,
)


@cli.command()
@click.argument("project")
@click.option(
    "--server", "-s", required=True, help="Server or server group (its table key in the config)."
)
@click.option("--revision", "-r", help="Any git revision (default: the project's branch head).")
@click.option("--preview", is_flag=True, help="Only list the changes; write nothing.")
@click.option("--break-lock", is_flag=True, help="Take over a lock left by a dead deployment.")
@click.option("--override-marker", is_flag=True, help="Deploy even if the server marker disagrees.")
@click.option("--config-files-only", is_flag=True, help="Write only the server's config files.")
@click.option(
    "--copy-config-files/--no-copy-config-files",
    default=True,
    show_default=True,
    help="Without: leave the server's config files as they are.",
)
@click.option(
    "--run-build-commands/--no-run-build-commands",
    default=True,
    show_default=True,
    help="Without: deploy the repository's files, unbuilt.",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Write back what the server holds differently from its latest deployment.",
)
@click.option("--delete-extra", is_flag=True, help="With --repair: delete files it lacks too.")
@click.option("--full", is_flag=True, help="Write every file, whatever the server holds.")
@common_options
def deploy(
    project: str,
    server: str,
    revision: str | None,
    preview: bool,
    break_lock: bool,
    override_marker: bool,
    config_files_only: bool,
    copy_config_files: bool,
    run_build_commands: bool,
    repair: bool,
    delete_extra: bool,
    full: bool,
) -> None:
    """Deploy REVISION of PROJECT to a server."""
    if repair and revision:
        _fail(ConfigError("--repair restores the latest deployment: it takes no --revision"))
    with _engine() as engine:
        if preview:
            result = engine.preview(
                project,
                server,
                revision=revision,
                on_output=echo_build_output,
                repair=repair,
                delete_extra=delete_extra,
                full=full,
            )
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
                config_files_only=config_files_only,
                copy_config_files=copy_config_files,
                run_build_commands=run_build_commands,
                on_output=echo_build_output,
                repair=repair,
                delete_extra=delete_extra,
                full=full,
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
            on_output=echo_build_output,
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
@click.option("--server", "-s", help="Only this server's (or server group's) deployments.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@click.option(
    "--status",
    type=click.Choice([s.value for s in DeploymentStatus]),
    help="Only deployments in this status.",
)
@common_options
def list_deployments(
    project: str, server: str | None, limit: int, page: int, status: str | None
) -> None:
    """Deployments of PROJECT, newest first."""
    with _engine() as engine:
        found = engine.list_deployments(
            project,
            server,
            limit=limit,
            offset=(page - 1) * limit,
            status=DeploymentStatus(status) if status else None,
        )
        if _opts().json:
            records = [d.to_json(engine.members(d)) for d in found]
            total = engine.history.count(project, server)
            _print_json(page_of(records, page=page, per_page=limit, total=total))
            return
        if not found:
            click.echo(
                f"no {status} deployments of {project}"
                if status
                else f"no deployments of {project} yet"
            )
            return
        echo_table(
            ["DEPLOYMENT", "STATUS", "SERVER", "REVISIONS", "QUEUED", "KIND"],
            (
                [
                    d.identifier,
                    d.status.value,
                    d.server,
                    f"{_short(d.start_revision)} -> {_short(d.end_revision)}",
                    f"{d.queued_at[:19]}Z",
                    "rollback" if d.is_rollback else "deploy",
                ]
                for d in found
            ),
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
    from ..demo import run_demo  # the engine loads for a command that runs, not --help

    opts = _opts()
    _setup_logging(opts)
    try:
        run_demo(directory, echo=click.echo, show=echo_deployment, as_json=opts.json)
    except DeployHQLiteError as exc:
        _fail(exc)
