"""No traceback reaches a user: whatever a transport's backend raises, the CLI says it in
one ``error:`` line naming the server, and the deployment is recorded failed with it.

Each exception is injected at a real boundary (a function of the local transport that
writes a file; a method of the real, connected paramiko SFTP client); the rest is real:
a git repository, the CLI in process, the history, the sshd fixture.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko
import pytest
from click.testing import CliRunner

import deployhq_lite as dhq
from deployhq_lite.cli import cli
from deployhq_lite.errors import DeployHQLiteError, TransportError
from deployhq_lite.testing.plugin import Site
from deployhq_lite.testing.sshd import SSHServer
from deployhq_lite.transports import local
from deployhq_lite.transports.ssh.sftp import SFTPTransport
from tests.test_sftp_e2e import ssh_config

FAULTS: list[Exception] = [
    TypeError("password must be bytes"),
    ValueError("injected"),
    KeyError("injected"),
    IndexError("injected"),
    AttributeError("injected"),
    RuntimeError("injected\nover two lines"),
    EOFError(),
    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    TimeoutError("timed out"),  # socket.timeout
    OSError(errno.EIO, "Input/output error"),
    struct.error("unpack requires a buffer of 4 bytes"),
    paramiko.SSHException("injected"),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
]


def _name(exc: Exception) -> str:
    module = type(exc).__module__.partition(".")[0]
    return type(exc).__name__ if module == "builtins" else f"{module}.{type(exc).__name__}"


def _raiser(exc: Exception) -> Callable[..., Any]:
    def fail(*args: object, **kwargs: object) -> Any:
        raise exc

    return fail


def _break_local_writes(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    monkeypatch.setattr(local, "_write_at", _raiser(exc))


def _break_sftp_client(
    monkeypatch: pytest.MonkeyPatch, exc: Exception, *, pipelined_only: bool
) -> None:
    """Once connected, the client's reader raises ``exc`` for every reply (only for
    the replies to pipelined requests, with ``pipelined_only``)."""
    opened = SFTPTransport._open

    def open_then_break(transport: SFTPTransport) -> None:
        opened(transport)
        client: Any = transport._sftp
        read = client._read_response

        def read_response(*args: object, **kwargs: object) -> Any:
            if pipelined_only and transport._pipe is None:
                return read(*args, **kwargs)
            raise exc

        client._read_response = read_response

    monkeypatch.setattr(SFTPTransport, "_open", open_then_break)


def _deploy_in_process(site: Site) -> tuple[int, str, BaseException | None]:
    site.repo.commit({"index.html": "one", "docs/a.txt": "a", "docs/deep/b.txt": "b"})
    result = CliRunner().invoke(
        cli, ["deploy", "website", "--server", "production", "--config", str(site.config)]
    )
    return result.exit_code, result.stdout + result.stderr, result.exception


def _named(exc: Exception) -> str:
    """What the line must say about ``exc``: an OSError's reason, else its type."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return type(exc).__name__


def _assert_one_failed_line(site: Site, exc: Exception) -> None:
    code, output, raised = _deploy_in_process(site)
    assert isinstance(raised, SystemExit), raised  # nothing escaped the CLI
    assert code == 1, output
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    line = lines[0]
    assert line.startswith("error: ")
    assert "website/production" in line
    assert _named(exc) in line
    with dhq.Engine(site.config) as engine:
        record = engine.list_deployments("website")[0]
    assert record.status is dhq.DeploymentStatus.FAILED
    assert record.error is not None
    assert "\n" not in record.error
    assert "interrupted (" not in record.error
    assert "website/production" in record.error


@pytest.mark.parametrize("exc", FAULTS, ids=_name)
def test_local_transport_faults_are_one_line(
    site: Site, monkeypatch: pytest.MonkeyPatch, exc: Exception
) -> None:
    _break_local_writes(monkeypatch, exc)
    _assert_one_failed_line(site, exc)
    assert not site.files()


@pytest.mark.parametrize("pipelined_only", [False, True], ids=["request", "pipeline"])
@pytest.mark.parametrize("exc", FAULTS, ids=_name)
def test_sftp_transport_faults_are_one_line(
    site: Site,
    sshd: SSHServer,
    monkeypatch: pytest.MonkeyPatch,
    exc: Exception,
    pipelined_only: bool,
) -> None:
    ssh_config(site, sshd)
    _break_sftp_client(monkeypatch, exc, pipelined_only=pipelined_only)
    _assert_one_failed_line(site, exc)
    assert not site.files()


@pytest.mark.parametrize("exc", FAULTS, ids=_name)
def test_each_fault_is_a_transport_error_naming_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: Exception
) -> None:
    """The library sees the same: a ``TransportError`` (one line, the server named),
    chained to what the backend raised."""
    _break_local_writes(monkeypatch, exc)
    transport = local.LocalTransport(tmp_path, server="website/production")
    with transport, pytest.raises(DeployHQLiteError) as raised:
        transport.put_file("a/b.txt", b"x")
    assert isinstance(raised.value, TransportError)
    assert raised.value.server == "website/production"
    assert raised.value.path == "a/b.txt"
    assert raised.value.__cause__ is exc
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("server website/production: ")
