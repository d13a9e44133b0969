"""Deploy and roll back over SFTP against the real OpenSSH sshd fixture."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

import deployhq_lite as dhq
from deployhq_lite.repobuilder import Executable, Symlink
from deployhq_lite.testing.plugin import Site, run_cli
from deployhq_lite.testing.sshd import SSHServer


def ssh_config(site: Site, sshd: SSHServer, **overrides: str) -> Path:
    return site.write_ssh_config(sshd, **overrides)


def test_three_revisions_then_rollback_over_sftp(site: Site, sshd: SSHServer) -> None:
    ssh_config(site, sshd)
    first = site.repo.commit(
        {"index.html": "one", "bin/run": Executable("#!/bin/sh\n"), "l": Symlink("index.html")}
    )
    site.repo.commit({"index.html": "two", "new dir/é.txt": "é", "l": Symlink("bin/run")})
    site.repo.commit({"bin/run": None, "x": "x", "new dir/é.txt": None})
    d1 = dhq.deploy("website", "production", revision=first, config=site.config)
    expected = site.files()
    dhq.deploy("website", "production", revision="HEAD~1", config=site.config)
    dhq.deploy("website", "production", config=site.config)
    assert site.files() != expected
    back = dhq.rollback("website", d1.identifier, config=site.config)
    assert back.status is dhq.DeploymentStatus.COMPLETED
    assert (
        site.files()
        == expected
        == {
            "index.html": b"one",
            "bin/run*": b"#!/bin/sh\n",
            "l": "-> index.html",
        }
    )
    assert not list(site.root.rglob("*.dhq-tmp"))
    assert not (site.root / "new dir").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"host_key_fingerprint": '"SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"'},
            "changed host key",
        ),
        ({"known_hosts_path": '"/nonexistent/known_hosts"'}, "unknown host key"),
        ({"user": '"nobody-here"'}, "authentication as nobody-here"),
    ],
)
def test_connection_refusals_are_one_line(
    site: Site, sshd: SSHServer, overrides: dict[str, str], message: str
) -> None:
    ssh_config(site, sshd, **overrides)
    site.repo.commit({"index.html": "x"})
    done = run_cli("deploy", "website", "--server", "production", "--config", site.config)
    assert done.returncode == 1
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_server_not_listening(site: Site, sshd: SSHServer) -> None:
    from deployhq_lite.testing.sshd import free_port

    ssh_config(site, sshd, port=str(free_port()))
    site.repo.commit({"index.html": "x"})
    done = run_cli("deploy", "website", "--server", "production", "--config", site.config)
    assert done.returncode == 1
    assert "cannot connect to 127.0.0.1" in done.stderr


def test_a_wrong_password_fails_in_one_line_and_never_shows_the_secret(
    site: Site, sshd: SSHServer
) -> None:
    secret = "s3cret-Value-7f1c"
    ssh_config(site, sshd, key_path='""', password_env='"DEPLOY_TEST_PASSWORD"')
    text = site.config.read_text().replace('key_path = ""\n', "")
    site.config.write_text(text)
    site.repo.commit({"index.html": "x"})
    done = run_cli(
        "deploy",
        "website",
        "--server",
        "production",
        "--config",
        site.config,
        "-vv",
        "--log-format",
        "json",
        env={"DEPLOY_TEST_PASSWORD": secret},
    )
    assert done.returncode == 1
    assert "authentication as" in done.stderr
    assert secret not in done.stdout + done.stderr
    history = (site.state_dir / "history.sqlite3").read_bytes()
    assert secret.encode() not in history


def test_servers_check_reports_key_auth_rename_and_root(site: Site, sshd: SSHServer) -> None:
    import json

    ssh_config(site, sshd)
    done = run_cli("servers", "check", "website", "production", "--json", "--config", site.config)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["host_key_fingerprint"].startswith("SHA256:")
    assert report["auth_method"] == "key"
    assert report["posix_rename"] is True
    assert report["write_size"] == 128 * 1024  # OpenSSH's limits@openssh.com allows it
    assert report["root_writable"] is True
    assert not list(site.root.iterdir())  # the probe file is gone
    wrong = run_cli(
        "servers",
        "check",
        "website",
        "production",
        "--config",
        site.config,
        env={"DEPLOYHQ_LITE_PROJECTS__WEBSITE__SERVERS__PRODUCTION__PORT": "1"},
    )
    assert wrong.returncode == 1
    assert "cannot connect" in wrong.stderr


def _trust(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("servers", "trust", "website", "production", "--config", site.config, *args)


def test_servers_trust_records_a_key_only_when_confirmed(
    site: Site, sshd: SSHServer, tmp_path: Path
) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    ssh_config(site, sshd, known_hosts_path=f'"{known}"')
    site.repo.commit({"index.html": "x"})
    offered = "SHA256:" + _fingerprint_of(sshd.host_key_public)

    refused = _trust(site)  # no terminal to ask on, no --yes: nothing recorded
    assert refused.returncode == 1
    assert offered in refused.stdout
    assert "not recorded" in refused.stderr
    wrong = _trust(site, "--fingerprint", "SHA256:" + "A" * 43)
    assert wrong.returncode == 1
    assert "nothing recorded" in wrong.stderr
    assert not known.exists()
    deploy = run_cli("deploy", "website", "--server", "production", "--config", site.config)
    assert deploy.returncode == 1
    assert "servers trust" in deploy.stderr

    done = _trust(site, "--fingerprint", offered, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["fingerprint"] == offered
    assert report["status"] == "unknown"
    assert report["recorded"] == str(known)
    assert (
        known.read_text()
        == f"[127.0.0.1]:{sshd.port} {' '.join(sshd.host_key_public.split()[:2])}\n"
    )
    assert oct(known.stat().st_mode & 0o777) == "0o600"
    again = _trust(site, "--json")
    assert json.loads(again.stdout)["status"] == "trusted"
    deploy = run_cli("deploy", "website", "--server", "production", "--config", site.config)
    assert deploy.returncode == 0, deploy.stderr


def test_servers_trust_replaces_a_changed_key_only_with_replace(
    site: Site, sshd: SSHServer, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    other = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
        check=True,
    )
    assert other.returncode == 0
    old_key = (tmp_path / "other.pub").read_text().split()[:2]
    known.write_text(
        f"# ours\nexample.org {' '.join(old_key)}\n[127.0.0.1]:{sshd.port} {' '.join(old_key)}\n"
    )
    ssh_config(site, sshd, known_hosts_path=f'"{known}"')

    refused = _trust(site, "--yes")
    assert refused.returncode == 1
    assert "changed host key" in refused.stderr
    assert "--replace" in refused.stderr
    done = _trust(site, "--yes", "--replace")
    assert done.returncode == 0, done.stderr
    text = known.read_text()
    assert f"example.org {' '.join(old_key)}" in text  # other hosts are kept
    assert text.count(old_key[1]) == 1
    assert _trust(site).returncode == 0


def test_servers_trust_never_overrides_a_pinned_fingerprint(site: Site, sshd: SSHServer) -> None:
    ssh_config(site, sshd, host_key_fingerprint='"SHA256:' + "A" * 43 + '"')
    done = _trust(site, "--yes")
    assert done.returncode == 1
    assert "host_key_fingerprint" in done.stderr
    assert "SHA256:" + _fingerprint_of(sshd.host_key_public) in done.stderr


def _fingerprint_of(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1])
    return base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def test_a_missing_root_is_made_with_its_parents_and_a_symlinked_root_followed(
    site: Site, sshd: SSHServer, tmp_path: Path
) -> None:
    site.repo.commit({"index.html": "x"})
    ssh_config(site, sshd)
    root_env = "DEPLOYHQ_LITE_PROJECTS__WEBSITE__SERVERS__PRODUCTION__ROOT"
    deep = tmp_path / "srv" / "sites" / "www"
    args = ("--server", "production", "--config", site.config)
    done = run_cli("deploy", "website", *args, env={root_env: str(deep)})
    assert done.returncode == 0, done.stderr
    assert (deep / "index.html").read_text() == "x"
    link = tmp_path / "current"
    link.symlink_to(deep)  # a root that is a symlink (Capistrano's "current") is followed
    check = run_cli(
        "servers",
        "check",
        "website",
        "production",
        "--json",
        "--config",
        site.config,
        env={root_env: str(link)},
    )
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["root"] == str(deep)


def test_the_socket_sends_at_once_and_acks_at_once_only_while_connecting(
    tmp_path: Path, sshd: SSHServer
) -> None:
    """TCP_NODELAY always (paramiko writes whole packets); quick ACKs only until the
    session has started (sshd holds small replies until they are acknowledged)."""
    import socket

    from deployhq_lite.transports.ssh.connection import _QuickAckSocket
    from deployhq_lite.transports.ssh.sftp import SFTPTransport

    with SFTPTransport(sshd.server_config(tmp_path)) as transport:
        assert transport._ssh is not None
        sock = transport._ssh.sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert isinstance(sock, _QuickAckSocket)  # Linux has TCP_QUICKACK
        assert sock.quick_acks is False  # the session has started: reads cost no extra call
        transport.put_file("x", b"x")
    assert (tmp_path / "x").read_bytes() == b"x"


# -- keys with a passphrase (issue 13, item 1) -------------------------------------------------

PASSPHRASE = "secret-Pass-4e1b"


@pytest.fixture(scope="module")
def user_keys(sshd: SSHServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Keys authorized on the sshd fixture: ed25519 and RSA with ``PASSPHRASE``, and an
    ed25519 one without a passphrase."""
    directory = tmp_path_factory.mktemp("user-keys")
    keys = {
        "ed25519": ("-t", "ed25519", "-N", PASSPHRASE),
        "rsa": ("-t", "rsa", "-b", "2048", "-N", PASSPHRASE),
        "plain": ("-t", "ed25519", "-N", ""),
    }
    made = {}
    for name, args in keys.items():
        path = directory / name
        subprocess.run(["ssh-keygen", "-q", *args, "-f", str(path)], check=True)
        with (sshd.directory / "authorized_keys").open("a") as authorized:
            authorized.write(path.with_suffix(".pub").read_text())
        made[name] = path
    return made


