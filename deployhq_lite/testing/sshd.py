"""A real OpenSSH ``sshd`` on 127.0.0.1 for tests: its own config, keys and port.

>>> with start_sshd(tmp_path) as server:                     # doctest: +SKIP
...     server.port, server.user, server.user_key, server.known_hosts

The server runs as the current user (root in CI), accepts only the generated user key,
serves SFTP with ``internal-sftp`` and writes nothing outside ``directory``. With
``sftp_only`` it runs no commands (``ForceCommand internal-sftp``, as many hosting
servers): every session is SFTP, whatever command is asked for.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import ServerConfig

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


@dataclass(frozen=True, slots=True)
class SSHServer:
    host: str
    port: int
    user: str
    directory: Path
    user_key: Path  # private key (ed25519, no passphrase)
    host_key_public: str  # "ssh-ed25519 AAAA..."
    known_hosts: Path  # OpenSSH known_hosts naming [127.0.0.1]:port

    def server_config(self, root: Path) -> ServerConfig:
        """A ``protocol_type = "ssh"`` server for ``root`` here: the user key, this
        known_hosts, no agent."""
        from ..config import ServerConfig  # pydantic loads when a test asks, not on import

        return ServerConfig(
            protocol_type="ssh",
            host=self.host,
            port=self.port,
            user=self.user,
            root=root,
            key_path=self.user_key,
            known_hosts_path=self.known_hosts,
            use_agent=False,
        )


def find_sshd() -> str:
    for candidate in (*SSHD_CANDIDATES, shutil.which("sshd") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("sshd not found: install openssh-server (bash .ci/run does)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(path: Path) -> str:
    """Make an ed25519 key pair without a passphrase at ``path``; return the public line."""
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "deployhq-lite-test",
            "-f",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    return path.with_suffix(".pub").read_text().strip()


def _config(directory: Path, port: int, *, sftp_only: bool) -> str:
    return "\n".join(
        [
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {directory / 'host_key'}",
            f"PidFile {directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {directory / 'authorized_keys'}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            "Subsystem sftp internal-sftp",
            *(["ForceCommand internal-sftp"] if sftp_only else []),
            "LogLevel ERROR",
            "",
        ]
    )


@contextmanager
def start_sshd(
    directory: Path, *, timeout: float = 10.0, sftp_only: bool = False
) -> Iterator[SSHServer]:
    """Start sshd in the foreground; stop it (and wait for it) when the block ends.
    ``sftp_only``: no commands run, only SFTP (``ForceCommand internal-sftp``)."""
    directory.mkdir(parents=True, exist_ok=True)
    host_public = keygen(directory / "host_key")
    user_public = keygen(directory / "user_key")
    (directory / "authorized_keys").write_text(user_public + "\n")
    port = free_port()
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_public}\n")
    config = directory / "sshd_config"
    config.write_text(_config(directory, port, sftp_only=sftp_only))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation
    log = (directory / "sshd.log").open("wb")
    proc = subprocess.Popen([find_sshd(), "-D", "-e", "-f", str(config)], stderr=log)
    try:
        _wait_listening(port, proc, timeout, directory / "sshd.log")
        yield SSHServer(
            host="127.0.0.1",
            port=port,
            user=getpass.getuser(),
            directory=directory,
            user_key=directory / "user_key",
            host_key_public=host_public,
            known_hosts=directory / "known_hosts",
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout} s")
