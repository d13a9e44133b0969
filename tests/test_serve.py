"""`deployhq-lite serve` as a process: where it listens, its request log, HTTPS, a busy port."""

from __future__ import annotations

import datetime
import ipaddress
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deployhq_lite.testing.plugin import CLI, Site, run_cli
from deployhq_lite.testing.sshd import free_port
from tests.test_web import AUTH, KEY, api_users


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    def stop(self) -> tuple[str, str]:
        """Interrupt it; what it printed on stdout and stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.stdout.read_text(), self.stderr.read_text()


@pytest.fixture
def serve(site: Site, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start ``deployhq-lite serve ARGS`` on a free loopback port and wait until it says
    it listens (or exits); stopped at the end."""
    started: list[Served] = []

    def start(*args: str) -> Served:
        if "api_users" not in site.config.read_text():
            api_users(site.config)
        port = free_port()
        out, err = tmp_path / f"{port}.out", tmp_path / f"{port}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [CLI, "serve", "--port", str(port), "--config", str(site.config), *args],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        served = Served(process, port, out, err)
        started.append(served)
        for _ in range(200):  # up to 20 s
            if "listening on" in err.read_text() or process.poll() is not None:
                break
            time.sleep(0.1)
        return served

    yield start
    for served in started:
        served.stop()


def test_serve_says_where_it_listens_and_with_v_logs_one_line_per_request(
    site: Site, serve: Callable[..., Served]
) -> None:
    served = serve("-v", "--no-worker")
    url = f"http://127.0.0.1:{served.port}"
    assert served.stderr.read_text().splitlines()[0] == f"listening on {url}"
    with httpx.Client(base_url=url, auth=AUTH, timeout=30) as client:
        assert client.get("/projects/website/deployments").status_code == 200
        assert client.get("/projects/nope/deployments").status_code == 404
        body = {"mode": "a-body-value-never-logged"}
        assert client.post("/projects/website/deployments/abc123/rollback", json=body).is_error
    assert httpx.get(url + "/projects/website/deployments?page=2", timeout=30).status_code == 401
    stdout, stderr = served.stop()
    assert stdout == ""
    served_lines = [line for line in stderr.splitlines() if "request.served" in line]
    expected = [
        ("GET", "/projects/website/deployments", 200),
        ("GET", "/projects/nope/deployments", 404),
        ("POST", "/projects/website/deployments/abc123/rollback", 422),
        ("GET", "/projects/website/deployments", 401),
    ]
    assert len(served_lines) == len(expected), stderr
    for line, (method, path, status) in zip(served_lines, expected, strict=True):
        assert f"method={method}" in line and f"path={path} " in line, line
        assert f"status={status}" in line and " ms=" in line, line
    for secret in (KEY, "a-body-value-never-logged", "Basic ", "page=2", "authorization"):
        assert secret not in stderr


def test_serve_without_v_logs_no_requests(site: Site, serve: Callable[..., Served]) -> None:
    served = serve("--no-worker")
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", auth=AUTH) as client:
        assert client.get("/projects/website/deployments").status_code == 200
    stdout, stderr = served.stop()
    assert stdout == ""
    assert stderr == f"listening on http://127.0.0.1:{served.port}\n"


def test_a_busy_port_is_one_error_line(site: Site) -> None:
    api_users(site.config)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = run_cli("serve", "--port", str(port), "--config", site.config)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: (certfile, keyfile)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


def test_serve_https_with_certfile_and_keyfile(
    site: Site, serve: Callable[..., Served], tmp_path: Path
) -> None:
    certfile, keyfile = self_signed(tmp_path)
    served = serve("--certfile", str(certfile), "--keyfile", str(keyfile), "--no-worker")
    url = f"https://127.0.0.1:{served.port}"
    assert served.stderr.read_text().splitlines()[0] == f"listening on {url}"
    trusting = ssl.create_default_context(cafile=str(certfile))
    with httpx.Client(base_url=url, auth=AUTH, verify=trusting, timeout=30) as client:
        response = client.get("/projects/website/deployments")
        assert response.status_code == 200, response.text
        assert response.json()["records"] == []
    with pytest.raises(httpx.ConnectError):  # verified against the default CAs: refused
        httpx.get(url + "/projects/website/deployments", auth=AUTH, timeout=30)
    with pytest.raises(httpx.TransportError):  # no plain HTTP on that port
        httpx.get(f"http://127.0.0.1:{served.port}/", auth=AUTH, timeout=30)


def test_serve_with_a_certificate_that_does_not_load_is_one_error_line(
    site: Site, tmp_path: Path
) -> None:
    api_users(site.config)
    certfile = tmp_path / "cert.pem"
    certfile.write_text("not a certificate\n")
    port = str(free_port())
    done = run_cli("serve", "--port", port, "--certfile", certfile, "--config", site.config)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith(f"error: --certfile {certfile}: cannot load the certificate")
    assert len(done.stderr.splitlines()) == 1, done.stderr
