"""The HTTP API: ``serve`` and ``api-keys create``."""

from __future__ import annotations

import contextlib
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
@click.option(
    "--certfile",
    type=click.Path(exists=True, dir_okay=False),
    help="Serve HTTPS with this PEM certificate (chain), and its key unless --keyfile.",
)
@click.option(
    "--keyfile",
    type=click.Path(exists=True, dir_okay=False),
    help="The PEM private key of --certfile.",
)
@common_options
def serve(host: str, port: int, worker: bool, certfile: str | None, keyfile: str | None) -> None:
    """Serve DeployHQ's HTTP API (rollback, deployments, previews, releases).

    Prints `listening on URL` (stderr) once the port is taken; with -v, one line per
    request: method, path, status and milliseconds."""
    from ..web import serve as run  # FastAPI and uvicorn load for serve only

    if keyfile and not certfile:
        raise click.UsageError("--keyfile needs --certfile")
    with _engine() as engine, contextlib.suppress(KeyboardInterrupt):  # how a server stops
        run(
            engine.settings,
            host=host,
            port=port,
            worker=worker,
            certfile=certfile,
            keyfile=keyfile,
            on_listening=lambda url: click.echo(f"listening on {url}", err=True),
        )


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
