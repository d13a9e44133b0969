"""The HTTP app's engines (one per serving thread): each is closed as its thread ends, so
serving and shutting down leaves no SQLite connection or file descriptor open."""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

import deployhq_lite as dhq
from deployhq_lite import web, webengines
from deployhq_lite.engine import Engine
from deployhq_lite.testing.plugin import Site
from tests.test_web import AUTH, api_users


def open_files_under(directory: Path) -> list[str]:
    """What this process's open file descriptors name inside ``directory``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if target.startswith(f"{directory}{os.sep}"):
            found.append(target)
    return found


def test_serving_then_shutting_down_closes_every_engine(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.repo.commit({"index.html": "one"})
    dhq.deploy("website", "production", config=site.config)
    api_users(site.config)
    made: list[Engine] = []

    class Recorded(Engine):  # keeps each engine alive, so only closing it frees its files
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(webengines, "Engine", Recorded)  # the routes' engines
    monkeypatch.setattr(web, "Engine", Recorded)  # the worker's
    before = set(threading.enumerate())
    app = web.create_app(dhq.load_settings(site.config), worker=True, worker_interval=0.05)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    listener = socket.create_server(("127.0.0.1", 0))
    serving = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    serving.start()
    for _ in range(200):  # up to 20 s
        if server.started:
            break
        time.sleep(0.1)
    assert server.started, "uvicorn did not start"
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    paths = ["/projects/website/deployments", "/projects/website/servers"] * 8
    with httpx.Client(base_url=url, auth=AUTH, timeout=30) as client, ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda p: client.get(p).status_code, paths))
    assert statuses == [200] * len(paths)
    assert len(made) > 1, "the requests ran in one thread"
    assert open_files_under(site.state_dir), "the engines hold no files open"
    started = set(threading.enumerate()) - before  # the app's threads, and the server's
    server.should_exit = True
    serving.join(timeout=30)
    listener.close()
    for thread in started:  # they end once the app has shut down
        thread.join(timeout=30)
        assert not thread.is_alive(), thread
    assert open_files_under(site.state_dir) == []