def passphrase_config(
    site: Site, sshd: SSHServer, key: Path, via: str, passphrase: str = PASSPHRASE
) -> dict[str, str]:
    """The server uses ``key`` copied beside the config as ``k`` (``key_path = "k"``), its
    passphrase in the environment variable PP or in the file ``pp``; the environment the
    CLI needs."""
    (site.config.parent / "k").write_bytes(key.read_bytes())
    (site.config.parent / "k").chmod(0o600)
    if via == "env":
        ssh_config(site, sshd, key_path='"k"', key_passphrase_env='"PP"')
        return {"PP": passphrase}
    (site.config.parent / "pp").write_text(passphrase + "\n")
    ssh_config(site, sshd, key_path='"k"', key_passphrase_file='"pp"')
    return {}


def _deploy(site: Site, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "deploy", "website", "--server", "production", "--config", site.config, *args, env=env
    )


def _check(site: Site, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "servers", "check", "website", "production", "--config", site.config, *args, env=env
    )


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("via", ["env", "file"])
@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_a_key_with_a_passphrase_deploys_and_checks(
    site: Site, sshd: SSHServer, user_keys: dict[str, Path], kind: str, via: str
) -> None:
    env = passphrase_config(site, sshd, user_keys[kind], via)
    site.repo.commit({"index.html": "locked key"})
    done = _deploy(site, env, "-vv", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    assert site.files() == {"index.html": b"locked key"}
    assert PASSPHRASE not in done.stdout + done.stderr
    assert PASSPHRASE.encode() not in (site.state_dir / "history.sqlite3").read_bytes()
    check = _check(site, env, "--json")
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["auth_method"] == "key"


def test_an_unencrypted_key_with_a_passphrase_set_still_works(
    site: Site, sshd: SSHServer, user_keys: dict[str, Path]
) -> None:
    env = passphrase_config(site, sshd, user_keys["plain"], "env")
    site.repo.commit({"index.html": "plain key"})
    done = _deploy(site, env)
    assert done.returncode == 0, done.stderr
    assert site.files() == {"index.html": b"plain key"}
    assert _check(site, env).returncode == 0


@pytest.mark.parametrize("via", ["env", "file"])
@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_a_wrong_passphrase_is_one_line_and_exit_1(
    site: Site, sshd: SSHServer, user_keys: dict[str, Path], kind: str, via: str
) -> None:
    env = passphrase_config(site, sshd, user_keys[kind], via, passphrase="not-it")
    site.repo.commit({"index.html": "x"})
    done = _deploy(site, env)
    assert done.returncode == 1
    line = _one_error_line(done)
    assert line == "error: server website/production: cannot decrypt key k: wrong passphrase"
    assert "not-it" not in done.stdout + done.stderr
    with dhq.Engine(site.config) as engine:
        record = engine.list_deployments("website")[0]
    assert record.status is dhq.DeploymentStatus.FAILED
    assert record.error == "server website/production: cannot decrypt key k: wrong passphrase"
    check = _check(site, env)
    assert check.returncode == 1
    assert "cannot decrypt key k: wrong passphrase" in _one_error_line(check)
    assert not site.root.exists() or not list(site.root.iterdir())


def test_an_encrypted_key_without_a_passphrase_says_what_to_set(
    site: Site, sshd: SSHServer, user_keys: dict[str, Path]
) -> None:
    passphrase_config(site, sshd, user_keys["ed25519"], "env")
    site.config.write_text(site.config.read_text().replace('key_passphrase_env = "PP"\n', ""))
    site.repo.commit({"index.html": "x"})
    for done in (_deploy(site, {}), _check(site, {})):
        assert done.returncode == 2
        line = _one_error_line(done)
        assert "key k is encrypted" in line
        assert "key_passphrase_env" in line
        assert "key_passphrase_file" in line


# -- clearer lines (issue 13, item 18) ---------------------------------------------------------


def test_a_missing_key_file_is_one_config_line(site: Site, sshd: SSHServer) -> None:
    ssh_config(site, sshd, key_path='"keys/missing"')
    site.repo.commit({"index.html": "x"})
    for done in (_deploy(site, {}), _check(site, {}), _deploy(site, {}, "--json")):
        assert done.returncode == 2
        if "--json" in done.args:
            error = json.loads(done.stdout)["error"]
        else:
            error = _one_error_line(done).removeprefix("error: ")
        assert error == "server website/production: key file keys/missing does not exist"


def test_servers_trust_takes_the_fingerprint_without_its_prefix(
    site: Site, sshd: SSHServer, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    ssh_config(site, sshd, known_hosts_path=f'"{known}"')
    digest = _fingerprint_of(sshd.host_key_public)
    done = _trust(site, "--fingerprint", digest)
    assert done.returncode == 0, done.stderr
    assert known.read_text().split()[1:] == sshd.host_key_public.split()[:2]
    wrong = _trust(site, "--fingerprint", "A" * 43)
    assert wrong.returncode == 1
    assert f"not SHA256:{'A' * 43}; nothing recorded" in wrong.stderr


def test_trusting_a_trusted_key_is_one_line_and_exit_0(site: Site, sshd: SSHServer) -> None:
    ssh_config(site, sshd)  # the fixture's known_hosts lists the key
    digest = _fingerprint_of(sshd.host_key_public)
    before = sshd.known_hosts.read_text()
    for args in ((), ("--yes",), ("--fingerprint", digest), ("--fingerprint", f"SHA256:{digest}")):
        done = _trust(site, *args)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"server website/production: key already trusted (SHA256:{digest})\n"
        assert done.stderr == ""
    assert json.loads(_trust(site, "--json").stdout)["status"] == "trusted"
    assert sshd.known_hosts.read_text() == before  # nothing recorded twice


def test_a_known_hosts_file_that_cannot_be_read_or_written_is_one_line(
    site: Site, sshd: SSHServer, tmp_path: Path
) -> None:
    digest = _fingerprint_of(sshd.host_key_public)
    ssh_config(site, sshd, known_hosts_path=f'"{tmp_path}"')  # a directory
    site.repo.commit({"index.html": "x"})
    for done in (_trust(site, "--yes"), _deploy(site, {})):
        assert done.returncode == 1
        assert f"cannot read {tmp_path}: Is a directory" in _one_error_line(done)
    (tmp_path / "file").write_text("")
    ssh_config(site, sshd, known_hosts_path=f'"{tmp_path / "file" / "known_hosts"}"')
    done = _trust(site, "--fingerprint", digest)
    assert done.returncode == 1
    assert f"cannot write {tmp_path / 'file' / 'known_hosts'}" in done.stderr
    assert "Traceback" not in done.stderr
