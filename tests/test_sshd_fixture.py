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


def test_the_sftp_only_server_serves_sftp_and_runs_no_command(sshd_sftp_only: SSHServer) -> None:
    target = sshd_sftp_only.directory / "sftp-only.txt"
    with connect(sshd_sftp_only, str(sshd_sftp_only.known_hosts)) as client:
        with client.open_sftp() as sftp, sftp.open(str(target), "wb") as f:
            f.write(b"still sftp\n")
        _, stdout, _ = client.exec_command(f"echo ran > {target}.ran; echo ran")
        assert stdout.read() == b"This service allows sftp connections only.\n"
        assert stdout.channel.recv_exit_status() != 0
    assert target.read_bytes() == b"still sftp\n"
    assert not target.with_name("sftp-only.txt.ran").exists()
