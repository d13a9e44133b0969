"""The HTTP API: ``serve`` and ``api-keys create``."""

from __future__ import annotations

import hashlib
import json
import secrets

import click

from .common import _engine, _opts, cli, common_options


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option(
    "--worker/--no-worker",
    default=True,
    show_default=True,
    help="Run queued deployments in this process (else start `deployhq-lite worker`s).",
)
@common_options
def serve(host: str, port: int, worker: bool) -> None:
    """Serve DeployHQ's HTTP API (rollback, deployments, previews, releases)."""
    from ..web import serve as run

    with _engine() as engine:
        run(engine.settings, host=host, port=port, worker=worker)


@cli.group("api-keys")
@common_options
def api_keys() -> None:
    """Keys for the HTTP API (only their SHA-256 is kept in the config)."""


@api_keys.command("create")
@click.argument("email")
@common_options
def create_key(email: str) -> None:
    """Print a new random API key for EMAIL, once, with the config lines to add."""
    key = secrets.token_urlsafe(32)
    digest = hashlib.sha256(key.encode()).hexdigest()
    lines = f'[api_users."{email}"]\nkey_sha256 = "{digest}"\n'
    if _opts().json:
        click.echo(json.dumps({"email": email, "api_key": key, "config": lines}))
        return
    click.echo(f"API key for {email} (shown once; keep it secret):\n\n  {key}\n")
    click.echo("Add to the config file:\n")
    click.echo(lines)
    click.echo(
        f"Then: curl --user {email}:<key> http://127.0.0.1:8080/projects/<project>/deployments"
    )
