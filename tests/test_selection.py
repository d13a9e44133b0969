"""Subdirectories and excluded files: what a deployment puts on a server (issue 6)."""

from __future__ import annotations

import pytest

import deployhq_lite as dhq
from deployhq_lite.testing.plugin import Site, run_cli

SERVER = "[projects.website.servers.production]\n"


def configure(site: Site, project: str = "", server: str = "") -> None:
    text = site.write_config().read_text()
    if project:
        text = text.replace('branch = "main"\n', f'branch = "main"\n{project}', 1)
    site.config.write_text(text + server)


def test_a_subdirectory_is_deployed_alone_with_paths_relative_to_it(site: Site) -> None:
    configure(site, project='subdirectory = "public"\n')
    site.repo.commit({"public/index.html": "i", "public/css/a.css": "a", "src/app.py": "x"})
    dhq.deploy("website", "production", config=site.config)
    assert site.files() == {"index.html": b"i", "css/a.css": b"a"}
    site.repo.commit({"public/css/a.css": None, "src/app.py": "y"})
    dhq.deploy("website", "production", config=site.config)
    assert site.files() == {"index.html": b"i"}
    # the server's own subdirectory wins over the project's
    configure(site, project='subdirectory = "public"\n', server='subdirectory = "src"\n')
    done = dhq.deploy("website", "production", config=site.config)
    assert done.status is dhq.DeploymentStatus.COMPLETED
    assert site.files() == {"app.py": b"y"}


def test_excluded_paths_are_neither_uploaded_nor_deleted(site: Site) -> None:
    configure(site, server='excluded_files = ["*.log", "cache/**", "!keep.log"]\n')
    first = site.repo.commit(
        {"index.html": "1", "debug.log": "d", "keep.log": "k", "cache/x": "c", "a/cache/y": "n"}
    )
    dhq.deploy("website", "production", revision=first, config=site.config)
    assert site.files() == {"index.html": b"1", "keep.log": b"k", "a/cache/y": b"n"}
    (site.root / "server.log").write_text("written on the server")
    (site.root / "cache").mkdir()
    (site.root / "cache" / "hot").write_text("runtime cache")
    site.repo.commit({"index.html": "2", "debug.log": None, "keep.log": None, "cache/x": None})
    dhq.deploy("website", "production", config=site.config)
    assert site.files() == {
        "index.html": b"2",
        "a/cache/y": b"n",
        "server.log": b"written on the server",
        "cache/hot": b"runtime cache",
    }
    with dhq.Engine(site.config) as engine:
        oldest = engine.list_deployments("website")[-1]
    back = dhq.rollback("website", oldest.identifier, config=site.config)
    assert back.status is dhq.DeploymentStatus.COMPLETED
    assert site.files()["keep.log"] == b"k"  # what the first deployment put there
    assert site.files()["server.log"] == b"written on the server"


def test_paths_excluded_later_are_left_alone(site: Site) -> None:
    configure(site)
    site.repo.commit({"index.html": "1", "uploads/a.jpg": "a"})
    dhq.deploy("website", "production", config=site.config)
    configure(site, server='excluded_files = ["uploads/"]\n')
    site.repo.commit({"index.html": "2", "uploads/a.jpg": None})
    dhq.deploy("website", "production", config=site.config)
    assert site.files() == {"index.html": b"2", "uploads/a.jpg": b"a"}  # not deleted


def test_deployignore_in_the_repository(site: Site) -> None:
    configure(site)
    site.repo.commit(
        {
            ".deployignore": "# comment\n*.md\n/tests/\n",
            "README.md": "r",
            "tests/t.py": "t",
            "app/tests/keep.py": "k",
            "app/main.py": "m",
        }
    )
    dhq.deploy("website", "production", config=site.config)
    assert site.files() == {"app/tests/keep.py": b"k", "app/main.py": b"m"}


@pytest.mark.parametrize(
    ("project", "server", "message", "code"),
    [
        ("", 'subdirectory = "missing"\n', "subdirectory 'missing' is not a directory", 2),
        ('subdirectory = "../up"\n', "", "must be a plain relative path", 2),
    ],
)
def test_bad_subdirectories_are_clear_errors(
    site: Site, project: str, server: str, message: str, code: int
) -> None:
    configure(site, project=project, server=server)
    site.repo.commit({"index.html": "1"})
    done = run_cli("deploy", "website", "--server", "production", "--config", site.config)
    assert done.returncode == code
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not site.root.exists() or not any(site.root.iterdir())


def test_patterns_that_cannot_parse_are_one_line_errors(site: Site) -> None:
    configure(site, server='excluded_files = ["*.log", "!"]\n')
    site.repo.commit({"index.html": "1"})
    done = run_cli("deploy", "website", "--server", "production", "--config", site.config)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {site.config}: projects.website.servers.production.excluded_files: "
        "Value error, pattern '!' cannot parse (got ['*.log', '!'])"
    ]
    configure(site)
    site.repo.commit({".deployignore": "ok\n!\n"})
    done = run_cli("deploy", "website", "--server", "production", "--config", site.config)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: .deployignore: pattern '!' cannot parse"
    assert not site.root.exists() or not any(site.root.iterdir())
