"""``verify``: a server compared with the snapshot of its latest deployment, on real
directories and a real sshd; every kind of difference, exclusions, groups, records."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deployhq_lite.drift import Expected, compare
from deployhq_lite.engine import Engine
from deployhq_lite.errors import DeployHQLiteError
from deployhq_lite.records import DifferenceKind, VerificationStatus
from deployhq_lite.repobuilder import Executable, Symlink
from deployhq_lite.testing.plugin import Site, run_cli
from deployhq_lite.testing.sshd import SSHServer
from deployhq_lite.transports.base import RemoteEntry

FILES = {
    "index.html": "<h1>home</h1>\n",
    "bin/run": Executable("#!/bin/sh\necho run\n"),
    "css/site.css": "body{}\n",
    "docs/a.txt": "a\n",
    "link": Symlink("index.html"),
}


def deployed(site: Site) -> str:
    site.repo.commit(FILES)
    done = run_cli("deploy", "website", "--server", "production", "--config", site.config)
    assert done.returncode == 0, done.stderr
    return site.repo.head()


def verify_json(site: Site, *extra: str, code: int) -> dict:  # type: ignore[type-arg]
    done = run_cli(
        "verify", "website", "--server", "production", "--config", site.config, "--json", *extra
    )
    assert done.returncode == code, done.stderr + done.stdout
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def kinds(result: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {d["path"]: d["kind"] for d in result["differences"]}


def test_a_server_as_deployed_is_in_sync(site: Site) -> None:
    revision = deployed(site)
    result = verify_json(site, code=0)
    assert set(result) >= {
        "project",
        "server",
        "deployment",
        "revision",
        "in_sync",
        "differences",
        "checked",
        "method",
    }
    assert result["in_sync"] is True and result["differences"] == []
    assert result["revision"] == revision
    assert result["checked"] == len(FILES)
    assert result["method"] == "git-hash-object"
    human = run_cli("verify", "website", "-s", "production", "--config", site.config)
    assert human.returncode == 0
    assert "in sync with deployment" in human.stdout


def test_every_kind_of_difference_is_found_on_a_local_server(site: Site, tmp_path: Path) -> None:
    deployed(site)
    root = site.root
    (root / "docs/a.txt").unlink()  # missing
    (root / "index.html").write_text("<h1>HOME</h1>\n")  # modified, same size: hashed
    (root / "css/site.css").write_text("body{color:red}\n")  # modified, other size
    (root / "bin/run").chmod(0o644)  # mode
    (root / "link").unlink()
    (root / "link").symlink_to("css/site.css")  # type: the symlink's target changed
    (root / "new.txt").write_text("new\n")  # extra
    outside = tmp_path / "secret.txt"
    outside.write_text("<h1>home</h1>\n")
    (root / "evil").symlink_to(outside)  # extra, never followed
    result = verify_json(site, code=1)
    assert result["in_sync"] is False
    assert kinds(result) == {
        "docs/a.txt": "missing",
        "index.html": "modified",
        "css/site.css": "modified",
        "bin/run": "mode",
        "link": "type",
        "new.txt": "extra",
        "evil": "extra",
    }
    by_path = {d["path"]: d for d in result["differences"]}
    assert by_path["link"]["expected"] == "symlink -> index.html"
    assert by_path["link"]["found"] == "symlink -> css/site.css"
    assert by_path["bin/run"] == {
        "path": "bin/run",
        "kind": "mode",
        "expected": "100755",
        "found": "100644",
    }
    assert by_path["evil"]["found"] == f"symlink -> {outside}"


def test_a_file_replaced_by_a_directory_or_a_symlink_is_a_type_change(
    site: Site, tmp_path: Path
) -> None:
    deployed(site)
    (site.root / "index.html").unlink()
    (site.root / "index.html").mkdir()
    (site.root / "index.html/inner.txt").write_text("x")
    outside = tmp_path / "outside.css"
    outside.write_text("body{}\n")  # the very bytes the snapshot has
    (site.root / "css/site.css").unlink()
    (site.root / "css/site.css").symlink_to(outside)
    (site.root / "docs/a.txt").unlink()
    (site.root / "docs").rmdir()
    (site.root / "docs").write_text("a file where a directory was\n")
    with Engine(site.config) as engine:
        [result] = engine.verify("website", "production")
    found = {(d.path, d.kind): (d.expected, d.found) for d in result.differences}
    assert found[("index.html", DifferenceKind.TYPE)] == ("file", "directory")
    assert found[("index.html/inner.txt", DifferenceKind.EXTRA)] == (None, "file")
    assert found[("css/site.css", DifferenceKind.TYPE)] == ("file", f"symlink -> {outside}")
    assert found[("docs", DifferenceKind.TYPE)] == ("directory", "file")
    assert found[("docs/a.txt", DifferenceKind.MISSING)] == ("file", None)
    assert result.in_sync is False


def test_excluded_paths_and_our_marker_are_never_reported(site: Site) -> None:
    site.write_config('excluded_files = ["logs/", "*.tmp"]\n')
    site.repo.commit({**FILES, ".deployignore": "uploads/\n"})
    assert run_cli("deploy", "website", "-s", "production", "--config", site.config).returncode == 0
    (site.root / "logs").mkdir()
    (site.root / "logs/today.log").write_text("x")
    (site.root / "cache.tmp").write_text("x")
    (site.root / "uploads").mkdir()
    (site.root / "uploads/photo.jpg").write_bytes(b"\xff\xd8")
    assert (site.root / ".deployhq-lite/revision").exists()
    result = verify_json(site, code=0)
    assert result["differences"] == []


def test_fast_compares_kind_size_and_mode_only(site: Site) -> None:
    deployed(site)
    (site.root / "index.html").write_text("<h1>HOME</h1>\n")  # same size: unseen by --fast
    (site.root / "css/site.css").write_text("body{color:red}\n")
    result = verify_json(site, "--fast", code=1)
    assert result["method"] == "fast"
    assert kinds(result) == {"css/site.css": "modified"}


def test_verifications_are_recorded_and_shown_with_the_deployment(site: Site) -> None:
    deployed(site)
    (site.root / "new.txt").write_text("new\n")
    first = verify_json(site, code=1)
    shown = json.loads(
        run_cli(
            "deployments", "show", "website", first["deployment"], "--config", site.config, "--json"
        ).stdout
    )
    assert shown["last_verified"]["identifier"] == first["identifier"]
    assert shown["last_verified"]["in_sync"] is False
    assert shown["last_verified"]["differences"] == {"extra": 1}
    human = run_cli("deployments", "show", "website", first["deployment"], "--config", site.config)
    assert "verified" in human.stdout and "1 differences" in human.stdout


def test_a_server_never_deployed_is_refused_with_what_to_do(site: Site) -> None:
    site.repo.commit(FILES)
    done = run_cli("verify", "website", "-s", "production", "--config", site.config)
    assert done.returncode == 3
    assert "no completed deployment to verify against" in done.stderr
    assert "servers adopt website production" in done.stderr


def test_a_group_verifies_each_member(site: Site, tmp_path: Path) -> None:
    site.write_config()
    site.config.write_text(
        site.config.read_text()
        + "\n[projects.website.servers.production2]\n"
        + f'protocol_type = "local"\nroot = "{tmp_path / "www2"}"\n'
        + '\n[projects.website.server_groups.web]\nservers = ["production", "production2"]\n'
    )
    site.repo.commit(FILES)
    assert run_cli("deploy", "website", "-s", "web", "--config", site.config).returncode == 0
    (tmp_path / "www2" / "index.html").unlink()
    done = run_cli("verify", "website", "-s", "web", "--config", site.config, "--json")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["server"] == "web" and result["in_sync"] is False
    servers = {s["server"]: s for s in result["servers"]}
    assert servers["production"]["in_sync"] is True
    assert kinds(servers["production2"]) == {"index.html": "missing"}


@pytest.mark.parametrize(
    ("endpoint", "method"),
    [("sshd", "git-hash-object"), ("sshd_sftp_only", "sftp-read")],
    ids=["commands", "sftp-only"],
)
def test_every_kind_of_difference_is_found_on_an_ssh_server(
    site: Site, tmp_path: Path, request: pytest.FixtureRequest, endpoint: str, method: str
) -> None:
    site.write_ssh_config(request.getfixturevalue(endpoint))
    deployed(site)
    root = site.root
    (root / "docs/a.txt").unlink()
    (root / "index.html").write_text("<h1>HOME</h1>\n")  # same size: hashed on the server
    os.chmod(root / "bin/run", 0o644)
    (root / "link").unlink()
    (root / "link").symlink_to("css/site.css")
    (root / "css/site.css").unlink()
    (root / "css/site.css").mkdir()  # a file replaced by a directory
    (root / "extra.txt").write_text("x")
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (root / "evil").symlink_to(outside)
    result = verify_json(site, code=1)
    assert result["method"] == method
    assert kinds(result) == {
        "docs/a.txt": "missing",
        "index.html": "modified",
        "bin/run": "mode",
        "link": "type",
        "css/site.css": "type",
        "extra.txt": "extra",
        "evil": "extra",
    }
    repaired = run_cli(
        "deploy",
        "website",
        "-s",
        "production",
        "--repair",
        "--delete-extra",
        "--config",
        site.config,
    )
    assert repaired.returncode == 0, repaired.stderr
    assert verify_json(site, code=0)["in_sync"] is True
    assert outside.read_text() == "secret"


def test_a_verification_that_cannot_read_the_server_is_recorded_failed(site: Site) -> None:
    deployed(site)
    for path in sorted(site.root.rglob("*"), reverse=True):
        path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
    site.root.rmdir()
    site.root.write_text("not a directory any more")
    with Engine(site.config) as engine:
        with pytest.raises(DeployHQLiteError) as excinfo:
            engine.verify("website", "production")
        [row] = engine.history.list_verifications("website", "production")
    assert row.status is VerificationStatus.FAILED
    assert row.error == str(excinfo.value)
    assert "website/production" in row.error


# -- the comparison, as values ----------------------------------------------------------------


def test_compare_names_the_files_whose_content_must_be_hashed() -> None:
    expected = {
        "a": Expected("file", "1" * 40, 3),
        "b": Expected("executable", "2" * 40, 5),
        "c": Expected("file", "3" * 40, 7),
        "d/e": Expected("symlink", "4" * 40, 1, "a"),
    }
    listed = {
        "a": RemoteEntry("file", 3, 0o644),
        "b": RemoteEntry("file", 5, 0o755),
        "c": RemoteEntry("file", 8, 0o644),
        "d": RemoteEntry("dir", 0, 0o755),
        "d/e": RemoteEntry("symlink", 1, 0o777, "a"),
        "d/f": RemoteEntry("dir", 0, 0o755),
    }
    result = compare(expected, listed)
    assert result.to_hash == ["a", "b"]
    assert [(d.path, d.kind) for d in result.differences] == [("c", DifferenceKind.MODIFIED)]
    assert result.checked == 4


def test_an_ssh_server_is_listed_the_same_by_find_and_over_sftp(
    tmp_path: Path, sshd: SSHServer
) -> None:
    from deployhq_lite.transports.ssh import tree
    from deployhq_lite.transports.ssh.sftp import SFTPTransport

    root = tmp_path / "root"
    (root / "a/b").mkdir(parents=True)
    (root / "a/b/f.txt").write_text("x")
    (root / "odd\nname $(x)").write_text("y")
    (root / "run").write_text("#!/bin/sh\n")
    (root / "run").chmod(0o755)
    (root / "out").symlink_to(tmp_path)  # listed, never entered
    (root / "skip").mkdir()
    (root / "skip/inner").write_text("z")
    with SFTPTransport(sshd.server_config(root), server="t/s") as transport:
        assert transport._ssh is not None
        prune = lambda p: p == "skip"  # noqa: E731
        by_find = tree.list_remote(transport._ssh, transport._root, prune, open_timeout=10)
        over_sftp = list(tree.walk(transport._client(), transport._root, prune))
    assert by_find is not None
    assert sorted(by_find) == sorted(over_sftp)
    assert {p for p, _ in by_find} == {"a", "a/b", "a/b/f.txt", "odd\nname $(x)", "run", "out"}
