"""Inputs that once crashed with a traceback: NUL bytes in configured paths, file names
that are not UTF-8 (deployed byte-exact, shown escaped), and partial clones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import deployhq_lite as dhq
from deployhq_lite.config import load_settings
from deployhq_lite.names import escape_path, shown, unescape_path
from deployhq_lite.repobuilder import GitRepoBuilder, Symlink, git
from deployhq_lite.testing.plugin import Site
from deployhq_lite.testing.plugin import run_cli as run
from deployhq_lite.testing.sshd import SSHServer

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


def test_nul_in_a_configured_relative_path_is_a_config_error(site: Site) -> None:
    site.write_config('subdirectory = "docs\\u0000x"\n')
    with pytest.raises(dhq.ConfigError, match=r"subdirectory.*cannot hold a NUL byte"):
        load_settings(site.config)


# -- names that are not UTF-8 ----------------------------------------------------------------

# Latin-1 names, as a repository made on an old system holds them: POSIX names are bytes.
CAFE = b"caf\xe9.txt"
DIR = b"d\xfe"
NEW_DIR = b"n\xf1o"


def commit_bytes(repo: Path, files: dict[bytes, bytes | tuple[str, bytes] | None]) -> str:
    """Write ``files`` in the work tree (``("link", target)`` makes a symlink, None
    deletes), then ``git add -A`` and commit them, as a user would."""
    root = os.fsencode(repo)
    for name, content in files.items():
        path = os.path.join(root, name)
        if os.path.lexists(path):
            os.unlink(path)
        if content is None:
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(content, tuple):
            os.symlink(content[1], path)
        else:
            with open(path, "wb") as f:
                f.write(content)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "change", cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo).strip()


def revision_files(repo: Path, revision: str) -> dict[bytes, bytes | tuple[str, bytes]]:
    """Every file (content) and symlink (target) of a revision, names as bytes."""
    listing = subprocess.run(
        ["git", "ls-tree", "-r", "-z", revision], cwd=repo, capture_output=True, check=True
    ).stdout
    out: dict[bytes, bytes | tuple[str, bytes]] = {}
    for record in listing.split(b"\0")[:-1]:
        meta, _, name = record.partition(b"\t")
        mode, _, oid = meta.split(b" ")
        blob = subprocess.run(
            ["git", "cat-file", "blob", oid.decode()], cwd=repo, capture_output=True, check=True
        ).stdout
        out[name] = ("link", blob) if mode == b"120000" else blob
    return out


def server_files(root: Path) -> dict[bytes, bytes | tuple[str, bytes]]:
    """The same view of a server root (names as bytes), our marker directory left out."""
    out: dict[bytes, bytes | tuple[str, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        if dirpath == os.fsencode(root):
            dirnames[:] = [d for d in dirnames if d != b".deployhq-lite"]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, os.fsencode(root))
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            else:
                with open(path, "rb") as f:
                    out[rel] = f.read()
    return out


def show_json(site: Site, identifier: str) -> dict[str, Any]:
    done = run("deployments", "show", "website", identifier, "--config", site.config, "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def escaped(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


@pytest.mark.parametrize("transport", ["local", "sftp"])
def test_names_that_are_not_utf8_deploy_byte_exact_and_roll_back(
    site: Site, request: pytest.FixtureRequest, transport: str
) -> None:
    if transport == "sftp":
        from tests.test_sftp_e2e import ssh_config

        ssh_config(site, request.getfixturevalue("sshd"))
    repo = site.repo.path
    first = commit_bytes(
        repo,
        {
            b"index.html": b"<h1>hi</h1>",
            CAFE: b"caf\xc3\xa9",
            DIR + b"/f": b"in a Latin-1 directory",
            b"link": ("link", CAFE),
            DIR + b"/up": ("link", b"../" + CAFE),
        },
    )

    preview = run("deploy", "website", "-s", "production", "--config", site.config, "--preview")
    assert preview.returncode == 0, preview.stderr
    assert "+ caf\\xe9.txt" in preview.stdout
    done = run("deploy", "website", "-s", "production", "--config", site.config, "--json")
    assert done.returncode == 0, (done.stdout, done.stderr)
    d1 = json.loads(done.stdout)["identifier"]
    assert server_files(site.root) == revision_files(repo, first)

    second = commit_bytes(
        repo,
        {
            CAFE: b"changed",
            DIR + b"/f": None,
            DIR + b"/up": None,
            NEW_DIR + b"/g\xe8": b"new",
            b"link": ("link", NEW_DIR + b"/g\xe8"),
        },
    )
    again = run("deploy", "website", "-s", "production", "--config", site.config, "--json")
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert server_files(site.root) == revision_files(repo, second)
    assert not os.path.exists(os.path.join(os.fsencode(site.root), DIR))  # emptied: pruned

    back = run("rollback", "website", d1, "--config", site.config, "--json")
    assert back.returncode == 0, (back.stdout, back.stderr)
    assert server_files(site.root) == revision_files(repo, first)
    assert not os.path.exists(os.path.join(os.fsencode(site.root), NEW_DIR))
    assert not [n for n in server_files(site.root) if n.endswith(b".dhq-tmp")]

    # the history keeps every name losslessly escaped, and so does its JSON
    changes = {
        c["path"]: c["change"]
        for c in show_json(site, json.loads(back.stdout)["identifier"])["changes"]
    }
    assert changes == {
        escaped(CAFE): "modified",
        escaped(DIR + b"/f"): "added",
        escaped(DIR + b"/up"): "added",
        escaped(NEW_DIR + b"/g\xe8"): "deleted",
        "link": "modified",
    }
    assert {os.fsencode(unescape_path(p)) for p in changes} == {
        CAFE,
        DIR + b"/f",
        DIR + b"/up",
        NEW_DIR + b"/g\xe8",
        b"link",
    }
    assert all(c["path"].isascii() for c in show_json(site, d1)["changes"])


def test_a_failure_at_a_name_that_is_not_utf8_is_one_line_and_recorded(site: Site) -> None:
    commit_bytes(site.repo.path, {b"index.html": b"hi", DIR + b"/" + CAFE: b"x"})
    obstacle = os.path.join(os.fsencode(site.root), DIR, CAFE)  # a directory where it goes
    os.makedirs(os.path.join(obstacle, b"someone-else"))

    done = run("deploy", "website", "-s", "production", "--config", site.config)

    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "d\\xfe/caf\\xe9.txt" in line
    listed = run("deployments", "list", "website", "--config", site.config, "--json")
    [failed] = json.loads(listed.stdout)["records"]
    assert failed["status"] == "failed"
    assert "d\\xfe/caf\\xe9.txt" in failed["error"]
    assert not os.path.exists(os.path.join(os.fsencode(site.root), b".deployhq-lite"))


@given(st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\0" not in b))
def test_escaped_names_are_text_and_lossless(name: bytes) -> None:
    held = os.fsdecode(name)  # as pygit2 and os.listdir give it
    text = escape_path(held)
    text.encode("utf-8")  # valid text: fit for SQLite, JSON and a terminal
    assert unescape_path(text) == held
    assert os.fsencode(unescape_path(text)) == name
    assert shown(held).encode("utf-8")
    if "\\" not in held:
        assert shown(held) == text


@pytest.mark.parametrize(
    ("held", "text"),
    [
        ("plain/é.txt", "plain/é.txt"),
        ("caf\udce9.txt", "caf\\xe9.txt"),
        ("back\\slash\\xe9", "back\\\\slash\\\\xe9"),
        ("d\udcfe/\udcff\udc80", "d\\xfe/\\xff\\x80"),
    ],
)
def test_escape_path_examples(held: str, text: str) -> None:
    assert escape_path(held) == text
    assert unescape_path(text) == held


def test_json_logs_show_names_that_are_not_utf8_escaped(site: Site) -> None:
    commit_bytes(site.repo.path, {CAFE: b"x"})
    done = run(
        "deploy",
        "website",
        "-s",
        "production",
        "--config",
        site.config,
        "-vv",
        "--log-format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines()]
    assert {"event": "file.uploaded", "path": "caf\\xe9.txt"}.items() <= next(
        e for e in events if e["event"] == "file.uploaded"
    ).items()
    assert "\\udc" not in done.stderr


def test_a_build_with_names_that_are_not_utf8(site: Site) -> None:
    """The repository's names reach the build checkout, the output's reach the server."""
    first = commit_bytes(site.repo.path, {DIR + b"/" + CAFE: b"source", b"link": ("link", CAFE)})
    site.write_config()
    command = "mkdir out && cp -a d* link out/ && echo x > out/$(printf 'n\\\\361')"
    build = f'build_output = "out"\nbuild_commands = [{{ command = "{command}" }}]\n'
    text = site.config.read_text().replace('branch = "main"\n', 'branch = "main"\n' + build, 1)
    site.config.write_text(text)

    done = run("deploy", "website", "-s", "production", "--config", site.config)

    assert done.returncode == 0, (done.stdout, done.stderr)
    assert server_files(site.root) == {
        **revision_files(site.repo.path, first),
        b"n\xf1": b"x\n",
    }


# -- a partial clone as the repository -------------------------------------------------------


def partial_clone(site: Site, tmp_path: Path, spec: str = "blob:none") -> tuple[Path, str, str]:
    """Make the site's repository a partial clone (bare, ``--filter=blob:none``: no blob
    at all) of an origin that serves filters; return the origin and its two revisions."""
    origin = GitRepoBuilder.create(tmp_path / "origin")
    git("config", "uploadpack.allowFilter", "true", cwd=origin.path)
    first = origin.commit({"index.html": "one", "docs/a.txt": "a", "l": Symlink("docs/a.txt")})
    second = origin.commit({"index.html": "two", "docs/b.txt": "b"})
    shutil.rmtree(site.repo.path)
    url = f"file://{origin.path}"
    git("clone", "-q", "--bare", f"--filter={spec}", url, str(site.repo.path), cwd=tmp_path)
    missing = git("rev-list", "--objects", "--missing=print", "main", cwd=site.repo.path)
    assert missing.count("?") >= (5 if spec == "blob:none" else 1)  # only promised
    return origin.path, first, second


BUILD_ALL = """\
build_output = "out"
build_commands = [{ command = "mkdir out && cp -a docs l index.html out/" }]
"""


@pytest.mark.parametrize(
    ("spec", "build"),
    [("blob:none", False), ("blob:none", True), ("tree:0", False)],
    ids=["blobless", "blobless-built", "treeless"],
)
def test_a_partial_clone_deploys_and_rolls_back(
    site: Site, tmp_path: Path, spec: str, build: bool
) -> None:
    origin, first, second = partial_clone(site, tmp_path, spec)
    if build:
        text = site.config.read_text()
        site.config.write_text(
            text.replace('branch = "main"\n', 'branch = "main"\n' + BUILD_ALL, 1)
        )

    d1 = dhq.deploy("website", "production", revision=first, config=site.config)
    assert server_files(site.root) == revision_files(origin, first)
    dhq.deploy("website", "production", config=site.config)
    assert server_files(site.root) == revision_files(origin, second)
    dhq.rollback("website", d1.identifier, config=site.config)
    assert server_files(site.root) == revision_files(origin, first)


def test_a_partial_clone_whose_remote_is_gone_is_refused_in_one_line(
    site: Site, tmp_path: Path
) -> None:
    origin, _, _ = partial_clone(site, tmp_path)
    shutil.rmtree(origin)

    for args in (["--preview"], []):
        done = run("deploy", "website", "-s", "production", "--config", site.config, *args)
        line = one_error_line(done, 1)
        assert "repo is a partial clone missing 4 objects" in line  # those of the branch head
        assert "from remote 'origin' failed: fatal: " in line
        assert "does not appear to be a git repository" in line
    assert not site.root.exists()


# -- reserved names as a case-insensitive server reads them, over SFTP -----------------------


@pytest.mark.parametrize("kind", ["marker-upper", "marker-leader", "git-stream", "temp-upper"])
def test_aliases_of_reserved_names_are_refused_over_sftp(
    site: Site, sshd: SSHServer, kind: str
) -> None:
    from tests.test_failures import hostile_commit
    from tests.test_sftp_e2e import ssh_config

    ssh_config(site, sshd)
    site.repo.commit({"index.html": "v1"})
    dhq.deploy("website", "production", config=site.config)
    marker = (site.root / ".deployhq-lite" / "revision").read_bytes()
    before = server_files(site.root)

    done = run(
        "deploy", "website", "-s", "production", "--config", site.config,
        "--revision", hostile_commit(site, kind),
    )  # fmt: skip

    assert "unsafe path" in one_error_line(done, 1)
    assert (site.root / ".deployhq-lite" / "revision").read_bytes() == marker
    assert server_files(site.root) == before
