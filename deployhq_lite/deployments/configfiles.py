"""What a deployment puts on a server: the revision's (or build's) selected files with
the server's config files on top, as configured now or as the server holds them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..git import MODE_FILE, RawEntry
from ..selection import overlay, select_tree

if TYPE_CHECKING:
    from ..context import Context


def server_tree(
    ctx: Context,
    project: str,
    server: str,
    source: str,
    *,
    built: bool = False,
    copy_config_files: bool = True,
) -> str:
    """What a deployment puts on ``server`` from ``source`` (a revision's tree, or with
    ``built`` a build's output): the server's selection of it (:mod:`selection`) with
    its config files on top, or, without ``copy_config_files``, the ones it holds now."""
    config = ctx.settings.get_project(project)
    server_config = ctx.settings.get_server(project, server)
    store = ctx.snapshots.repo
    # a build_output is the project's deployed directory; a server may take part of it
    project_sub = None if built and config.build_output else config.subdirectory
    tree = select_tree(
        store,  # reads the source through it; writes a selection there
        source,
        subdirectory=server_config.subdirectory or project_sub,
        exclude=server_config.excluded_files,
    )
    files = server_config_files(ctx, project, server, copy_config_files=copy_config_files)
    return overlay(store, tree, files) if files else tree


def server_config_files(
    ctx: Context, project: str, server: str, *, copy_config_files: bool
) -> dict[str, RawEntry | None]:
    """What a deployment or a rollback puts at ``server``'s config file paths: the bodies
    configured now (DeployHQ copies the server's current config files, a rollback too),
    or, without ``copy_config_files``, what the server holds there now."""
    if copy_config_files:
        return config_file_entries(ctx, project, server)
    return config_files_now(ctx, project, server)


def config_file_entries(ctx: Context, project: str, server: str) -> dict[str, RawEntry | None]:
    """The server's config files as the config says them now."""
    store = ctx.snapshots.repo
    return {
        f.path: RawEntry(store.write_blob(f.read()), MODE_FILE)
        for f in ctx.settings.config_files(project, server)
    }


def config_files_now(ctx: Context, project: str, server: str) -> dict[str, RawEntry | None]:
    """The server's config file paths as its latest deployment left them (None: absent)."""
    latest = ctx.history.find_latest_completed(project, server)
    now = ctx.snapshots.find_tree(latest.identifier) if latest else None
    store = ctx.snapshots.repo
    return {
        f.path: store.tree_entry(now, f.path) if now else None
        for f in ctx.settings.config_files(project, server)
    }
