"""Stacks: documents and versions from git; publishing entries to environments."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

import deployhq_lite as dhq
from deployhq_lite.errors import RefusedError, UnknownNameError
from deployhq_lite.repobuilder import GitRepoBuilder
from deployhq_lite.testing.plugin import run_cli


@dataclass
class Stack:
    repo: GitRepoBuilder
    config: Path
    delivery: dict[str, Path]

    def engine(self) -> dhq.Engine:
        return dhq.Engine(self.config)

    def cli(self, *args: str, user: str | None = "alice") -> tuple[int, str, str]:
        env = {"DEPLOYHQ_LITE_USER": user} if user else {}
        done = run_cli(*args, "--config", self.config, env=env)
        return done.returncode, done.stdout, done.stderr


def delivered(root: Path) -> dict[str, bytes]:
    """The delivery target's files (the marker directory left out)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".deployhq-lite" not in p.parts
    }


def entry(title: str, *refs: str) -> str:
    body: dict[str, object] = {"title": title}
    if refs:
        body["_references"] = list(refs)
    return json.dumps(body)


@pytest.fixture
def stack(tmp_path: Path, git_repo: GitRepoBuilder) -> Stack:
    delivery = {env: tmp_path / "delivery" / env for env in ("staging", "production")}
    config = tmp_path / "deployhq-lite.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        '[users.alice]\nrole = "editor"\nenvironments = ["staging", "production"]\n'
        '[users.bob]\nenvironments = ["staging"]\n'
        '[users.root]\nrole = "admin"\n'
        f'[stacks.blog]\nname = "Blog"\nrepository = "{git_repo.path}"\n'
        + "".join(
            f'[stacks.blog.environments.{env}]\nlocales = ["en-us", "fr-fr"]\n'
            f'protocol_type = "local"\nroot = "{root}"\n'
            for env, root in delivery.items()
        )
    )
    return Stack(git_repo, config, delivery)


def test_versions_are_the_commits_that_changed_a_document(stack: Stack) -> None:
    stack.repo.commit({"entries/post/hello.json": entry("v1"), "README.md": "not a document"})
    stack.repo.commit({"assets/logo/logo.png": b"\x89PNG1", "assets/logo/logo@2x.png": b"2"})
    stack.repo.commit({"entries/post/hello.json": entry("v2", "logo")})
    stack.repo.commit({"assets/logo/logo@2x.png": None})  # an asset changes: version 2
    stack.repo.commit({"entries/page/about.json": entry("about")})
    with stack.engine() as engine:
        catalog = engine.catalog("blog")
        assert sorted(catalog.documents) == ["about", "hello", "logo"]
        hello, logo = catalog.get("hello"), catalog.get("logo")
        assert (hello.kind, hello.content_type, hello.latest) == ("entry", "post", 2)
        assert (logo.kind, logo.latest) == ("asset", 2)
        assert catalog.references("hello", 2) == ["logo"]
        assert [p for p, _ in catalog.files("logo", 1)] == [
            "assets/logo/logo.png",
            "assets/logo/logo@2x.png",
        ]
        assert [p for p, _ in catalog.files("logo", 2)] == ["assets/logo/logo.png"]
        with pytest.raises(UnknownNameError, match="unknown document 'nope'"):
            catalog.get("nope")


