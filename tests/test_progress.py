"""The progress display: the phase a deployment is in (building, connecting, planning,
uploading), then files done of total; never a bare ``0/?``."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
from pathlib import Path

from rich.console import Console

import deployhq_lite as dhq
from deployhq_lite.cli.common import open_progress_bar
from deployhq_lite.deployments.options import Phase, PhasedProgress
from deployhq_lite.testing.plugin import CLI, Site
from tests.test_groups import group_config, local_second


class Recorder:
    """A PhasedProgress that keeps what it hears, in order."""

    def __init__(self) -> None:
        self.heard: list[str] = []

    def phase(self, name: str) -> None:
        self.heard.append(str(name))

    def __call__(self, done: int, total: int, path: str) -> None:
        if not self.heard or not self.heard[-1].startswith("files "):
            self.heard.append("files ")
        self.heard[-1] = f"files {done}/{total}"


def test_progress_bar_names_each_phase_then_counts_files() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, color_system=None)
    with open_progress_bar("deploying", console) as bar:
        assert isinstance(bar, PhasedProgress)
        for phase in Phase:
            bar.phase(phase)
            # the phase in words and a bar; no count before the total is known (was "0/?")
            assert re.fullmatch(f"deploying: {phase} ━+", last_frame(screen)), screen.getvalue()
        bar(3, 10, "a.txt")
        bar.phase("uploading")  # draw now
        assert re.fullmatch("deploying: uploading ━+ +3/10", last_frame(screen))
    assert "/?" not in screen.getvalue()


def last_frame(screen: io.StringIO) -> str:
    """The line the bar drew last (each frame starts by erasing the line)."""
    return screen.getvalue().split("\x1b[2K")[-1].strip()


def test_deploy_and_rollback_report_their_phases(site: Site) -> None:
    site.config.write_text(
        site.config.read_text().replace(
            'branch = "main"\n',
            'branch = "main"\nbuild_commands = [{ command = "echo built > built.txt" }]\n',
        )
    )
    site.repo.commit({"index.html": "one"})
    site.repo.commit({"index.html": "two", "more.txt": "m"})
    with dhq.Engine(site.config) as engine:
        first = engine.deploy("website", "production", revision="HEAD~1")
        progress = Recorder()
        engine.deploy("website", "production", on_progress=progress)
        assert progress.heard == ["building", "connecting", "planning", "uploading", "files 2/2"]
        progress = Recorder()
        engine.rollback("website", first.identifier, on_progress=progress)
        assert progress.heard == ["building", "connecting", "planning", "uploading", "files 2/2"]
    assert site.files() == {"index.html": b"one", "built.txt": b"built\n"}


def test_group_members_report_their_phases_by_server(site: Site, tmp_path: Path) -> None:
    group_config(site, local_second(tmp_path), order="sequential")
    site.repo.commit({"index.html": "one"})
    progress = Recorder()
    with dhq.Engine(site.config) as engine:
        engine.deploy("website", "web", on_progress=progress)
    assert progress.heard == [
        "production: connecting",
        "production: planning",
        "production: uploading",
        "files 1/1",
        "production2: connecting",
        "production2: planning",
        "production2: uploading",
        "files 2/2",
    ]


def run_on_terminal(*args: str | Path) -> tuple[int, str, str]:
    """The console script with stderr on a pseudo-terminal: (status, stdout, terminal)."""
    master, slave = pty.openpty()
    with subprocess.Popen(
        [str(CLI), *(str(a) for a in args)],
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
    ) as proc:
        os.close(slave)
        screen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every end of the terminal is closed
                break
            if not chunk:
                break
            screen += chunk
        os.close(master)
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
    return proc.returncode, out, screen.decode(errors="replace")


def test_cli_progress_on_a_terminal_names_the_phases(site: Site) -> None:
    site.config.write_text(
        site.config.read_text().replace(
            'branch = "main"\n', 'branch = "main"\nbuild_commands = [{ command = "true" }]\n'
        )
    )
    site.repo.commit({"index.html": "one", "two.txt": "2"})
    status, out, screen = run_on_terminal(
        "deploy", "website", "-s", "production", "--config", site.config
    )
    assert status == 0, screen
    assert "completed" in out
    for phase in Phase:
        assert f"deploying: {phase}" in screen
    assert "/?" not in screen
