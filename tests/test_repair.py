"""``deploy --repair`` and ``deploy --full``: a server brought back to what its latest
deployment put there, or rewritten whole; on real directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from deployhq_lite.marker import MARKER_PATH
from deployhq_lite.repobuilder import Executable, Symlink
from deployhq_lite.testing.plugin import Site, run_cli

FILES = {
    "index.html": "<h1>home</h1>\n",
    "bin/run": Executable("#!/bin/sh\necho run\n"),
    "css/site.css": "body{}\n",
    "docs/a.txt": "a\n",
    "docs/b.txt": "b\n",
    "link": Symlink("index.html"),
}
AS_DEPLOYED = {
    "index.html": b"<h1>home</h1>\n",
    "bin/run*": b"#!/bin/sh\necho run\n",
    "css/site.css": b"body{}\n",
    "docs/a.txt": b"a\n",
    "docs/b.txt": b"b\n",
    "link": "-> index.html",
}


def cli(site: Site, *args: str, code: int = 0) -> dict:  # type: ignore[type-arg]
    done = run_cli(*args, "--config", site.config, "--json")
    assert done.returncode == code, done.stderr + done.stdout
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def deployed(site: Site) -> dict:  # type: ignore[type-arg]
    site.repo.commit(FILES)
    return cli(site, "deploy", "website", "-s", "production")


def drift(root: Path) -> None:
    """Every kind of difference verify knows."""
    (root / "docs/a.txt").unlink()  # missing
    (root / "index.html").write_text("<h1>HOME</h1>\n")  # modified
    (root / "bin/run").chmod(0o644)  # mode
    (root / "link").unlink()
    (root / "link").symlink_to("css/site.css")  # a symlink retargeted
    (root / "css/site.css").unlink()
    (root / "css/site.css").mkdir()  # a directory where a file belongs
    (root / "css/site.css/inside.txt").write_text("x")
    shutil.rmtree(root / "docs")
    (root / "docs").write_text("a file where a directory belongs")
    (root / "extra.txt").write_text("extra\n")  # extra


def test_repair_writes_back_what_differs_and_leaves_extras(site: Site) -> None:
    first = deployed(site)
    drift(site.root)
    preview = cli(site, "deploy", "website", "-s", "production", "--repair", "--preview")
    assert preview["status"] == "previewed"
    assert (site.root / "extra.txt").exists() and (site.root / "docs").is_file()  # untouched

    done = cli(site, "deploy", "website", "-s", "production", "--repair")
    assert done["status"] == "completed" and done["repair"] is True
    assert done["start_revision"] == done["end_revision"] == first["end_revision"]
    assert site.files() == {**AS_DEPLOYED, "extra.txt": b"extra\n"}
    changed = {c["path"]: c["change"] for c in done["changes"]}
    assert "extra.txt" not in changed and "docs/a.txt" in changed
    marker = json.loads((site.root / MARKER_PATH).read_text())
    assert marker["deployment"] == done["identifier"]
    after = cli(site, "verify", "website", "-s", "production", code=1)
    assert [(d["path"], d["kind"]) for d in after["differences"]] == [("extra.txt", "extra")]

    cleaned = cli(site, "deploy", "website", "-s", "production", "--repair", "--delete-extra")
    assert cleaned["status"] == "completed"
    assert site.files() == AS_DEPLOYED
    assert cli(site, "verify", "website", "-s", "production")["in_sync"] is True


def test_repair_restores_a_missing_marker(site: Site) -> None:
    deployed(site)
    (site.root / MARKER_PATH).unlink()
    (site.root / "index.html").unlink()
    refused = run_cli("deploy", "website", "-s", "production", "--config", site.config)
    assert refused.returncode == 3
    for advice in ("verify website --server production", "--repair", "--full"):
        assert advice in refused.stderr, refused.stderr
    done = cli(site, "deploy", "website", "-s", "production", "--repair")
    assert done["status"] == "completed"
    assert site.files() == AS_DEPLOYED
    assert (site.root / MARKER_PATH).exists()


def test_full_after_a_wiped_root_restores_everything(site: Site) -> None:
    deployed(site)
    shutil.rmtree(site.root)
    site.root.mkdir()
    done = cli(site, "deploy", "website", "-s", "production", "--full")
    assert done["full"] is True and done["status"] == "completed"
    assert site.files() == AS_DEPLOYED
    assert len(done["changes"]) == len(FILES)


def test_full_after_a_partial_wipe_deletes_only_what_the_snapshot_knows(site: Site) -> None:
    deployed(site)
    (site.root / "index.html").unlink()
    (site.root / "mine.txt").write_text("the operator's\n")
    site.repo.commit({"docs/b.txt": None, "new.txt": "new\n"})
    preview = cli(site, "deploy", "website", "-s", "production", "--full", "--preview")
    assert {c["path"] for c in preview["changes"]} >= {"index.html", "docs/b.txt", "new.txt"}
    done = cli(site, "deploy", "website", "-s", "production", "--full")
    expected = {k: v for k, v in AS_DEPLOYED.items() if k != "docs/b.txt"}
    assert site.files() == {**expected, "new.txt": b"new\n", "mine.txt": b"the operator's\n"}
    assert done["full"] is True


def test_contradicting_options_are_refused(site: Site) -> None:
    deployed(site)
    for args in (["--repair", "--full"], ["--delete-extra"], ["--repair", "-r", "HEAD"]):
        done = run_cli("deploy", "website", "-s", "production", *args, "--config", site.config)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error: "), done.stderr


def test_a_group_repairs_each_member(site: Site, tmp_path: Path) -> None:
    site.write_config()
    site.config.write_text(
        site.config.read_text()
        + "\n[projects.website.servers.production2]\n"
        + f'protocol_type = "local"\nroot = "{tmp_path / "www2"}"\n'
        + '\n[projects.website.server_groups.web]\nservers = ["production", "production2"]\n'
    )
    site.repo.commit(FILES)
    cli(site, "deploy", "website", "-s", "web")
    (tmp_path / "www2" / "index.html").write_text("changed by hand\n")
    done = cli(site, "deploy", "website", "-s", "web", "--repair")
    assert done["status"] == "completed" and done["repair"] is True
    assert (tmp_path / "www2" / "index.html").read_text() == "<h1>home</h1>\n"
    assert cli(site, "verify", "website", "-s", "web")["in_sync"] is True


def test_a_symlink_out_of_the_root_is_never_followed_by_verify_or_repair(
    site: Site, tmp_path: Path
) -> None:
    deployed(site)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_text("a\n")  # what the snapshot has at docs/a.txt
    (outside / "b.txt").write_text("not ours\n")
    shutil.rmtree(site.root / "docs")
    (site.root / "docs").symlink_to(outside)
    found = cli(site, "verify", "website", "-s", "production", code=1)
    assert {(d["path"], d["kind"]) for d in found["differences"]} == {
        ("docs", "type"),
        ("docs/a.txt", "missing"),
        ("docs/b.txt", "missing"),
    }
    done = cli(site, "deploy", "website", "-s", "production", "--repair")
    assert done["status"] == "completed"
    assert site.files() == AS_DEPLOYED
    assert (site.root / "docs").is_dir() and not (site.root / "docs").is_symlink()
    assert sorted(p.name for p in outside.iterdir()) == ["a.txt", "b.txt"]
    assert (outside / "b.txt").read_text() == "not ours\n"