def test_publish_unpublish_and_entry_rollback_deliver_exact_files(stack: Stack) -> None:
    stack.repo.commit({"entries/post/hello.json": entry("v1")})
    stack.repo.commit({"entries/post/hello.json": entry("v2"), "assets/logo/a.png": b"A"})
    code, out, err = stack.cli(
        "entries",
        "publish",
        "blog",
        "hello",
        "--environment",
        "production",
        "--version",
        "1",
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert [(i["uid"], i["locale"], i["result"]) for i in result["items"]] == [
        ("hello", "en-us", "published"),
        ("hello", "fr-fr", "published"),
    ]
    production = stack.delivery["production"]
    assert delivered(production) == {
        "en-us/entries/post/hello.json": entry("v1").encode(),
        "fr-fr/entries/post/hello.json": entry("v1").encode(),
    }
    code, out, err = stack.cli(
        "entries", "publish", "blog", "hello", "--environment", "production", "--locale", "en-us"
    )
    assert code == 0, err
    code, out, _ = stack.cli("environments", "show", "blog", "production", "--json")
    assert json.loads(out) == {"hello": 2}  # en-us, the first locale
    code, out, _ = stack.cli(
        "environments", "show", "blog", "production", "--locale", "fr-fr", "--json"
    )
    assert json.loads(out) == {"hello": 1}
    assert stack.cli("entries", "publish", "blog", "logo", "--environment", "production")[0] == 0
    assert (
        stack.cli(
            "entries",
            "unpublish",
            "blog",
            "hello",
            "--environment",
            "production",
            "--locale",
            "fr-fr",
        )[0]
        == 0
    )
    assert delivered(production) == {
        "en-us/entries/post/hello.json": entry("v2").encode(),
        "en-us/assets/logo/a.png": b"A",
        "fr-fr/assets/logo/a.png": b"A",
    }
    # the entry editor's rollback: republish a version published there before
    code, out, err = stack.cli(
        "entries",
        "rollback",
        "blog",
        "hello",
        "--environment",
        "production",
        "--locale",
        "en-us",
        "--to-version",
        "1",
    )
    assert code == 0, err
    assert delivered(production)["en-us/entries/post/hello.json"] == entry("v1").encode()
    assert stack.delivery["staging"].exists() is False  # other environments untouched


def test_entry_rules_refuse_with_codes(stack: Stack) -> None:
    stack.repo.commit({"entries/post/hello.json": entry("v1")})
    stack.repo.commit({"entries/post/hello.json": entry("v2")})
    code, out, err = stack.cli(
        "entries",
        "publish",
        "blog",
        "hello",
        "--environment",
        "production",
        "--json",
        user="bob",
    )
    assert code == 3
    assert json.loads(out) == {
        "error": "user 'bob' may not deploy to environment 'production' of stack 'blog'",
        "error_code": "forbidden",
    }
    code, out, _ = stack.cli(
        "entries",
        "rollback",
        "blog",
        "hello",
        "--environment",
        "staging",
        "--to-version",
        "1",
        "--json",
    )
    assert code == 3
    assert json.loads(out)["error_code"] == "not_found"
    code, _, err = stack.cli(
        "entries", "publish", "blog", "hello", "--environment", "staging", user=None
    )
    assert code == 2
    assert "--user" in err
    code, _, err = stack.cli("entries", "publish", "blog", "nope", "--environment", "staging")
    assert code == 2
    assert "unknown document 'nope'" in err
    code, _, err = stack.cli(
        "entries", "publish", "blog", "hello", "--environment", "staging", "--locale", "de-de"
    )
    assert code == 2
    assert "unknown locale 'de-de'" in err
    assert not stack.delivery["production"].exists()


def test_a_deleted_version_cannot_be_published(stack: Stack) -> None:
    stack.repo.commit({"entries/post/hello.json": entry("v1")})
    stack.repo.commit({"entries/post/hello.json": None})
    with stack.engine() as engine:
        with pytest.raises(dhq.DeployHQLiteError, match="no content at version 2"):
            engine.publish_entry("blog", "hello", environment="staging", user="alice")
        done = engine.publish_entry("blog", "hello", environment="staging", user="alice", version=1)
        assert done.deployment is not None
        assert done.deployment.status is dhq.DeploymentStatus.COMPLETED
        assert engine.published("blog", "staging") == {"hello": 1}
    with pytest.raises(RefusedError), stack.engine() as engine:
        engine.publish_entry("blog", "hello", environment="production", user="bob")


def test_publishes_to_one_environment_are_serialised(stack: Stack) -> None:
    import socket

    from deployhq_lite.errors import DeploymentLockedError
    from deployhq_lite.store import LockRecord

    stack.repo.commit({"entries/post/hello.json": entry("v1")})
    key = "stack:blog/staging#publish"
    with stack.engine() as engine:
        live = LockRecord(key, "publish-other", "someone@elsewhere:1", "2026-01-01T00:00:00Z")
        assert engine.history.try_lock(live, steal=False)[0]
        with pytest.raises(DeploymentLockedError, match="locked by deployment publish-other"):
            engine.publish_entry("blog", "hello", environment="staging", user="alice")
        engine.history.unlock(key, "publish-other")
        # a lock left by a process of this host that is gone is taken over
        dead = LockRecord(key, "publish-dead", f"x@{socket.gethostname()}:999999", "t")
        assert engine.history.try_lock(dead, steal=False)[0]
        done = engine.publish_entry("blog", "hello", environment="staging", user="alice")
        assert done.deployment is not None
        assert engine.published("blog", "staging") == {"hello": 1}
