"""The HTTP API against a real uvicorn server on a loopback port, with httpx."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import deployhq_lite as dhq
from deployhq_lite.deployments.rules import (
    ROLLBACK_CONFIG_FILES,
    ROLLBACK_IMPOSSIBLE,
    ROLLBACK_LATEST,
    ROLLBACK_NO_SERVER,
)
from deployhq_lite.testing.plugin import Site, run_cli
from deployhq_lite.testing.sshd import free_port
from tests.test_entries import Stack, delivered, entry
from tests.test_entries import stack as stack

EMAIL = "adam@atechmedia.com"
KEY = "my-api-key"
AUTH = (EMAIL, KEY)


@dataclass
class Api:
    url: str
    process: subprocess.Popen[bytes]

    def client(self, auth: tuple[str, str] | None = AUTH) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=auth, timeout=30)


def api_users(config: Path) -> None:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    text = config.read_text()
    config.write_text(text + f'\n[api_users."{EMAIL}"]\nkey_sha256 = "{digest}"\n')


@pytest.fixture
def start_api(request: pytest.FixtureRequest) -> Iterator[Callable[..., Api]]:
    """Start ``deployhq-lite serve`` on a free loopback port (after the test set up the
    config it wants); stopped at the end."""
    started: list[Api] = []

    def start(*args: str, config: Path | None = None) -> Api:
        config = config or request.getfixturevalue("site").config
        assert config is not None
        if "api_users" not in config.read_text():
            api_users(config)
        port = free_port()
        exe = shutil.which("deployhq-lite", path=str(Path(sys.executable).parent))
        process = subprocess.Popen(
            [
                exe or "deployhq-lite",
                "serve",
                "--port",
                str(port),
                "--config",
                str(config),
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        api = Api(f"http://127.0.0.1:{port}", process)
        started.append(api)
        for _ in range(200):  # up to 20 s
            try:
                httpx.get(api.url + "/openapi.json", timeout=1)
                return api
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                time.sleep(0.1)
        raise AssertionError("the API server did not start")

    yield start
    for api in started:
        api.process.send_signal(signal.SIGINT)
        try:
            api.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            api.process.kill()
            api.process.wait()
        if api.process.stdout is not None:
            api.process.stdout.close()


def wait_for(client: httpx.Client, path: str, statuses: set[str]) -> dict:  # type: ignore[type-arg]
    for _ in range(300):  # up to 30 s
        body = client.get(path).json()
        if body["status"] in statuses:
            return body  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"{path} still {body['status']}")


def two_deployments(site: Site) -> tuple[dhq.Deployment, dhq.Deployment]:
    site.repo.commit({"index.html": "one", "old.txt": "old"})
    first = dhq.deploy("website", "production", config=site.config)
    site.repo.commit({"index.html": "two", "old.txt": None, "new.txt": "new"})
    second = dhq.deploy("website", "production", config=site.config)
    return first, second


def test_seed_rollback_in_queue_mode(site: Site, start_api: Callable[..., Api]) -> None:
    first, second = two_deployments(site)
    expected = {"index.html": b"one", "old.txt": b"old"}
    api = start_api()
    with api.client() as client:
        response = client.post(
            f"/projects/website/deployments/{first.identifier}/rollback",
            json={"mode": "queue", "copy_config_files": True, "run_build_commands": True},
            headers={"Accept": "application/json"},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["status"] == "pending"
        assert body["start_revision"] == second.end_revision
        assert body["end_revision"] == first.end_revision
        assert body["branch"] == "main"
        assert body["configuration"] == {"copy_config_files": True, "run_build_commands": True}
        assert body["timestamps"]["queued_at"].endswith("Z")
        assert body["servers"] == [
            {
                "name": "Production Server",
                "identifier": first.server_identifier,
                "protocol_type": "local",
            }
        ]
        assert body["project"] == {"name": "Website", "permalink": "website"}
        done = wait_for(
            client, f"/projects/website/deployments/{body['identifier']}", {"completed", "failed"}
        )
        assert done["status"] == "completed", done
        assert {(c["path"], c["change"]) for c in done["changes"]} == {
            ("index.html", "modified"),
            ("new.txt", "deleted"),
            ("old.txt", "added"),
        }
    assert site.files() == expected


def test_seed_rollback_in_preview_mode(site: Site, start_api: Callable[..., Api]) -> None:
    first, _ = two_deployments(site)
    api = start_api()
    with api.client() as client:
        response = client.post(
            f"/projects/website/deployments/{first.identifier}/rollback", json={"mode": "preview"}
        )
        assert response.status_code == 201
        body = response.json()
        assert body == {"identifier": body["identifier"], "status": "preview_pending"}
        path = f"/projects/website/deployments/{body['identifier']}/preview"
        preview = wait_for(client, path, {"previewed", "failed"})
        assert preview["status"] == "previewed"
        assert sorted(c["path"] for c in preview["changes"]) == ["index.html", "new.txt", "old.txt"]
    assert site.files()["index.html"] == b"two"  # a preview writes nothing


def test_the_four_refusals_are_422_with_the_seed_messages_and_a_reason(
    site: Site, start_api: Callable[..., Api], tmp_path: Path
) -> None:
    _, second = two_deployments(site)
    staging = (
        "\n[projects.website.servers.staging]\n"
        f'protocol_type = "local"\nroot = "{tmp_path / "staging"}"\n'
        '[[projects.website.servers.staging.config_files]]\npath = ".env"\nbody = "A=1"\n'
    )
    site.write_config(staging)
    gone = dhq.deploy("website", "staging", config=site.config)
    with dhq.Engine(site.config) as engine:
        files_only = engine.deploy("website", "staging", config_files_only=True)
    dhq.deploy("website", "staging", config=site.config)
    preview = dhq.preview("website", "production", config=site.config)
    site.write_config()  # staging is gone from the config
    api = start_api()
    cases = {
        second.identifier: (
            ROLLBACK_LATEST,
            "it is the latest completed deployment on server 'production'",
        ),
        files_only.identifier: (ROLLBACK_CONFIG_FILES, "it deployed only config files"),
        gone.identifier: (
            ROLLBACK_NO_SERVER,
            "its server 'staging' is no longer in the config",
        ),
        preview.deployment.identifier: (
            ROLLBACK_IMPOSSIBLE,
            "it is a preview: it deployed nothing",
        ),
    }
    with api.client() as client:
        for identifier, (message, reason) in cases.items():
            response = client.post(f"/projects/website/deployments/{identifier}/rollback")
            assert (response.status_code, response.json()) == (
                422,
                {"error": message, "reason": reason},
            )


def test_unknown_names_malformed_bodies_and_large_bodies(
    site: Site, start_api: Callable[..., Api]
) -> None:
    first, second = two_deployments(site)
    api = start_api()
    with api.client() as client:
        response = client.post(f"/projects/nope/deployments/{first.identifier}/rollback")
        assert response.status_code == 404
        assert response.json()["error"].startswith("unknown project 'nope'")
        for path in (
            "/projects/website/deployments/0000000-nope",
            "/projects/website/deployments/0000000-nope/preview",
        ):
            response = client.get(path)
            assert (response.status_code, response.json()) == (
                404,
                {"error": "deployment 0000000-nope not found in project website"},
            )
        response = client.post(f"/projects/website/deployments/{first.identifier[:4]}/rollback")
        assert response.status_code == 404
        assert response.json()["error"].startswith(f"deployment {first.identifier[:4]} not found")
        assert first.identifier not in response.text and second.identifier not in response.text
        response = client.get("/no/such/route")
        assert (response.status_code, response.json()) == (
            404,
            {"error": "no route GET /no/such/route"},
        )
        response = client.post(
            f"/projects/website/deployments/{first.identifier}/rollback", json={"mode": "later"}
        )
        assert response.status_code == 422
        assert response.json()["error"].startswith("mode: Input should be 'queue' or 'preview'")
        response = client.post(
            f"/projects/website/deployments/{first.identifier}/rollback",
            json={"copy_config_files": "maybe"},
        )
        assert response.status_code == 422 and "copy_config_files" in response.json()["error"]
        response = client.post(
            f"/projects/website/deployments/{first.identifier}/rollback",
            content=b"{" + b" " * 100_000 + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 413
        # the project by its identifier works as well as by its permalink
        from deployhq_lite.config import project_identifier

        listed = client.get(f"/projects/{project_identifier('website')}/deployments").json()
        assert len(listed["records"]) == 2


def test_every_route_needs_authentication(site: Site, start_api: Callable[..., Api]) -> None:
    first, _ = two_deployments(site)
    api = start_api()
    attempts: list[tuple[str, str] | None] = [
        None,
        (EMAIL, "wrong-key"),
        ("someone@example.com", KEY),
        (EMAIL, ""),
    ]
    routes = [
        ("POST", f"/projects/website/deployments/{first.identifier}/rollback"),
        ("GET", f"/projects/website/deployments/{first.identifier}/preview"),
        ("GET", f"/projects/website/deployments/{first.identifier}"),
        ("GET", "/projects/website/deployments"),
        ("POST", "/projects/website/deployments"),
        ("GET", "/stacks/blog/releases"),
        ("GET", "/projects"),
        ("GET", "/projects/website"),
        ("GET", "/projects/website/servers"),
    ]
    for auth in attempts:
        with api.client(auth) as client:
            for method, path in routes:
                response = client.request(method, path, json={})
                assert response.status_code == 401, (auth, path)
                assert response.json() == {"error": "authentication required: --user EMAIL:API_KEY"}
                assert response.headers["www-authenticate"].startswith("Basic")
                assert KEY not in response.text
    assert dhq.Engine(site.config).list_deployments("website")[0].identifier != ""
    output = api.process.stdout
    api.process.send_signal(signal.SIGINT)
    api.process.wait(timeout=20)
    assert output is not None and KEY.encode() not in output.read()


def test_docs_index_and_bodies_are_checked_in_order(
    site: Site, start_api: Callable[..., Api]
) -> None:
    """Authentication first (401 for every path, before any body is read or parsed), then
    the size of the body (413, declared or chunked), then whether it is JSON (422)."""
    first, _ = two_deployments(site)
    api = start_api()
    rollback = f"/projects/website/deployments/{first.identifier}/rollback"
    malformed = b'{"mode": queue}'
    with api.client(auth=None) as anonymous:
        for content in (malformed, b'{"mode": "later"}', b"{" + b" " * 100_000 + b"}"):
            response = anonymous.post(
                rollback, content=content, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 401, content[:20]
            assert response.json() == {"error": "authentication required: --user EMAIL:API_KEY"}
        for path in ("/", "/openapi.json", "/docs", "/redoc", "/no/such/route"):
            assert anonymous.get(path).status_code == 401, path
    with api.client() as client:
        index = client.get("/")
        assert index.status_code == 200, index.text
        routes = {(r["method"], r["path"]) for r in index.json()["routes"]}
        assert ("POST", "/projects/{project}/deployments/{deployment}/rollback") in routes
        assert ("GET", "/projects") in routes and ("GET", "/stacks/{stack}/releases") in routes
        assert index.json()["openapi"] == "/openapi.json"
        assert "/projects/{project}/deployments" in client.get("/openapi.json").json()["paths"]
        assert "swagger" in client.get("/docs").text.lower()
        response = client.post(
            rollback, content=malformed, headers={"Content-Type": "application/json"}
        )
        assert (response.status_code, response.json()) == (
            422,
            {"error": "request body is not valid JSON (line 1, column 10)"},
        )
        response = client.post(rollback, content=b'{\n  "mode": "queue",\n}')
        assert response.json() == {"error": "request body is not valid JSON (line 3, column 1)"}

        def chunked() -> Iterator[bytes]:  # no Content-Length: sent in chunks
            yield b'{"mode": "queue", "pad": "'
            for _ in range(20):
                yield b"x" * 4096
            yield b'"}'

        response = client.post(
            rollback, content=chunked(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in response.request.headers
        assert (response.status_code, response.json()) == (
            413,
            {"error": "request body too large (at most 65536 bytes)"},
        )
    assert site.files()["index.html"] == b"two"  # none of it was taken as a rollback


def test_deployhq_clients_rails_ways_are_understood(
    site: Site, start_api: Callable[..., Api]
) -> None:
    """Form-encoded bodies, the ``deployment`` wrapper, unknown parameters (ignored and
    named in ``warnings``), Rails' boolean strings, any-case emails, a ``.json`` suffix."""
    first, _ = two_deployments(site)
    api = start_api("--no-worker")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with api.client(auth=(EMAIL.upper(), KEY)) as client:
        rollback = client.post(
            f"/projects/website/deployments/{first.identifier}/rollback.json",
            content=b"mode=preview&copy_config_files=f&utf8=%E2%9C%93",
            headers=form,
        )
        assert rollback.status_code == 201, rollback.text
        assert rollback.json() == {
            "identifier": rollback.json()["identifier"],
            "status": "preview_pending",
            "warnings": ["unknown parameter 'utf8' ignored"],
        }
        shown = client.get(f"/projects/website/deployments/{rollback.json()['identifier']}.json")
        assert shown.status_code == 200, shown.text
        assert shown.json()["configuration"]["copy_config_files"] is False
        assert shown.json()["rollback_of"] == first.identifier
        wrapped = client.post(
            "/projects/website/deployments.json",
            json={
                "deployment": {
                    "parent_identifier": "production",
                    "mode": "preview",
                    "copy_config_files": "false",
                    "email_notify": True,
                },
                "format": "json",
            },
        )
        assert wrapped.status_code == 201, wrapped.text
        assert wrapped.json()["configuration"]["copy_config_files"] is False
        assert wrapped.json()["warnings"] == [
            "unknown parameter 'email_notify' ignored",
            "unknown parameter 'format' ignored",
        ]
        nested = client.post(
            "/projects/website/deployments",
            content=b"deployment[parent_identifier]=production&deployment[mode]=preview"
            b"&deployment[run_build_commands]=no",
            headers=form,
        )
        assert nested.status_code == 201, nested.text
        assert nested.json()["configuration"]["run_build_commands"] is False
        assert "warnings" not in nested.json()
        for value, meant in [
            *((v, True) for v in ("true", "1", "t", "yes", "on", "TRUE", 1, True)),
            *((v, False) for v in ("false", "0", "f", "no", "off", "Off", 0, False)),
        ]:
            made = client.post(
                "/projects/website/deployments",
                json={"server": "production", "mode": "preview", "config_files_only": value},
            )
            assert made.status_code in (201, 422), made.text
            # config_files_only with no config files is refused: so it was taken as true
            assert (made.status_code == 422) is meant, (value, made.text)
        for value in ("maybe", "y", "", 2, None, [True]):
            refused = client.post(
                "/projects/website/deployments",
                json={"server": "production", "mode": "preview", "copy_config_files": value},
            )
            assert refused.status_code == 422, (value, refused.text)
            assert refused.json()["error"].startswith("copy_config_files: ")
        listed = client.get("/projects/website/deployments.json", params={"per_page": 1})
        assert listed.status_code == 200 and len(listed.json()["records"]) == 1
        assert client.get("/projects.json").json()[0]["permalink"] == "website"
    with api.client(auth=(EMAIL.upper(), "wrong-key")) as client:
        assert client.get("/projects/website/deployments").status_code == 401


