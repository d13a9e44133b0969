"""``servers adopt``: take over a server another tool deployed (the real git-ftp over a
real sshd; PHPloy's and dandelion's ``.revision`` written as they write it), then deploy
to it incrementally."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deployhq_lite.marker import MARKER_PATH
from deployhq_lite.testing.plugin import Site, run_cli
from deployhq_lite.testing.sshd import SSHServer

FILES = {"index.html": "home\n", "css/site.css": "body{}\n", "docs/a.txt": "a\n"}


def cli(site: Site, *args: str, code: int = 0) -> dict:  # type: ignore[type-arg]
    done = run_cli(*args, "--config", site.config, "--json")
    assert done.returncode == code, done.stderr + done.stdout
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def export(site: Site, revision: str) -> None:
    """What another tool uploaded: the revision's files in the server root."""
    site.root.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(site.repo.path), "archive", revision],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(site.root)], input=archive, check=True)


@pytest.mark.parametrize("tool", ["phploy", "dandelion"])
def test_a_server_with_a_revision_file_is_adopted_then_deployed_incrementally(
    site: Site, tool: str
) -> None:
    first = site.repo.commit(FILES)
    export(site, first)
    # PHPloy writes the bare SHA-1; dandelion too (its default revision_file), with a newline
    (site.root / ".revision").write_text(first if tool == "phploy" else first + "\n")
    adopted = cli(site, "servers", "adopt", "website", "production")
    assert adopted["adopted"] is True and adopted["status"] == "completed"
    assert adopted["end_revision"] == first and adopted["start_revision"] is None
    assert adopted["source"] == ".revision (PHPloy or dandelion)"
    marker = json.loads((site.root / MARKER_PATH).read_text())
    assert marker["deployment"] == adopted["identifier"] and marker["revision"] == first

    second = site.repo.commit({"docs/a.txt": "changed\n"})
    done = cli(site, "deploy", "website", "-s", "production")
    assert done["start_revision"] == first and done["end_revision"] == second
    assert [(c["path"], c["change"]) for c in done["changes"]] == [("docs/a.txt", "modified")]
    assert (site.root / "docs/a.txt").read_text() == "changed\n"


def test_adopt_with_verify_reports_what_differs_from_that_revision(site: Site) -> None:
    first = site.repo.commit(FILES)
    export(site, first)
    (site.root / "docs/a.txt").write_text("edited on the server\n")
    (site.root / "css/site.css").unlink()
    adopted = cli(
        site, "servers", "adopt", "website", "production", "--revision", first[:10], "--verify"
    )
    assert adopted["source"] == "--revision"
    found = {(d["path"], d["kind"]) for d in adopted["verification"]["differences"]}
    assert found == {("docs/a.txt", "modified"), ("css/site.css", "missing")}
    human = run_cli("verify", "website", "-s", "production", "--config", site.config)
    assert human.returncode == 1  # recorded as adopted; the drift is there to repair
    repaired = cli(site, "deploy", "website", "-s", "production", "--repair")
    assert repaired["status"] == "completed"
    assert (site.root / "css/site.css").read_text() == "body{}\n"


def test_adopt_refuses_what_it_cannot_tell(site: Site) -> None:
    first = site.repo.commit(FILES)
    export(site, first)
    nothing = run_cli("servers", "adopt", "website", "production", "--config", site.config)
    assert nothing.returncode == 3
    assert "no record of another tool (.git-ftp.log, .revision)" in nothing.stderr
    assert "pass --revision REV" in nothing.stderr

    (site.root / ".revision").write_text("v1.2 deployed on friday\n")
    garbled = run_cli("servers", "adopt", "website", "production", "--config", site.config)
    assert garbled.returncode == 3
    assert ".revision (written by PHPloy or dandelion) does not hold a commit id" in (
        garbled.stderr
    )

    (site.root / ".revision").write_text("0" * 40 + "\n")
    unknown = run_cli("servers", "adopt", "website", "production", "--config", site.config)
    assert unknown.returncode == 2
    assert "not found in repository" in unknown.stderr
    assert not (site.root / MARKER_PATH).exists()
    assert len(unknown.stderr.strip().splitlines()) == 1


def test_a_server_with_our_marker_is_not_adopted(site: Site) -> None:
    site.repo.commit(FILES)
    cli(site, "deploy", "website", "-s", "production")
    done = run_cli("servers", "adopt", "website", "production", "--config", site.config)
    assert done.returncode == 3
    assert "already has a deployhq-lite marker" in done.stderr


def test_a_server_deployed_by_the_real_git_ftp_is_adopted(
    site: Site, sshd: SSHServer, tmp_path: Path
) -> None:
    if shutil.which("git-ftp") is None:
        if os.environ.get("CI"):
            pytest.fail("git-ftp is not installed (.ci/run installs it)")
        pytest.skip("git-ftp is not installed (apt-get install git-ftp)")
    first = site.repo.commit(FILES)
    site.root.mkdir()
    checkout = tmp_path / "checkout"  # git-ftp pushes from a clean work tree
    subprocess.run(["git", "clone", "-q", str(site.repo.path), str(checkout)], check=True)
    # git-ftp through curl's SFTP, with the test sshd's user key; --insecure skips curl's
    # host key check (git-ftp's option, in this test only: we never skip ours)
    pushed = subprocess.run(
        [
            "git",
            "ftp",
            "init",
            "--user",
            sshd.user,
            "--key",
            str(sshd.user_key),
            "--pubkey",
            f"{sshd.user_key}.pub",
            "--insecure",
            f"sftp://{sshd.host}:{sshd.port}{site.root}",
        ],
        cwd=checkout,
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(tmp_path)},
        timeout=120,
        check=False,
    )
    log = site.root / ".git-ftp.log"
    assert log.exists(), pushed.stdout + pushed.stderr
    assert log.read_text().strip() == first
    assert (site.root / "docs/a.txt").read_text() == "a\n"

    site.write_ssh_config(sshd)
    adopted = cli(site, "servers", "adopt", "website", "production", "--verify")
    assert adopted["source"] == ".git-ftp.log (git-ftp)"
    assert adopted["end_revision"] == first
    # git-ftp's own log is on the server, not in the revision: an extra file, left alone
    assert [(d["path"], d["kind"]) for d in adopted["verification"]["differences"]] == [
        (".git-ftp.log", "extra")
    ]
    second = site.repo.commit({"index.html": "home, again\n"})
    done = cli(site, "deploy", "website", "-s", "production")
    assert done["start_revision"] == first and done["end_revision"] == second
    assert [c["path"] for c in done["changes"]] == ["index.html"]
