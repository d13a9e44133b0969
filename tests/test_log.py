"""Logging: JSON events on stderr with --log-format json; secrets never rendered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from deployhq_lite.log import REDACTED, redact_secrets
from deployhq_lite.testing.plugin import Site


def test_redaction_blanks_secret_keys() -> None:
    event = {
        "event": "server.connected",
        "password": "hunter2",
        "key_passphrase": "open sesame",
        "api_key": "k-123",
        "db_password": "pw",
        "host": "example.com",
    }
    out = redact_secrets(None, "info", dict(event))
    assert out["host"] == "example.com"
    for key in ("password", "key_passphrase", "api_key", "db_password"):
        assert out[key] == REDACTED
    assert "hunter2" not in json.dumps(out)


def test_cli_json_log_events_on_stderr(site: Site) -> None:
    site.repo.commit({"index.html": "hi"})
    cli = Path(sys.executable).with_name("deployhq-lite")
    done = subprocess.run(
        [
            str(cli),
            "deploy",
            "website",
            "--server",
            "production",
            "--json",
            "--log-format",
            "json",
            "--config",
            str(site.config),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines()]
    names = [e["event"] for e in events]
    for expected in (
        "deployment.created",
        "deployment.started",
        "marker.written",
        "deployment.completed",
    ):
        assert expected in names
    identifier = json.loads(done.stdout)["identifier"]
    assert all(e["deployment"] == identifier for e in events if e["event"] != "lock.acquired")
    assert names.index("deployment.started") < names.index("marker.written")


def test_cli_is_quiet_by_default(site: Site) -> None:
    site.repo.commit({"index.html": "hi"})
    cli = Path(sys.executable).with_name("deployhq-lite")
    done = subprocess.run(
        [str(cli), "deploy", "website", "--server", "production", "--config", str(site.config)],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ),
    )
    assert done.returncode == 0
    assert done.stderr == ""
    assert "completed" in done.stdout
