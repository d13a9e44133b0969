"""A hypothesis state machine: random publishes, unpublishes, release deploys and
rollback releases against a small reference model of rules 1-4 (issue 5)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

import deployhq_lite as dhq
from deployhq_lite.content.publish import PublishResult
from deployhq_lite.errors import ReleaseRefusedError
from deployhq_lite.repobuilder import GitRepoBuilder

DOCS = ("a", "b", "c")
VERSIONS = 3
USERS = ("alice", "root")
LOCALE = "en-us"

Tag = tuple[str, str]  # ("hand", "") | ("release", uid) | ("rollback", uid)


def body(uid: str, version: int) -> bytes:
    return json.dumps({"title": f"{uid} v{version}"}).encode()


class ReleaseModel(RuleBasedStateMachine):
    releases = Bundle("releases")

    @initialize()
    def setup(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="dhq-release-model-"))
        repo = GitRepoBuilder.create(self.tmp / "repo")
        for version in range(1, VERSIONS + 1):
            repo.commit({f"entries/post/{u}.json": body(u, version) for u in DOCS})
        self.root = self.tmp / "delivery"
        config = self.tmp / "deployhq-lite.toml"
        config.write_text(
            f'state_dir = "{self.tmp / "state"}"\n'
            '[users.alice]\nenvironments = ["production"]\n[users.root]\nrole = "admin"\n'
            f'[stacks.blog]\nrepository = "{repo.path}"\n'
            f'[stacks.blog.environments.production]\nlocales = ["{LOCALE}"]\n'
            f'root = "{self.root}"\n'
        )
        self.engine = dhq.Engine(config)
        self.engine.__enter__()
        # the model
        self.state: dict[str, int] = {}
        self.tag: dict[str, Tag] = {}
        self.items: dict[str, dict[str, int | None]] = {}  # release -> uid -> version/None
        self.captures: dict[tuple[str, str], dict[str, int | None]] = {}
        self.rollbacks: dict[tuple[str, str], str] = {}  # (release, user) -> rollback uid

    def teardown(self) -> None:
        if hasattr(self, "engine"):
            self.engine.__exit__(None, None, None)
            shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(uid=st.sampled_from(DOCS), version=st.integers(1, VERSIONS))
    def publish_by_hand(self, uid: str, version: int) -> None:
        self.engine.publish_entry(
            "blog", uid, environment="production", user="alice", version=version
        )
        self.state[uid] = version
        self.tag[uid] = ("hand", "")

    @rule(uid=st.sampled_from(DOCS))
    def unpublish_by_hand(self, uid: str) -> None:
        self.engine.publish_entry(
            "blog", uid, environment="production", user="alice", unpublish=True
        )
        self.state.pop(uid, None)
        self.tag[uid] = ("hand", "")

    @rule(
        target=releases,
        items=st.dictionaries(
            st.sampled_from(DOCS), st.none() | st.integers(1, VERSIONS), min_size=1
        ),
    )
    def make_release(self, items: dict[str, int | None]) -> str:
        release = self.engine.create_release("blog", "r", user="alice")
        for uid, version in items.items():
            self.engine.add_release_item(
                "blog",
                release.uid,
                uid,
                user="alice",
                version=version,
                action="publish" if version is not None else "unpublish",
            )
        self.items[release.uid] = items
        return release.uid

    @rule(release=releases, user=st.sampled_from(USERS))
    def deploy(self, release: str, user: str) -> None:
        self.engine.deploy_release("blog", release, environment="production", user=user)
        items = self.items[release]
        self.captures.setdefault((release, user), {u: self.state.get(u) for u in items})
        for uid, version in items.items():
            if version is None:
                self.state.pop(uid, None)
            else:
                self.state[uid] = version
            self.tag[uid] = ("release", release)

    @rule(release=releases, user=st.sampled_from(USERS))
    def roll_back(self, release: str, user: str) -> None:
        if (release, user) not in self.captures:
            try:
                self.engine.rollback_release("blog", release, user=user)
            except ReleaseRefusedError as exc:
                assert exc.code == "release_not_deployed"
                return
            raise AssertionError("rollback of a release the user never deployed")
        rollback = self.engine.rollback_release("blog", release, user=user)
        assert self.rollbacks.setdefault((release, user), rollback.uid) == rollback.uid
        result = self.engine.deploy_release(
            "blog", rollback.uid, environment="production", user=user
        )
        assert isinstance(result, PublishResult)
        got = {i.uid: i.result for i in result.items}
        event(f"rollback deployed: {sorted(set(got.values()))}")
        captured = self.captures[(release, user)]
        for uid in self.items[release]:
            if self.tag.get(uid) != ("release", release):
                assert got[uid] == "skipped", (uid, got)
                continue
            before = captured[uid]
            if before is None:
                self.state.pop(uid, None)
                assert got[uid] == "unpublished"
            else:
                self.state[uid] = before
                assert got[uid] == "published"
            self.tag[uid] = ("rollback", rollback.uid)

    @rule(release=releases)
    def rollback_of_a_rollback_is_refused(self, release: str) -> None:
        found = [r for (rel, _), r in self.rollbacks.items() if rel == release]
        if found:
            try:
                self.engine.rollback_release("blog", found[0], user="root")
            except ReleaseRefusedError as exc:
                assert exc.code == "cannot_rollback_rollback_release"
            else:
                raise AssertionError("a rollback release was rolled back")

    @invariant()
    def published_state_and_files_match_the_model(self) -> None:
        if not hasattr(self, "engine"):
            return
        assert self.engine.published("blog", "production") == dict(sorted(self.state.items()))
        files = (
            {
                str(p.relative_to(self.root)): p.read_bytes()
                for p in self.root.rglob("*.json")
                if ".deployhq-lite" not in p.parts
            }
            if self.root.exists()
            else {}
        )
        assert files == {
            f"{LOCALE}/entries/post/{u}.json": body(u, v) for u, v in self.state.items()
        }


ReleaseModel.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_release_rules_against_a_reference_model = ReleaseModel.TestCase
