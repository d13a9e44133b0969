"""Releases and rollback releases (Contentstack's rules), through the CLI and the library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import deployhq_lite as dhq
from tests.test_cli import table
from tests.test_entries import Stack, delivered, entry
from tests.test_entries import stack as stack

P = "production"


def ok(stack: Stack, *args: str, user: str = "alice") -> dict:  # type: ignore[type-arg]
    code, out, err = stack.cli(*args, "--json", user=user)
    assert code == 0, err + out
    return json.loads(out)  # type: ignore[no-any-return]


def refused(stack: Stack, *args: str, user: str = "alice") -> str:
    code, out, err = stack.cli(*args, "--json", user=user)
    assert code == 3, err + out
    return str(json.loads(out)["error_code"])


def publish(stack: Stack, uid: str, *extra: str, user: str = "alice") -> None:
    ok(stack, "entries", "publish", "blog", uid, "--environment", P, *extra, user=user)


def state(stack: Stack, locale: str = "en-us") -> dict[str, int]:
    return ok(stack, "environments", "show", "blog", P, "--locale", locale)


def new_release(stack: Stack, *items: tuple[str, ...], user: str = "alice") -> str:
    uid = str(ok(stack, "releases", "create", "blog", "Launch", user=user)["uid"])
    for item in items:
        ok(stack, "releases", "add-item", "blog", uid, *item, user=user)
    return uid


def deploy(stack: Stack, release: str, *extra: str, user: str = "alice") -> dict:  # type: ignore[type-arg]
    return ok(stack, "releases", "deploy", "blog", release, "--environment", P, *extra, user=user)


def results(done: dict) -> dict[tuple[str, str], str]:  # type: ignore[type-arg]
    return {(i["uid"], i["locale"]): i["result"] for i in done["items"]}


@pytest.fixture
def content(stack: Stack) -> Stack:
    """hello v1..v3 (v3 references logo), logo v1, about v1 (never published)."""
    stack.repo.commit({"entries/post/hello.json": entry("hello v1")})
    stack.repo.commit({"entries/post/hello.json": entry("hello v2")})
    stack.repo.commit({"assets/logo/logo.png": b"logo v1"})
    stack.repo.commit({"entries/post/hello.json": entry("hello v3", "logo")})
    stack.repo.commit({"entries/page/about.json": entry("about v1")})
    return stack


def test_rollback_restores_the_previous_version_and_unpublishes_the_new(content: Stack) -> None:
    publish(content, "hello", "--version", "1")
    release = new_release(content, ("hello",), ("about",))
    done = deploy(content, release)
    assert results(done)[("hello", "en-us")] == "published"
    assert state(content) == {"about": 1, "hello": 3}
    rollback = ok(content, "releases", "rollback", "blog", release)
    assert rollback["kind"] == "rollback"
    assert rollback["rollback_of"] == release
    assert rollback["read_only"] is True
    again = ok(content, "releases", "rollback", "blog", release)
    assert again["uid"] == rollback["uid"]  # one per (release, user)
    done = deploy(content, rollback["uid"])
    assert results(done) == {
        ("hello", "en-us"): "published",
        ("hello", "fr-fr"): "published",
        ("about", "en-us"): "unpublished",  # never published before the release
        ("about", "fr-fr"): "unpublished",
    }
    assert state(content) == {"hello": 1}  # v1 republished; the content's v3 stays in git
    assert delivered(content.delivery[P]) == {
        "en-us/entries/post/hello.json": entry("hello v1").encode(),
        "fr-fr/entries/post/hello.json": entry("hello v1").encode(),
    }


def test_an_unpublish_item_is_republished_on_rollback(content: Stack) -> None:
    publish(content, "hello", "--version", "2")
    release = new_release(content, ("hello", "--action", "unpublish"))
    deploy(content, release)
    assert state(content) == {}
    rollback = ok(content, "releases", "rollback", "blog", release)["uid"]
    deploy(content, rollback)
    assert state(content) == {"hello": 2}


def test_documents_changed_since_are_skipped_with_a_reason(content: Stack) -> None:
    publish(content, "logo")
    release = new_release(content, ("hello",), ("about",), ("logo", "--action", "unpublish"))
    deploy(content, release)
    publish(content, "hello", "--version", "1", "--locale", "en-us")  # republished by hand
    ok(content, "entries", "unpublish", "blog", "about", "--environment", P, "--locale", "fr-fr")
    content.repo.commit({"entries/page/about.json": entry("about v2")})  # not published: no change
    rollback = ok(content, "releases", "rollback", "blog", release)["uid"]
    done = deploy(content, rollback)
    by_key = {(i["uid"], i["locale"]): i for i in done["items"]}
    assert by_key[("hello", "en-us")]["result"] == "skipped"
    assert "by hand" in by_key[("hello", "en-us")]["reason"]
    assert by_key[("about", "fr-fr")]["result"] == "skipped"
    assert "unpublished" in by_key[("about", "fr-fr")]["reason"]
    assert by_key[("hello", "fr-fr")]["result"] == "unpublished"  # reverted
    assert by_key[("about", "en-us")]["result"] == "unpublished"
    assert by_key[("logo", "en-us")]["result"] == "published"  # the unpublish is undone
    assert state(content) == {"hello": 1, "logo": 1}
    assert state(content, "fr-fr") == {"logo": 1}


def test_references_are_added_and_reverted_once(content: Stack) -> None:
    release = new_release(content, ("hello", "--with-references"), ("logo",))
    shown = ok(content, "releases", "show", "blog", release)
    assert [(i["uid"], i["reference"]) for i in shown["items"]] == [
        ("hello", False),
        ("logo", False),  # present directly too: the direct item wins
    ]
    only_refs = new_release(content, ("hello", "--with-references"))
    items = ok(content, "releases", "show", "blog", only_refs)["items"]
    assert [(i["uid"], i["version"], i["reference"]) for i in items] == [
        ("hello", 3, False),
        ("logo", 1, True),
    ]
    deploy(content, only_refs)
    assert state(content) == {"hello": 3, "logo": 1}
    rollback = ok(content, "releases", "rollback", "blog", only_refs)["uid"]
    deploy(content, rollback)
    assert state(content) == {}
    assert delivered(content.delivery[P]) == {}


def test_rollback_refusals(content: Stack) -> None:
    release = new_release(content, ("hello",))
    assert refused(content, "releases", "rollback", "blog", release) == "release_not_deployed"
    ok(
        content,
        "releases",
        "deploy",
        "blog",
        release,
        "--environment",
        P,
        "--schedule-at",
        "2999-01-01T00:00:00Z",
    )
    assert refused(content, "releases", "rollback", "blog", release) == "release_not_deployed"
    assert state(content) == {}  # scheduled, not run
    deploy(content, release)
    rollback = ok(content, "releases", "rollback", "blog", release)["uid"]
    assert refused(content, "releases", "rollback", "blog", rollback) == (
        "cannot_rollback_rollback_release"
    )
    assert (
        refused(
            content,
            "releases",
            "deploy",
            "blog",
            rollback,
            "--environment",
            P,
            "--schedule-at",
            "2999-01-01T00:00:00Z",
        )
        == "rollback_release_not_schedulable"
    )
    assert refused(content, "releases", "add-item", "blog", rollback, "about") == (
        "rollback_release_read_only"
    )
    assert refused(content, "releases", "add-item", "blog", release, "about") == "release_locked"
    deploy(content, release)  # a deployed release may be deployed again
    assert (
        refused(content, "releases", "deploy", "blog", rollback, "--environment", "staging")
        == "no_capture_for_environment"
    )
    assert not content.delivery["staging"].exists()  # touched nothing
    assert refused(content, "releases", "show", "blog", "nope") == "not_found"


def test_each_refused_release_rollback_is_a_release_rollback_not_allowed_error(
    content: Stack,
) -> None:
    release = new_release(content, ("hello",))

    def refusal(uid: str) -> dhq.ReleaseRollbackNotAllowedError:
        with pytest.raises(dhq.ReleaseRollbackNotAllowedError) as refused:
            dhq.rollback_release("blog", uid, user="alice", config=content.config)
        return refused.value

    assert refusal(release).code == "release_not_deployed"
    deploy(content, release)
    rollback = dhq.rollback_release("blog", release, user="alice", config=content.config)
    assert refusal(rollback.uid).code == "cannot_rollback_rollback_release"
    ok(content, "releases", "delete", "blog", rollback.uid)
    assert refusal(release).code == "redeploy_required"


def test_each_user_gets_their_own_rollback_release(content: Stack) -> None:
    release = new_release(content, ("hello",))
    deploy(content, release)
    ok(content, "releases", "deploy", "blog", release, "--environment", "staging", user="bob")
    mine = ok(content, "releases", "rollback", "blog", release)["uid"]
    bobs = ok(content, "releases", "rollback", "blog", release, user="bob")["uid"]
    assert mine != bobs
    listed = {
        u: {r["uid"] for r in ok(content, "releases", "list", "blog", user=u)["records"]}
        for u in ("alice", "bob", "root")
    }
    assert listed["alice"] == {release, mine}
    assert listed["bob"] == {release, bobs}
    assert listed["root"] == {release, mine, bobs}
    page = ok(content, "releases", "list", "blog", "--limit", "2", "--page", "2", user="root")
    assert page["pagination"] == {
        "current_page": 2,
        "total_pages": 2,
        "total_records": 3,
        "offset": 2,
        "per_page": 2,
    }
    assert [r["uid"] for r in page["records"]] == [bobs]  # oldest first
    documents = ok(content, "entries", "list", "blog", "--limit", "1")
    assert documents["pagination"]["per_page"] == 1
    assert documents["pagination"]["total_records"] == 3  # hello, logo, about
    assert [d["uid"] for d in documents["records"]] == ["about"]
    assert refused(content, "releases", "show", "blog", mine, user="bob") == "not_found"
    # bob deployed only to staging, and may not deploy to production at all
    assert (
        refused(content, "releases", "deploy", "blog", bobs, "--environment", P, user="bob")
        == "forbidden"
    )
    assert (
        refused(content, "releases", "deploy", "blog", mine, "--environment", P, user="bob")
        == "not_found"
    )
    ok(content, "releases", "deploy", "blog", mine, "--environment", P, user="root")  # an admin may
    assert state(content) == {}


def test_deleting_a_rollback_release_needs_a_redeploy_before_another(content: Stack) -> None:
    publish(content, "hello", "--version", "1")
    release = new_release(content, ("hello",))
    deploy(content, release)
    rollback = ok(content, "releases", "rollback", "blog", release)["uid"]
    ok(content, "releases", "delete", "blog", rollback)
    assert state(content) == {"hello": 3}  # live content untouched
    assert ok(content, "releases", "show", "blog", release)["deployed"] is True
    assert refused(content, "releases", "rollback", "blog", release) == "redeploy_required"
    deploy(content, release)
    again = ok(content, "releases", "rollback", "blog", release)["uid"]
    assert again != rollback
    deploy(content, again)
    assert state(content) == {"hello": 1}  # the first deploy's capture still wins


def test_scheduled_releases_run_from_the_worker(content: Stack) -> None:
    release = new_release(content, ("hello",))
    ok(
        content,
        "releases",
        "deploy",
        "blog",
        release,
        "--environment",
        P,
        "--schedule-at",
        "2000-01-01T00:00:00Z",
    )
    code, out, err = content.cli("worker", "--once")
    assert code == 0, err
    assert f"{release}: deployed" in out
    assert state(content) == {"hello": 3}
    assert ok(content, "releases", "rollback", "blog", release)["kind"] == "rollback"
    code, out, _ = content.cli("worker", "--once")
    assert out == ""  # nothing due any more


@pytest.mark.parametrize("protocol", ["ssh"])
def test_release_and_rollback_over_ssh(content: Stack, sshd, protocol: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "remote" / "production"
    text = content.config.read_text()
    old = (
        '[stacks.blog.environments.production]\nlocales = ["en-us", "fr-fr"]\n'
        f'protocol_type = "local"\nroot = "{content.delivery[P]}"\n'
    )
    assert old in text
    content.config.write_text(
        text.replace(
            old,
            '[stacks.blog.environments.production]\nlocales = ["en-us", "fr-fr"]\n'
            f'protocol_type = "ssh"\nroot = "{root}"\nhost = "{sshd.host}"\nport = {sshd.port}\n'
            f'user = "{sshd.user}"\nkey_path = "{sshd.user_key}"\n'
            f'known_hosts_path = "{sshd.known_hosts}"\nuse_agent = false\n',
        )
    )
    publish(content, "hello", "--version", "2")
    release = new_release(content, ("hello", "--with-references"))
    deploy(content, release)
    assert delivered(root) == {
        f"{loc}/{path}": data
        for loc in ("en-us", "fr-fr")
        for path, data in (
            ("entries/post/hello.json", entry("hello v3", "logo").encode()),
            ("assets/logo/logo.png", b"logo v1"),
        )
    }
    deploy(content, ok(content, "releases", "rollback", "blog", release)["uid"])
    assert delivered(root) == {
        f"{loc}/entries/post/hello.json": entry("hello v2").encode() for loc in ("en-us", "fr-fr")
    }


def test_an_item_locale_must_belong_to_the_stack(content: Stack) -> None:
    release = new_release(content)
    code, _, err = content.cli(
        "releases", "add-item", "blog", release, "hello", "--locale", "de-de"
    )
    assert code == 2
    assert "unknown locale 'de-de' in stack 'blog' (known: en-us, fr-fr)" in err


def test_releases_list_columns_stay_aligned_with_long_names(content: Stack) -> None:
    long_user = "marguerite.de-la-longue-liste@example.org"
    content.config.write_text(
        content.config.read_text() + f'[users."{long_user}"]\nenvironments = ["staging"]\n'
    )
    launch = new_release(content, ("hello",))
    deploy(content, launch)
    rollback = ok(content, "releases", "rollback", "blog", launch)["uid"]
    sale = ok(content, "releases", "create", "blog", "Spring sale: every post", user=long_user)
    code, out, err = content.cli("releases", "list", "blog", user="root")
    assert code == 0, err
    rows = table(out, ["RELEASE", "KIND", "CREATOR", "NAME"])
    assert rows == [
        {"RELEASE": launch, "KIND": "release", "CREATOR": "alice", "NAME": "Launch"},
        {"RELEASE": rollback, "KIND": "rollback", "CREATOR": "alice", "NAME": rows[1]["NAME"]},
        {
            "RELEASE": sale["uid"],
            "KIND": "release",
            "CREATOR": long_user,
            "NAME": "Spring sale: every post",
        },
    ]
