"""The HTTP API: requests per second and rollback latency, against the CLI as reference.

    python benchmarks/api_bench.py [--requests 1000] [--rollbacks 10]

Builds a repository (300 files of 1-8 KiB), deploys two revisions into a local
directory, starts ``deployhq-lite serve`` on a loopback port, then measures:

- ``GET /projects/<p>/deployments``: requests per second, one keep-alive client and
  four concurrent ones;
- ``POST .../rollback`` (queue mode) until ``GET .../<uuid>`` says ``completed``: the
  latency of a small rollback (3 files) run by the server's worker, alternating the two
  targets, next to a whole ``deployhq-lite rollback`` process doing the same change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import ENV, BenchError, git, run

EXE = Path(sys.executable).parent / "deployhq-lite"
KEY = "bench-key"
EMAIL = "bench@localhost"


def make_site(base: Path) -> Path:
    repo = base / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    rng = random.Random(7)
    for i in range(300):
        path = repo / f"d{i % 10}" / f"f{i}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(1024, 8192)))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    for i in range(3):
        (repo / f"d{i}" / f"f{i}.txt").write_text(f"changed {i}\n")
    git(repo, "commit", "-q", "-am", "two")
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    config = base / "deployhq-lite.toml"
    config.write_text(
        f'state_dir = "{base / "state"}"\n'
        f'[api_users."{EMAIL}"]\nkey_sha256 = "{digest}"\n'
        f'[projects.site]\nrepository = "{repo}"\n'
        f'[projects.site.servers.web]\nprotocol_type = "local"\nroot = "{base / "www"}"\n'
    )
    return config


def deploy(config: Path, revision: str) -> str:
    out = run(
        [EXE, "deploy", "site", "--server", "web", "-r", revision, "--config", config, "--json"]
    )
    return str(json.loads(out)["identifier"])


def start_server(config: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [str(EXE), "serve", "--port", str(port), "--config", str(config)],
        env=ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/openapi.json", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise BenchError("the API server did not start")


def requests_per_second(url: str, total: int, clients: int) -> float:
    def worker(n: int) -> None:
        with httpx.Client(base_url=url, auth=(EMAIL, KEY)) as client:
            for _ in range(n):
                response = client.get("/projects/site/deployments", params={"per_page": 30})
                if response.status_code != 200:
                    raise BenchError(response.text)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, [total // clients] * clients))
    return (total // clients * clients) / (time.perf_counter() - start)


def rollback_latency(url: str, targets: list[str], count: int) -> list[float]:
    latencies = []
    with httpx.Client(base_url=url, auth=(EMAIL, KEY)) as client:
        for i in range(count):
            target = targets[i % 2]
            start = time.perf_counter()
            made = client.post(f"/projects/site/deployments/{target}/rollback").json()
            for _ in range(6000):  # up to 60 s
                status = client.get(f"/projects/site/deployments/{made['identifier']}").json()
                if status["status"] in ("completed", "failed"):
                    break
                time.sleep(0.005)
            if status["status"] != "completed":
                raise BenchError(f"rollback {made['identifier']}: {status}")
            latencies.append(time.perf_counter() - start)
    return latencies


def cli_rollbacks(config: Path, targets: list[str], count: int) -> list[float]:
    times = []
    for i in range(count):
        start = time.perf_counter()
        run([EXE, "rollback", "site", targets[i % 2], "--config", config])
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rollbacks", type=int, default=10)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="dhq-api-bench-"))
    try:
        config = make_site(base)
        targets = [deploy(config, "main~1"), deploy(config, "main")]
        for _ in range(20):  # a history worth paging through
            targets.append(deploy(config, "main~1"))
            targets.append(deploy(config, "main"))
        targets = targets[-2:]
        cli = cli_rollbacks(config, targets, args.rollbacks)
        process, url = start_server(config)
        try:
            one = requests_per_second(url, args.requests, 1)
            four = requests_per_second(url, args.requests, 4)
            api = rollback_latency(url, targets, args.rollbacks)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
        print(f"GET /projects/site/deployments: {one:,.0f} req/s (1 client), {four:,.0f} req/s (4)")
        api_ms, cli_ms = statistics.median(api) * 1000, statistics.median(cli) * 1000
        print(
            f"rollback of 3 files, POST (queue) -> completed: {api_ms:.0f} ms median; "
            f"`deployhq-lite rollback` process: {cli_ms:.0f} ms; ratio {api_ms / cli_ms:.2f}x"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
