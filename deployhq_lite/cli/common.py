"""What every command shares: the group, common options, the engine, errors, output."""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from .. import log
from ..errors import DeployHQLiteError, RollbackNotAllowedError
from ..records import ChangeKind, Deployment, FileOutcome
from ..views import error_body

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from ..deployments.options import ProgressCallback
    from ..engine import Engine

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
        from ..engine import Engine  # pygit2 and the store load only when used: --help is fast

        with Engine(opts.config) as engine:
            yield engine
    except DeployHQLiteError as exc:
        _fail(exc)


def _fail(exc: DeployHQLiteError) -> NoReturn:
    reason = exc.reason if isinstance(exc, RollbackNotAllowedError) else None
    if _opts().json:
        click.echo(json.dumps(error_body(exc)))
    else:
        lines = str(exc).splitlines() or [""]
        if reason:
            lines[-1] += f" ({reason})"
        for line in lines:
            click.echo(f"error: {line}", err=True)
    sys.exit(exc.exit_code)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@contextmanager
def _progress(label: str) -> Iterator[ProgressCallback | None]:
    """A rich progress bar on a terminal (stderr); nothing when piped or with --json."""
    if _opts().json or not sys.stderr.isatty():
        yield None
        return
    with open_progress_bar(label, _stderr_console()) as bar:
        yield bar


@contextmanager
def open_progress_bar(label: str, console: Console) -> Iterator[PhaseBar]:
    """A transient bar on ``console``: ``deploying: planning``, then files done of total."""
    from rich.progress import BarColumn, Progress, TextColumn  # rich loads for a bar only

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),  # nothing until the total is known, not "0/?"
        transient=True,
        console=console,
    ) as progress:
        yield PhaseBar(progress, label)


class PhaseBar:
    """A progress callback that shows the deployment's phase (a ``PhasedProgress``)."""

    def __init__(self, progress: Progress, label: str) -> None:
        self._progress = progress
        self._label = label
        self._task = progress.add_task(label, total=None, count="")

    def phase(self, name: str) -> None:
        self._progress.update(self._task, description=f"{self._label}: {name}", refresh=True)

    def __call__(self, done: int, total: int, path: str) -> None:
        self._progress.update(self._task, completed=done, total=total, count=f"{done}/{total}")


def echo_build_output(line: str) -> None:
    """A build command's output line, as it comes, on stderr (above a progress bar)."""
    click.echo(f"  | {line}", err=True)


def _stderr_console() -> Any:
    from rich.console import Console  # rich loads for a bar only

    return Console(stderr=True)


# -- output -----------------------------------------------------------------------------------


def _short(revision: str | None) -> str:
    return revision[:12] if revision else "(nothing)"


def echo_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Rows under a header, each column as wide as its widest cell, two spaces apart."""
    lines = [list(header), *(list(row) for row in rows)]
    widths = [max(_width(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        cells = [c + " " * (w - _width(c)) for c, w in zip(line, widths, strict=True)]
        click.echo("  ".join(cells).rstrip())


def _width(text: str) -> int:
    """Terminal cells: two for wide (East Asian) characters."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def echo_deployment(
    d: Deployment,
    changes: list[FileOutcome] | None = None,
    counts: dict[str, int] | None = None,
) -> None:
    kind = "Rollback" if d.is_rollback else "Deployment"
    kind = "Repair" if d.repair else "Full deployment" if d.full else kind
    kind = "Adoption" if d.adopted else kind
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
        counts = {ChangeKind.ADDED: 0, ChangeKind.MODIFIED: 0, ChangeKind.DELETED: 0}
        for c in changes:
            counts[c.change] += 1
    total = sum(counts.values())
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    click.echo(f"  changes  {summary}" if total else "  changes  none")
    sign = {ChangeKind.ADDED: "+", ChangeKind.MODIFIED: "M", ChangeKind.DELETED: "-"}
    for c in changes[:limit]:
        flag = "" if c.status.value in ("done", "previewed") else f"  [{c.status.value}]"
        where = f"{c.server}: " if c.server else ""
        click.echo(f"    {sign[c.change]} {where}{c.path}{flag}")
    if total > limit:
        click.echo(f"    ... and {total - limit} more (use --json for all)")


def _show(engine: Engine, d: Deployment) -> None:
    """A deployment with its outcomes; a group deployment with each server's too."""
    if _opts().json:
        _print_json(engine.describe(d))
        return
    members = engine.members(d)
    # the first paths and the counts: a 50,000-file deploy prints 200
    changes = engine.file_changes(d.identifier, limit=SHOWN)
    echo_deployment(d, changes, engine.change_counts(d.identifier))
    _echo_commands(engine, d)
    _echo_verified(engine, d)
    for m in members:
        click.echo(f"  server   {m.server}: {m.status.value} ({m.identifier})")
        if m.error:
            click.echo(f"    error  {m.error}")
        _echo_commands(engine, m)
        _echo_verified(engine, m)


def _echo_verified(engine: Engine, d: Deployment) -> None:
    found = engine.history.latest_verification(d.project, d.server, deployment=d.identifier)
    if found is None:
        return
    result = "in sync" if found.in_sync else f"{len(found.differences)} differences"
    click.echo(f"  verified {found.completed_at}: {result} ({found.method})")


def _echo_commands(engine: Engine, d: Deployment) -> None:
    for c in engine.history.command_results(d.identifier):
        status = "timed out" if c.timed_out else f"exit {c.exit_status}"
        click.echo(f"  command  [{c.when}] {c.command} ({status}, {c.duration:.1f} s)")
        for line in c.output.splitlines()[-20:]:
            click.echo(f"    | {line}")


# -- commands ---------------------------------------------------------------------------------


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
