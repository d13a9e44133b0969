"""The build pipeline: run a project's build commands in a clean checkout of a revision.

The commands run on this machine, one after another, in a fresh directory holding the
revision's whole tree, with a scrubbed environment (no secrets from ours). Cached
directories move in before the commands and back out after. What the build produced
(``build_output``, or the whole directory) is written to the store as a git tree: the
same output gives the same tree id, so nothing new is uploaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DeploymentError
from ..log import get_logger
from ..records import CommandResult, Deployment
from ..shell import run_shell
from .configfiles import server_tree
from .options import OutputCallback

if TYPE_CHECKING:
    from .. import git
    from ..config import BuildCommandConfig, ProjectConfig
    from ..context import Context

log = get_logger(__name__)


class BuildError(DeploymentError):
    """A build command failed or the build output is missing; nothing was deployed."""

    def __init__(
        self, message: str, *, commands: Sequence[CommandResult] = (), identifier: str = ""
    ) -> None:
        super().__init__(message, identifier=identifier)
        self.commands = tuple(commands)


@dataclass(frozen=True, slots=True)
class BuildResult:
    tree: str  # git tree id of the output, in the store
    commands: tuple[CommandResult, ...]


def run_build(
    *,
    source: git.Repository,
    store: git.Repository,
    revision: str,
    project: ProjectConfig,
    work_root: Path,
    cache_root: Path,
    variables: Mapping[str, str],
    on_output: Callable[[str], None] | None = None,
    on_command: Callable[[CommandResult], None] | None = None,
) -> BuildResult:
    """Build ``revision`` and write its output to ``store``; builds of a project queue up."""
    env = build_environment(project.build_environment, variables)
    log.info("build.started", revision=revision, commands=len(project.build_commands))
    with _exclusive(cache_root.with_name(cache_root.name + ".lock")):
        work_root.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="build-", dir=work_root))
        try:
            source.fetch_missing(revision)  # a partial clone's
            source.export_tree(source.tree_of(revision), workdir)
            _restore_cache(workdir, cache_root, project.build_cache)
            try:
                results = _run_all(project.build_commands, workdir, env, on_output, on_command)
                tree = store.tree_from_directory(_output_dir(workdir, project.build_output))
            finally:
                _save_cache(workdir, cache_root, project.build_cache)
        except BuildError as exc:
            log.warning("build.failed", revision=revision, error=str(exc))
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    log.info("build.finished", revision=revision, tree=tree)
    return BuildResult(tree, results)


def build_environment(extra: Mapping[str, str], variables: Mapping[str, str]) -> dict[str, str]:
    """The project's variables, then the deployment's, on top of our harmless ones (see
    :func:`shell.scrubbed_environment`, applied by ``run_shell``)."""
    return {**extra, **variables}


def _run_all(
    commands: Sequence[BuildCommandConfig],
    workdir: Path,
    env: Mapping[str, str],
    on_output: Callable[[str], None] | None,
    on_command: Callable[[CommandResult], None] | None,
) -> tuple[CommandResult, ...]:
    results: list[CommandResult] = []
    for config in commands:
        result = run_command(config.command, config.timeout, workdir, env, on_output)
        results.append(result)
        log.info("build.command", command=result.command, exit_status=result.exit_status)
        if on_command is not None:
            on_command(result)
        if result.timed_out:
            problem = f"timed out after {config.timeout:g} s"
        elif result.exit_status != 0:
            problem = f"exited with status {result.exit_status}"
        else:
            continue
        raise BuildError(
            f"build command {config.command!r} {problem}; nothing was deployed", commands=results
        )
    return tuple(results)


def run_command(
    command: str,
    timeout: float,
    cwd: Path,
    env: Mapping[str, str],
    on_output: Callable[[str], None] | None = None,
) -> CommandResult:
    """Run ``command`` with ``sh -c`` in its own process group, killed at the deadline;
    it sees ``env`` on top of our harmless variables, nothing else of ours."""
    status, text, seconds = run_shell(
        command, cwd=cwd, timeout=timeout, variables=env, on_output=on_output
    )
    return CommandResult(command, "build", status, text, seconds, timed_out=status is None)


def _output_dir(workdir: Path, build_output: str | None) -> Path:
    if build_output is None:
        return workdir
    if not _is_real_dir(workdir, build_output):
        raise BuildError(
            f"build_output {build_output!r} was not produced by the build commands;"
            " nothing was deployed"
        )
    return workdir / build_output


def _restore_cache(workdir: Path, cache_root: Path, paths: Sequence[str]) -> None:
    """Move each cached directory into the checkout where the checkout has nothing."""
    for rel in paths:
        cached, target = cache_root / rel, workdir / rel
        if os.path.lexists(target) or not _dirs_ok(workdir, rel.split("/")[:-1]):
            continue
        if _is_real_dir(cache_root, rel):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(cached, target)


def _save_cache(workdir: Path, cache_root: Path, paths: Sequence[str]) -> None:
    """Move each cached directory the build left back to the cache, over the old copy."""
    for rel in paths:
        built, cached = workdir / rel, cache_root / rel
        if not _is_real_dir(workdir, rel) or not _dirs_ok(cache_root, rel.split("/")[:-1]):
            continue
        if _is_real_dir(cache_root, rel):
            shutil.rmtree(cached)
        elif os.path.lexists(cached):
            cached.unlink()
        cached.parent.mkdir(parents=True, exist_ok=True)
        os.rename(built, cached)


def _is_real_dir(root: Path, rel: str) -> bool:
    """Whether ``root/rel`` is a directory reached without following a symlink."""
    path = root / rel
    return _dirs_ok(root, rel.split("/")) and os.path.lexists(path)


def _dirs_ok(root: Path, parts: Sequence[str]) -> bool:
    """Whether each of ``parts`` below ``root`` that exists is a directory (no symlink)."""
    path = root
    for part in parts:
        path = path / part
        try:
            if not stat.S_ISDIR(path.lstat().st_mode):
                return False
        except FileNotFoundError:
            return True
    return True


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def build(
    ctx: Context,
    waiting: list[Deployment],
    *,
    record: Deployment,
    on_output: OutputCallback | None = None,
) -> list[Deployment]:
    """Run the project's build commands once for deployments whose tree waits on them
    (one deployment, or a group's members: same project and end revision) and give
    each its server's part of the output. The commands' results are kept on ``record``;
    a failing build raises ``BuildError`` before anything touches a server."""
    first = waiting[0]
    log.info("build.queued", deployment=record.identifier, revision=first.end_revision)
    result = run_build(
        source=ctx.source(first.project),
        store=ctx.snapshots.repo,
        revision=first.end_revision,
        project=ctx.settings.get_project(first.project),
        work_root=ctx.state_dir / "builds",
        cache_root=ctx.state_dir / "build-cache" / first.project,
        variables=deployment_variables(record),  # a group's: same project, branch, revision
        on_output=on_output,
        on_command=lambda r: ctx.history.add_command_result(record.identifier, r),
    )
    return [
        ctx.history.update(
            d,
            end_tree=server_tree(
                ctx,
                d.project,
                d.server,
                result.tree,
                built=True,
                copy_config_files=d.copy_config_files,
            ),
        )
        for d in waiting
    ]


def deployment_variables(deployment: Deployment) -> dict[str, str]:
    """The ``DEPLOYHQ_*`` variables every command of ``deployment`` sees: its build
    commands, and its SSH commands on a local or an SSH server. None holds a secret."""
    return {
        "DEPLOYHQ_PROJECT": deployment.project,
        "DEPLOYHQ_SERVER": deployment.server,
        "DEPLOYHQ_DEPLOYMENT": deployment.identifier,
        "DEPLOYHQ_BRANCH": deployment.branch,
        "DEPLOYHQ_START_REVISION": deployment.start_revision or "",
        "DEPLOYHQ_END_REVISION": deployment.end_revision,
        "DEPLOYHQ_ROLLBACK": "1" if deployment.is_rollback else "0",
    }
