"""``gc``: collect the snapshot store."""

from __future__ import annotations

import click

from .common import _engine, _opts, _print_json, cli, common_options


@cli.command()
@click.option("--dry-run", is_flag=True, help="Report what would be reclaimed; change nothing.")
@common_options
def gc(dry_run: bool) -> None:
    """Repack the snapshot store from its refs and drop what none of them reaches.

    Every deployment's snapshot is kept (rollbacks keep working); what goes is what the
    source repositories' repacks left behind. Refused while a deployment is queued or
    running. Prints one line; with --json: {"path", "bytes_before", "bytes_after",
    "reclaimed", "shared_before", "refs", "dry_run"} (sizes of the store's objects
    directory in bytes; shared_before: bytes in files hard-linked with a source).
    """
    with _engine() as engine:
        report = engine.collect_snapshots(dry_run=dry_run)
    if _opts().json:
        _print_json(report.to_json())
        return
    before, after = report.bytes_before, report.bytes_after
    if report.dry_run:
        click.echo(
            f"snapshot store: {before} bytes ({_size(before)}), about {after} after gc "
            f"({_size(report.reclaimed)} to reclaim), {report.refs} refs; dry run, nothing changed"
        )
    else:
        click.echo(
            f"snapshot store: {before} -> {after} bytes ({_size(before)} -> {_size(after)}, "
            f"{_size(report.reclaimed)} reclaimed), {report.refs} refs kept"
        )


def _size(n: int) -> str:
    """``n`` bytes for a person: 1.5 GiB, 12.0 MiB, 300 B."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
