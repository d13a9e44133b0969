"""Build real git repositories quickly with ``git fast-import``: the demo's sample
repository, and the repositories of the tests, fixtures and benchmarks. It runs the git
CLI with an isolated config (``GIT_ENV``) and imports nothing of ours.

>>> repo = GitRepoBuilder.create(tmp_path / "site")            # doctest: +SKIP
>>> first = repo.commit({"index.html": "<h1>hi</h1>", "run.sh": Executable("echo")})
>>> second = repo.commit({"index.html": None, "link": Symlink("run.sh")})  # None deletes
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Executable:
    content: str | bytes


@dataclass(frozen=True, slots=True)
class Symlink:
    target: str


Content = str | bytes | Executable | Symlink | None

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}


def git(*args: str, cwd: Path, stdin: bytes | None = None) -> str:
    """Run the git CLI with an isolated config; return stdout."""
    env = {**os.environ, **GIT_ENV}
    # git from PATH, argv of our own making: the demo's and the tests' fixed commands
    done = subprocess.run(  # noqa: S603
        ["git", *args],  # noqa: S607
        cwd=cwd,
        input=stdin,
        capture_output=True,
        env=env,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode()


def _data(payload: bytes) -> bytes:
    return b"data %d\n" % len(payload) + payload + b"\n"


def _quote(path: str) -> bytes:
    raw = os.fsencode(path)  # a name that is not UTF-8 holds lone surrogates
    if any(c in raw for c in b'"\n\\') or raw.startswith(b'"') or b" " in raw:
        escaped = raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n")
        return b'"' + escaped + b'"'
    return raw


class GitRepoBuilder:
    """A git repository on disk with a branch you add commits to."""

    def __init__(self, path: Path, branch: str = "main") -> None:
        self.path = path
        self.branch = branch
        self._time = 1_700_000_000

    @classmethod
    def create(cls, path: Path, *, bare: bool = False, branch: str = "main") -> GitRepoBuilder:
        path.mkdir(parents=True, exist_ok=True)
        git("init", "-q", *(["--bare"] if bare else []), "-b", branch, str(path), cwd=path)
        return cls(path, branch)

    def commit(
        self, files: Mapping[str, Content], message: str = "change", *, replace: bool = False
    ) -> str:
        """Commit ``files`` on top of the branch (``replace`` starts from an empty tree)."""
        self._time += 60
        ref = f"refs/heads/{self.branch}"
        parent = self.head()
        stream = [
            f"commit {ref}\n".encode(),
            f"committer Test Author <author@example.com> {self._time} +0000\n".encode(),
            _data(message.encode()),
        ]
        if parent:
            stream.append(f"from {parent}\n".encode())
        if replace:
            stream.append(b"deleteall\n")
        for path, content in files.items():
            stream.append(self._file_command(path, content))
        git("fast-import", "--quiet", "--force", cwd=self.path, stdin=b"".join(stream))
        head = self.head()
        assert head is not None
        return head

    @staticmethod
    def _file_command(path: str, content: Content) -> bytes:
        quoted = _quote(path)
        if content is None:
            return b"D " + quoted + b"\n"
        mode = b"100644"
        if isinstance(content, Executable):
            mode, content = b"100755", content.content
        elif isinstance(content, Symlink):
            mode, content = b"120000", content.target
        if isinstance(content, str):
            payload = os.fsencode(content) if mode == b"120000" else content.encode()
        else:
            payload = content
        return b"M " + mode + b" inline " + quoted + b"\n" + _data(payload)

    def head(self) -> str | None:
        try:
            return git(
                "rev-parse", "--verify", "-q", f"refs/heads/{self.branch}", cwd=self.path
            ).strip()
        except RuntimeError:
            return None

    def tag(self, name: str, revision: str | None = None) -> None:
        git("tag", name, revision or f"refs/heads/{self.branch}", cwd=self.path)