def test_create_list_and_show_deployments(site: Site, start_api: Callable[..., Api]) -> None:
    site.repo.commit({"index.html": "one"})
    api = start_api()
    with api.client() as client:
        created = client.post(
            "/projects/website/deployments",
            json={"deployment": {"parent_identifier": "production", "mode": "queue"}},
        )
        assert created.status_code == 201, created.text
        done = wait_for(
            client, f"/projects/website/deployments/{created.json()['identifier']}", {"completed"}
        )
        assert done["end_revision"] == site.repo.head()
        site.repo.commit({"index.html": "two"})
        by_id = client.post(
            "/projects/website/deployments",
            json={"server": done["servers"][0]["identifier"], "end_revision": "main"},
        )
        assert by_id.status_code == 201, by_id.text
        wait_for(
            client, f"/projects/website/deployments/{by_id.json()['identifier']}", {"completed"}
        )
        page = client.get("/projects/website/deployments", params={"per_page": 1, "page": 2}).json()
        assert page["pagination"] == {
            "current_page": 2,
            "total_pages": 2,
            "total_records": 2,
            "offset": 1,
            "per_page": 1,
        }
        assert [d["identifier"] for d in page["records"]] == [done["identifier"]]
        unknown = client.post("/projects/website/deployments", json={"server": "nope"})
        assert unknown.status_code == 404
        assert "unknown server or server group 'nope'" in unknown.json()["error"]
    assert site.files() == {"index.html": b"two"}


