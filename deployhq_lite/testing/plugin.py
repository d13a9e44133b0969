"""pytest fixtures for deployhq_lite and for projects that use it (a pytest11 plugin).

- ``isolated_env``: HOME, git config and ``DEPLOYHQ_LITE_*`` variables isolated per
  test; autouse when the ini option ``deployhq_lite_isolate = true`` is set.
- ``git_repo``: a :class:`GitRepoBuilder` in a temporary directory.
- ``site``: a project with one local server, its config file written, ready to deploy.
- ``sshd``: a real OpenSSH server on 127.0.0.1 with generated keys (session scope).
- ``sshd_sftp_only``: the same, but it runs no commands (``ForceCommand internal-sftp``).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from ..repobuilder import GIT_ENV, GitRepoBuilder
from .sshd import SSHServer, start_sshd

CLI = Path(sys.executable).with_name("deployhq-lite")

# path -> ("dir",) | ("symlink", target) | ("file", bytes, permission bits)
Tree = dict[str, tuple[object, ...]]


def read_tree(root: Path, *, skip_marker: bool = True) -> Tree:
    """Everything under ``root`` (symlinks not followed), our marker directory left out."""
    tree: Tree = {}
    if not root.exists():
        return tree
    for dirpath, dirnames, filenames in os.walk(root):
        if skip_marker and Path(dirpath) == root and ".deployhq-lite" in dirnames:
            dirnames.remove(".deployhq-lite")
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                tree[rel] = ("symlink", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                tree[rel] = ("dir",)
            else:
                tree[rel] = ("file", path.read_bytes(), stat.S_IMODE(info.st_mode))
    return tree


def run_cli(
    *args: str | Path, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real ``deployhq-lite`` console script of this environment, as a user runs it."""
    return subprocess.run(
        [str(CLI), *(str(a) for a in args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        check=False,
        timeout=120,
    )


@pytest.fixture
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME, no system or global git config, no DEPLOYHQ_LITE_* variables."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    for key in list(os.environ):
        if key.startswith("DEPLOYHQ_LITE_") or key.startswith("GIT_DIR"):
            monkeypatch.delenv(key)
    return home


@pytest.fixture
def git_repo(tmp_path: Path, isolated_env: Path) -> GitRepoBuilder:
    return GitRepoBuilder.create(tmp_path / "repo")


class SSHEndpoint(Protocol):
    """Where an SSH server listens and how to log in (the sshd fixture, a test server)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def user(self) -> str: ...
    @property
    def user_key(self) -> Path: ...
    @property
    def known_hosts(self) -> Path: ...


@dataclass
class Site:
    """A project ``website`` with a local server ``production`` in ``tmp_path``."""

    repo: GitRepoBuilder
    config: Path
    root: Path
    state_dir: Path

    def write_config(self, extra: str = "") -> Path:
        self.config.write_text(
            f'state_dir = "{self.state_dir}"\n\n'
            "[projects.website]\n"
            'name = "Website"\n'
            f'repository = "{self.repo.path}"\n'
            'branch = "main"\n\n'
            "[projects.website.servers.production]\n"
            'name = "Production Server"\n'
            'protocol_type = "local"\n'
            f'root = "{self.root}"\n' + extra
        )
        return self.config

    def write_ssh_config(self, endpoint: SSHEndpoint, **overrides: str) -> Path:
        """``write_config`` with the server ``production`` over SSH to ``endpoint`` (the
        same root, on this host); ``overrides`` are more server keys, as TOML values."""
        keys = {
            "host": f'"{endpoint.host}"',
            "port": str(endpoint.port),
            "user": f'"{endpoint.user}"',
            "key_path": f'"{endpoint.user_key}"',
            "known_hosts_path": f'"{endpoint.known_hosts}"',
            "use_agent": "false",
            **overrides,
        }
        text = self.write_config().read_text()
        text = text.replace('protocol_type = "local"', 'protocol_type = "ssh"')
        self.config.write_text(text + "".join(f"{k} = {v}\n" for k, v in keys.items()))
        return self.config

    def files(self) -> dict[str, bytes | str]:
        """What the server root holds now: bytes for files, ``-> target`` for symlinks,
        with the exec bit as a ``*`` suffix on the path; our marker directory left out."""
        out: dict[str, bytes | str] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = Path(dirpath).relative_to(self.root)
            if rel_dir.parts[:1] == (".deployhq-lite",):
                continue
            for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
                path = Path(dirpath) / name
                rel = str(rel_dir / name) if str(rel_dir) != "." else name
                if path.is_symlink():
                    out[rel] = "-> " + os.readlink(path)
                elif os.access(path, os.X_OK):
                    out[rel + "*"] = path.read_bytes()
                else:
                    out[rel] = path.read_bytes()
        return out


@pytest.fixture
def site(tmp_path: Path, git_repo: GitRepoBuilder) -> Site:
    s = Site(git_repo, tmp_path / "deployhq-lite.toml", tmp_path / "www", tmp_path / "state")
    s.write_config()
    return s


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """A real OpenSSH sshd on 127.0.0.1 (one per test session), key auth, internal-sftp."""
    with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def sshd_sftp_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """A real OpenSSH sshd on 127.0.0.1 that runs no commands, only SFTP (``ForceCommand
    internal-sftp``, as many hosting servers): one per test session."""
    with start_sshd(tmp_path_factory.mktemp("sshd-sftp-only"), sftp_only=True) as server:
        yield server


@pytest.fixture(autouse=True)
def _deployhq_lite_isolation(request: pytest.FixtureRequest) -> Iterator[None]:
    """Autouse in this project's own tests (tests/ asks for it via conftest)."""
    if request.config.getini("deployhq_lite_isolate"):
        request.getfixturevalue("isolated_env")
    yield


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "deployhq_lite_isolate",
        "isolate HOME, git config and DEPLOYHQ_LITE_* variables in every test",
        type="bool",
        default=False,
    )
