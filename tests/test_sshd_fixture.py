"""The sshd fixture is a real OpenSSH server: key auth, host key pinning, SFTP."""

from __future__ import annotations

import paramiko
import pytest

from deployhq_lite.testing.sshd import SSHServer


def connect(sshd: SSHServer, known_hosts: str | None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    if known_hosts:
        client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        sshd.host,
        port=sshd.port,
        username=sshd.user,
        key_filename=str(sshd.user_key),
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )
    return client


def test_sftp_round_trip_with_a_pinned_host_key(sshd: SSHServer) -> None:
    target = sshd.directory / "round-trip.txt"
    with connect(sshd, str(sshd.known_hosts)) as client, client.open_sftp() as sftp:
        with sftp.open(str(target), "wb") as f:
            f.write(b"over ssh\n")
        sftp.chmod(str(target), 0o755)
    assert target.read_bytes() == b"over ssh\n"
    assert target.stat().st_mode & 0o777 == 0o755


def test_unknown_host_key_is_refused(sshd: SSHServer) -> None:
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        connect(sshd, None)