def test_projects_and_their_servers_are_discoverable(
    site: Site, start_api: Callable[..., Api]
) -> None:
    site.write_config(
        '\n[projects.website.server_groups.web]\nname = "Web"\nservers = ["production"]\n'
    )
    first, second = two_deployments(site)
    api = start_api()
    with api.client() as client:
        listed = client.get("/projects")
        assert listed.status_code == 200, listed.text
        [project] = listed.json()
        assert project["permalink"] == "website" and project["name"] == "Website"
        assert project["repository"]["scm_type"] == "git"
        assert project["repository"]["branch"] == "main"
        for key in ("website", project["identifier"]):
            assert client.get(f"/projects/{key}").json() == project
        servers = client.get(f"/projects/{project['identifier']}/servers").json()
        assert servers == project["servers"]
        [server] = servers
        assert {k: server[k] for k in ("identifier", "name", "protocol_type", "last_revision")} == {
            "identifier": first.server_identifier,
            "name": "Production Server",
            "protocol_type": "local",
            "last_revision": second.end_revision,
        }
        assert server["server_path"] == str(site.root) and server["enabled"] is True
        groups = client.get("/projects/website/server_groups").json()
        assert groups == project["server_groups"]
        assert groups[0]["servers"] == [
            {"identifier": first.server_identifier, "permalink": "production"}
        ]
        assert server["server_group_identifier"] == groups[0]["identifier"]
        # what the listing names works where a server is asked for
        created = client.post(
            "/projects/website/deployments",
            json={"parent_identifier": groups[0]["identifier"], "mode": "preview"},
        )
        assert created.status_code == 201, created.text
        missing = client.get("/projects/nope/servers")
        assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_twenty_concurrent_rollbacks_on_one_server_are_serialized(
    site: Site, start_api: Callable[..., Api]
) -> None:
    first, _ = two_deployments(site)
    api = start_api()
    with api.client() as client, ThreadPoolExecutor(20) as pool:
        path = f"/projects/website/deployments/{first.identifier}/rollback"
        responses = list(pool.map(lambda _: client.post(path), range(20)))
        assert [r.status_code for r in responses] == [201] * 20
        identifiers = [r.json()["identifier"] for r in responses]
        finished = [
            wait_for(client, f"/projects/website/deployments/{i}", {"completed", "failed"})
            for i in identifiers
        ]
    assert [d["status"] for d in finished] == ["completed"] * 20
    with dhq.Engine(site.config) as engine:
        runs = sorted(
            (engine.get_deployment("website", i) for i in identifiers),
            key=lambda d: d.started_at or "",
        )
        for earlier, later in itertools.pairwise(runs):  # one at a time
            assert earlier.completed_at is not None and later.started_at is not None
            assert earlier.completed_at <= later.started_at
    assert site.files() == {"index.html": b"one", "old.txt": b"old"}
    marker = json.loads((site.root / ".deployhq-lite" / "revision").read_text())
    assert marker["deployment"] == runs[-1].identifier


