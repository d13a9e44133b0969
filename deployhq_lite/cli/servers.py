"""Servers: check what a deployment relies on; trust a host key."""

from __future__ import annotations

import sys

import click

from ..errors import ConfigError, DeployHQLiteError, HostKeyError
from .common import (
    _engine,
    _fail,
    _opts,
    _print_json,
    cli,
    common_options,
)


@cli.group()
@common_options
def servers() -> None:
    """Check servers and trust their host keys."""


@servers.command("check")
@click.argument("project")
@click.argument("server")
@common_options
def check_server(project: str, server: str) -> None:
    """Connect to SERVER and report what a deployment would rely on."""
    with _engine() as engine:
        destination = engine.settings.destination(project, server)
        with engine.transport(destination) as transport:
            report = {"server": destination.key, "ok": True, **transport.probe()}
        if _opts().json:
            _print_json(report)
            return
        for key, value in report.items():
            click.echo(f"{key:<22}{value}")


@servers.command("trust")
@click.argument("project")
@click.argument("server")
@click.option("--yes", is_flag=True, help="Record the key without asking (check it first!).")
@click.option(
    "--fingerprint",
    "expected",
    metavar="SHA256:...",
    help="Record the key only if it has this fingerprint (obtained out of band; "
    "the SHA256: prefix is optional).",
)
@click.option("--replace", is_flag=True, help="Drop a changed key and record the new one.")
@common_options
def trust_server(project: str, server: str, yes: bool, expected: str | None, replace: bool) -> None:
    """Show the host key SERVER offers; record it in known_hosts only when confirmed."""
    with _engine() as engine:
        destination = engine.settings.destination(project, server)
        config, name = destination.config, destination.key
        if config.protocol_type != "ssh":
            _fail(ConfigError(f"server {name} is not an ssh server; nothing to trust"))
        from ..transports.ssh.connection import Connector  # paramiko: only for ssh servers

        connector = Connector(config, server=name)
        try:
            offer = connector.offered_host_key()
            report: dict[str, object] = {
                "server": name,
                "host": offer.host,
                "key_type": offer.key_type,
                "fingerprint": offer.fingerprint,
                "status": offer.status,
                "recorded": None,
            }
            expected = _full_fingerprint(expected)
            if offer.status == "trusted" and expected in (None, offer.fingerprint):
                if not _opts().json:
                    click.echo(f"server {name}: key already trusted ({offer.fingerprint})")
                _emit_report(report)
                return
            if not _opts().json:
                click.echo(f"{offer.host} offers {offer.key_type} {offer.fingerprint}")
                click.echo(offer.detail)
            if expected is not None and expected != offer.fingerprint:
                raise HostKeyError(
                    f"server {name} offers {offer.fingerprint}, not {expected}; nothing recorded",
                    server=name,
                )
            if config.host_key_fingerprint:
                raise HostKeyError(
                    f"server {name} pins host_key_fingerprint "
                    f"{config.host_key_fingerprint}; if the new key is right, set it to "
                    f"{offer.fingerprint} in the config",
                    server=name,
                )
            if not (yes or expected) and not _confirm("Trust this key and record it?"):
                raise HostKeyError(
                    f"host key of {name} not recorded; compare the fingerprint "
                    "with the server's administrator, then pass --yes or --fingerprint",
                    server=name,
                )
            report["recorded"] = str(connector.trust_host_key(offer, replace=replace))
        except DeployHQLiteError as exc:
            _fail(exc)
        _emit_report(report)


def _full_fingerprint(given: str | None) -> str | None:
    """``SHA256:<base64>`` from what a user pasted: with or without ``SHA256:``, with or
    without base64's ``=`` padding (ssh-keygen prints neither padding nor spaces)."""
    if given is None:
        return None
    digest = given.strip()
    if digest[:7].upper() == "SHA256:":
        digest = digest[7:]
    return "SHA256:" + digest.rstrip("=")


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return click.confirm(question, default=False, err=True)


def _emit_report(report: dict[str, object]) -> None:
    if _opts().json:
        _print_json(report)
    elif report.get("recorded"):
        click.echo(f"recorded in {report['recorded']}")


@servers.command("adopt")
@click.argument("project")
@click.argument("server")
@click.option(
    "--revision",
    "-r",
    help="The revision the server holds (default: the record git-ftp, PHPloy or "
    "dandelion left there).",
)
@click.option("--verify", "check", is_flag=True, help="Compare the server with it first.")
@common_options
def adopt_server(project: str, server: str, revision: str | None, check: bool) -> None:
    """Take over SERVER, deployed by another tool: record what it holds, write our marker."""
    with _engine() as engine:
        adoption = engine.adopt(project, server, revision=revision, check=check)
    done, verification = adoption.deployment, adoption.verification
    if _opts().json:
        _print_json(
            {
                **done.to_json(),
                "source": adoption.source,
                **({"verification": verification.to_json()} if verification else {}),
            }
        )
        return
    click.echo(
        f"adopted {done.project}/{done.server} at revision {done.end_revision[:12]} "
        f"(from {adoption.source}): deployment {done.identifier}"
    )
    if verification is not None and not verification.in_sync:
        click.echo(
            f"  {len(verification.differences)} differences from that revision; "
            f"`deployhq-lite verify {project} --server {server}` lists them, "
            "`deploy --repair` writes them back"
        )
    elif verification is not None:
        click.echo(f"  in sync with that revision; {verification.checked} paths checked")
