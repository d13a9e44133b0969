"""Inputs that once crashed with a traceback: NUL bytes in configured paths, file names
that are not UTF-8 (deployed byte-exact, shown escaped), and partial clones."""

from __future__ import annotations

import subprocess

import pytest

import deployhq_lite as dhq
from deployhq_lite.config import load_settings
from deployhq_lite.testing.plugin import Site
from deployhq_lite.testing.plugin import run_cli as run

# -- NUL in a configured path ----------------------------------------------------------------


def one_error_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("key", "line_start"),
    [
        ("state_dir", "state_dir"),
        ("root", "projects.website.servers.production.root"),
        ("repository", "projects.website.repository"),
    ],
)
def test_nul_in_a_configured_path_is_a_config_error(site: Site, key: str, line_start: str) -> None:
    site.repo.commit({"index.html": "hi"})
    text = site.config.read_text()
    start = text.index(f"{key} = ")
    end = text.index("\n", start)
    site.config.write_text(text[:start] + text[start : end - 1] + '\\u0000x"' + text[end:])

    line = one_error_line(run("deploy", "website", "-s", "production", "--config", site.config), 2)

    assert line.startswith(f"error: {site.config}: {line_start}: ")
    assert "NUL" in line
    with pytest.raises(dhq.ConfigError, match="NUL"):
        load_settings(site.config)
    assert not site.root.exists()