def test_api_keys_create_prints_a_key_and_its_config_lines(site: Site) -> None:
    done = run_cli("api-keys", "create", "ops@example.com", "--json")
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    digest = hashlib.sha256(made["api_key"].encode()).hexdigest()
    assert made["config"] == f'[api_users."ops@example.com"]\nkey_sha256 = "{digest}"\n'
    assert len(made["api_key"]) >= 40
    again = json.loads(run_cli("api-keys", "create", "ops@example.com", "--json").stdout)
    assert again["api_key"] != made["api_key"]


def test_serve_without_api_users_is_one_line(site: Site) -> None:
    done = run_cli("serve", "--port", "1", "--config", site.config)
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        "no [api_users]: every route needs one; create a key with "
        "`deployhq-lite api-keys create EMAIL`"
    )


def test_schemathesis_finds_no_server_errors(
    site: Site, start_api: Callable[..., Api], tmp_path: Path
) -> None:
    first, _ = two_deployments(site)
    api = start_api()
    settings = tmp_path / "schemathesis.toml"  # real names, so requests reach the logic
    settings.write_text(
        f'[parameters]\n"path.project" = "website"\n"path.deployment" = "{first.identifier}"\n'
    )
    st = Path(sys.executable).parent / "st"
    done = subprocess.run(
        [
            str(st),
            "--config-file",
            str(settings),
            "run",
            api.url + "/openapi.json",
            "--checks",
            "not_a_server_error",
            "--auth",
            f"{EMAIL}:{KEY}",
            "--max-examples",
            "15",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # its cache directory goes there, not into the checkout
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_release_routes_follow_the_cli_rules(
    stack: Stack, start_api: Callable[..., Api], tmp_path: Path
) -> None:
    stack.repo.commit({"entries/post/hello.json": entry("hello v1")})
    stack.repo.commit({"entries/post/hello.json": entry("hello v2")})
    publish = ("entries", "publish", "blog", "hello", "--environment", "production")
    assert stack.cli(*publish, "--version", "1")[0] == 0
    stack.config.write_text(
        stack.config.read_text()
        + f'[users."{EMAIL}"]\nrole = "editor"\nenvironments = ["production"]\n'
        + '[users."staging-only@example.com"]\nenvironments = ["staging"]\n'
    )
    api_users(stack.config)
    digest = hashlib.sha256(b"other-key").hexdigest()
    stack.config.write_text(
        stack.config.read_text()
        + f'[api_users."staging-only@example.com"]\nkey_sha256 = "{digest}"\n'
    )
    api = start_api(config=stack.config)
    production = stack.delivery["production"]
    with api.client() as client:
        made = client.post("/stacks/blog/releases", json={"name": "Launch"})
        assert made.status_code == 201, made.text
        uid = made.json()["uid"]
        item = client.post(f"/stacks/blog/releases/{uid}/items", json={"uid": "hello"})
        assert item.status_code == 201, item.text
        assert item.json()["items"][0]["version"] == 2
        deployed = client.post(
            f"/stacks/blog/releases/{uid}/deploy", json={"environment": "production"}
        )
        assert deployed.status_code == 200, deployed.text
        assert b"hello v2" in delivered(production)["en-us/entries/post/hello.json"]
        back = client.post(f"/stacks/blog/releases/{uid}/rollback")
        assert back.status_code == 201, back.text
        assert back.json()["kind"] == "rollback" and back.json()["rollback_of"] == uid
        undone = client.post(
            f"/stacks/blog/releases/{back.json()['uid']}/deploy", json={"environment": "production"}
        )
        assert undone.status_code == 200, undone.text
        assert b"hello v1" in delivered(production)["en-us/entries/post/hello.json"]
        listed = client.get("/stacks/blog/releases").json()
        assert {r["uid"] for r in listed["records"]} == {uid, back.json()["uid"]}
        page = client.get("/stacks/blog/releases", params={"per_page": 1, "page": 2}).json()
        assert page["pagination"] == {
            "current_page": 2,
            "total_pages": 2,
            "total_records": 2,
            "offset": 1,
            "per_page": 1,
        }
        assert [r["uid"] for r in page["records"]] == [back.json()["uid"]]
        assert client.get(f"/stacks/blog/releases/{uid}").json()["deployed"] is True
        # refusals keep the CLI's error codes; unknown names are 404
        read_only = client.post(
            f"/stacks/blog/releases/{back.json()['uid']}/items", json={"uid": "hello"}
        )
        assert read_only.status_code == 422 and "error_code" in read_only.json()
        assert client.get("/stacks/nope/releases").status_code == 404
        unknown = client.get("/stacks/blog/releases/nope")
        assert (unknown.status_code, unknown.json()) == (
            404,
            {"error": "release 'nope' not found in stack 'blog'", "error_code": "not_found"},
        )
        assert client.post("/stacks/blog/releases/nope/rollback").status_code == 404
        gone = client.delete(f"/stacks/blog/releases/{uid}")
        assert gone.status_code == 200 and gone.json()["deleted"] is True
    with httpx.Client(base_url=api.url, auth=("staging-only@example.com", "other-key")) as other:
        mine = other.post("/stacks/blog/releases", json={"name": "Mine"}).json()["uid"]
        other.post(f"/stacks/blog/releases/{mine}/items", json={"uid": "hello", "version": 1})
        refused = other.post(
            f"/stacks/blog/releases/{mine}/deploy", json={"environment": "production"}
        )
        assert refused.status_code == 422
        assert refused.json()["error_code"]


def test_a_verification_is_queued_run_by_the_worker_and_read_back(
    site: Site, start_api: Callable[..., Api]
) -> None:
    site.repo.commit({"index.html": "home\n", "about.html": "about\n"})
    assert run_cli("deploy", "website", "-s", "production", "--config", site.config).returncode == 0
    (site.root / "about.html").unlink()
    api = start_api()
    with api.client() as client:
        queued = client.post("/projects/website/servers/production/verify")
        assert queued.status_code == 201, queued.text
        assert queued.json()["status"] in ("pending", "running", "completed")
        path = f"/projects/website/servers/production/verify/{queued.json()['identifier']}"
        done = wait_for(client, path, {"completed", "failed"})
        assert done["status"] == "completed" and done["in_sync"] is False
        assert done["differences"] == [
            {"path": "about.html", "kind": "missing", "expected": "file", "found": None}
        ]
        assert done["method"] == "git-hash-object" and done["checked"] == 2
        assert client.get("/projects/website/servers/production/verify/nope").status_code == 404
        fast = client.post("/projects/website/servers/production/verify", json={"fast": True})
        assert (
            wait_for(
                client, path.rsplit("/", 1)[0] + "/" + fast.json()["identifier"], {"completed"}
            )["method"]
            == "fast"
        )
