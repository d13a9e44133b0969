"""``deployhq-lite demo``: a sample repository deployed twice into a local directory,
then rolled back, all under one directory and with no config file."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import build_settings
from .engine import Engine
from .errors import ConfigError
from .records import Deployment, FileOutcome
from .repobuilder import Executable, GitRepoBuilder, Symlink

DEMO_MARK = ".deployhq-lite-demo"

REVISION_1: dict[str, Any] = {
    "index.html": "<h1>Welcome</h1>\n",
    "about.html": "<p>About us</p>\n",
    "css/site.css": "body { color: black; }\n",
    "bin/clear-cache.sh": Executable("#!/bin/sh\necho cache cleared\n"),
    "current": Symlink("index.html"),
    "docs/changelog.txt": "1.0 first release\n",
}
REVISION_2: dict[str, Any] = {
    "index.html": "<h1>Welcome back</h1>\n",
    "css/site.css": "body { color: navy; }\n",
    "docs/changelog.txt": None,
    "blog/first post.html": "<article>Hello, world</article>\n",
    "bin/clear-cache.sh": "#!/bin/sh\necho no longer executable\n",
    "current": Symlink("about.html"),
}


def default_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "deployhq-lite" / "demo"


def prepare(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()):
        if not (directory / DEMO_MARK).exists():
            raise ConfigError(
                f"{directory} is not empty and not a demo directory; pick another --dir"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DEMO_MARK).write_text("made by deployhq-lite demo; safe to delete\n")


def run_demo(
    directory: str | None,
    *,
    echo: Callable[[str], None],
    show: Callable[[Deployment, list[FileOutcome]], None],
    as_json: bool = False,
) -> None:
    root = Path(directory) if directory else default_dir()
    prepare(root)
    repo = GitRepoBuilder.create(root / "repo")
    first = repo.commit(REVISION_1, "First release")
    second = repo.commit(REVISION_2, "Second release")
    settings = build_settings(
        {
            "state_dir": str(root / "state"),
            "projects": {
                "website": {
                    "name": "Demo Website",
                    "repository": str(root / "repo"),
                    "branch": "main",
                    "servers": {"local": {"name": "Local directory", "root": str(root / "site")}},
                }
            },
        }
    )
    steps: list[dict[str, Any]] = []

    def step(title: str, d: Deployment, engine: Engine) -> None:
        changes = engine.file_changes(d.identifier)
        if as_json:
            steps.append({"step": title, **d.to_json(), "changes": [c.to_json() for c in changes]})
            return
        echo(f"\n== {title}")
        show(d, changes)

    with Engine(settings) as engine:
        if not as_json:
            echo(f"demo directory: {root}")
            echo(f"  repository {root / 'repo'} (two commits), site {root / 'site'}")
        d1 = engine.deploy("website", "local", revision=first)
        step("1. deploy the first revision (full upload)", d1, engine)
        d2 = engine.deploy("website", "local", revision=second)
        step("2. deploy the second revision (only the differences)", d2, engine)
        p = engine.rollback("website", d1.identifier, mode="preview")
        step("3. preview a rollback to deployment 1 (nothing written)", p, engine)
        d3 = engine.rollback("website", d1.identifier)
        step("4. roll back to deployment 1", d3, engine)
    same = _matches(root / "site", REVISION_1)
    if as_json:
        echo(
            json.dumps(
                {"directory": str(root), "steps": steps, "site_matches_first_revision": same},
                indent=2,
            )
        )
        return
    echo(f"\nsite now matches the first revision: {'yes' if same else 'NO'}")
    echo(f"try: deployhq-lite deployments list website --config {_write_config(root, settings)}")


def _matches(site: Path, files: dict[str, Any]) -> bool:
    for path, content in files.items():
        target = site / path
        if isinstance(content, Symlink):
            if not target.is_symlink() or os.readlink(target) != content.target:
                return False
            continue
        body = content.content if isinstance(content, Executable) else content
        if target.is_symlink() or target.read_text() != body:
            return False
        if isinstance(content, Executable) != os.access(target, os.X_OK):
            return False
    listed = {
        str(p.relative_to(site))
        for p in site.rglob("*")
        if (p.is_file() or p.is_symlink()) and ".deployhq-lite" not in p.parts
    }
    return listed == set(files)


def _write_config(root: Path, settings: Any) -> Path:
    path = root / "deployhq-lite.toml"
    project = settings.projects["website"]
    server = project.servers["local"]
    path.write_text(
        f'state_dir = "state"\n\n[projects.website]\nname = "{project.name}"\n'
        f'repository = "repo"\nbranch = "main"\n\n[projects.website.servers.local]\n'
        f'name = "{server.name}"\nprotocol_type = "local"\nroot = "site"\n'
    )
    return path
