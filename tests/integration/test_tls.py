"""HTTPS from the server (tls.*), client certificates, and HTTPS between a gateway and the
workers it starts; every certificate comes from a throwaway CA made here."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import MODEL_ID, _bootstrap_key, free_port

ONE_THREAD = {"SOVLLM_ENGINE__THREADS": "1"}


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    other_cert: Path
    """A certificate with its own key, for a mismatched pair."""

    def context(self, client: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if client:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def _write_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key


def _issue(
    path: Path,
    key: ec.EllipticCurvePrivateKey,
    name: str,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier | None,
) -> x509.Name:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer if usage is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if usage is None:  # the CA
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        ).add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    else:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName(name)]
                ),
                critical=False,
            )
        )
    cert = builder.sign(signer, hashes.SHA256())
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return subject


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key = _write_key(d / "ca.key")
    ca = _issue(d / "ca.pem", ca_key, "throwaway test CA", x509.Name([]), ca_key, None)
    server_key = _write_key(d / "server.key")
    _issue(d / "server.pem", server_key, "localhost", ca, ca_key, ExtendedKeyUsageOID.SERVER_AUTH)
    client_key = _write_key(d / "client.key")
    _issue(d / "client.pem", client_key, "client", ca, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    other_key = _write_key(d / "other.key")
    _issue(d / "other.pem", other_key, "other", ca, ca_key, ExtendedKeyUsageOID.SERVER_AUTH)
    return Pki(
        d / "ca.pem",
        d / "server.pem",
        d / "server.key",
        d / "client.pem",
        d / "client.key",
        d / "other.pem",
    )


@dataclass
class TlsServer:
    url: str
    api_key: str
    data_dir: Path
    process: subprocess.Popen[bytes]


def _env(
    tmp: Path, pki: Pki, client_ca: bool, extra: dict[str, str] | None = None
) -> dict[str, str]:
    env = {
        **os.environ,
        **ONE_THREAD,
        **(extra or {}),
        "SOVLLM_DATA_DIR": str(tmp / "data"),
        "SOVLLM_TLS__CERT_FILE": str(pki.cert),
        "SOVLLM_TLS__KEY_FILE": str(pki.key),
    }
    if client_ca:
        env["SOVLLM_TLS__CLIENT_CA"] = str(pki.ca)
    return env


@contextmanager
def tls_server(
    tmp: Path,
    pki: Pki,
    client_ca: bool = False,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[TlsServer]:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / "server.log"
    env = _env(tmp, pki, client_ca, env)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sovllm", "serve", "--port", str(port), *args],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                r = httpx.get(f"{url}/ready", verify=pki.context(client=client_ca), timeout=2)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not become ready:\n{log.read_text()}")
            time.sleep(0.1)  # a child process has no readiness signal to wait on
        yield TlsServer(url, _bootstrap_key(log, env), tmp / "data", proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_https_serves_the_official_client_and_refuses_plain_http(tmp_path: Path, pki: Pki) -> None:
    with tls_server(tmp_path, pki) as srv:
        http = httpx.Client(verify=pki.context())
        client = openai.OpenAI(
            base_url=f"{srv.url}/v1", api_key=srv.api_key, http_client=http, max_retries=0
        )
        answer = client.chat.completions.create(
            model=MODEL_ID, max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
        )
        assert answer.choices[0].message.content is not None
        health = http.get(f"{srv.url}/health")
        assert health.status_code == 200
        assert health.headers["strict-transport-security"] == "max-age=31536000"
        # Plain HTTP to the TLS port gets no answer.
        plain = srv.url.replace("https://", "http://")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{plain}/health", timeout=10)
        # A client that does not trust the throwaway CA refuses the server.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{srv.url}/health", timeout=10)


def test_client_certificates_are_required_when_client_ca_is_set(tmp_path: Path, pki: Pki) -> None:
    with tls_server(tmp_path, pki, client_ca=True) as srv:
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{srv.url}/health", verify=pki.context(), timeout=10)
        with_cert = httpx.Client(verify=pki.context(client=True))
        assert with_cert.get(f"{srv.url}/health").status_code == 200
        client = openai.OpenAI(
            base_url=f"{srv.url}/v1", api_key=srv.api_key, http_client=with_cert, max_retries=0
        )
        assert client.models.list().data[0].id == MODEL_ID


def test_a_gateway_reaches_its_workers_over_https(tmp_path: Path, pki: Pki) -> None:
    with tls_server(tmp_path, pki, args=("--replicas", "2")) as srv:
        http = httpx.Client(verify=pki.context())
        client = openai.OpenAI(
            base_url=f"{srv.url}/v1", api_key=srv.api_key, http_client=http, max_retries=0
        )
        for _ in range(2):
            answer = client.chat.completions.create(
                model=MODEL_ID, max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
            )
            assert answer.choices[0].message.content is not None
        pool = http.get(
            f"{srv.url}/admin/v1/pool", headers={"Authorization": f"Bearer {srv.api_key}"}
        ).json()
        urls = [r["url"] for r in pool["replicas"]]
        assert len(urls) == 2 and all(u.startswith("https://127.0.0.1:") for u in urls), urls
        (pinned,) = (srv.data_dir / "tls").glob("workers-*.crt")
        expected = x509.load_pem_x509_certificate(pinned.read_bytes())
        for u in urls:
            port = urlsplit(u).port
            assert port is not None
            # The worker speaks TLS only, with the gateway's certificate for its workers...
            with pytest.raises(httpx.TransportError):
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
            ctx = ssl.create_default_context(cafile=str(pinned))
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                der = tls.getpeercert(binary_form=True)
            assert der is not None and x509.load_der_x509_certificate(der) == expected
            # ... and still wants the gateway's token.
            info = httpx.get(f"{u}/v1/engine/info", verify=ctx, timeout=10)
            assert info.status_code == 401
        assert (pinned.with_suffix(".key").stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize("replicas", [1, 2], ids=["embedded", "two-workers"])
def test_a_stop_does_not_wait_on_an_idle_keep_alive_client(
    tmp_path: Path, pki: Pki, replicas: int
) -> None:
    # The official client keeps its connection open in its pool after an answer, and so does
    # the gateway with its workers. Over TLS a server's close of such a connection waited for a
    # close_notify that an idle client never sends, for the event loop's 30 s: past a grace of
    # 10 s, uvicorn gave up waiting, and said so in the server's or the worker's log.
    grace = {"SOVLLM_SHUTDOWN_GRACE_S": "10"}
    args = ("--replicas", str(replicas)) if replicas > 1 else ()
    with tls_server(tmp_path, pki, args=args, env=grace) as srv:
        http = httpx.Client(verify=pki.context())
        client = openai.OpenAI(
            base_url=f"{srv.url}/v1", api_key=srv.api_key, http_client=http, max_retries=0
        )
        for _ in range(replicas):  # round robin: one answer from each worker
            client.chat.completions.create(
                model=MODEL_ID, max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
            )
        srv.process.send_signal(signal.SIGTERM)
        srv.process.wait(timeout=120)  # against a hang; what is checked is the logs below
        http.close()
    logs = [tmp_path / "server.log", *sorted((srv.data_dir / "logs").glob("replica-*.log"))]
    assert len(logs) == (1 if replicas == 1 else 1 + replicas), logs
    for path in logs:
        log = path.read_text()
        assert "Waiting for connections to close" in log, path  # an idle connection was there
        assert "timeout graceful shutdown exceeded" not in log, (path, log)
        assert "Application shutdown complete" in log, (path, log)


def _serve(tmp: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", "serve", "--port", str(free_port())],
        env={**os.environ, "SOVLLM_DATA_DIR": str(tmp / "data"), **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_bad_tls_files_stop_the_start_naming_the_setting(tmp_path: Path, pki: Pki) -> None:
    missing = _serve(tmp_path, {"SOVLLM_TLS__CERT_FILE": str(tmp_path / "nope.pem"),
                                "SOVLLM_TLS__KEY_FILE": str(pki.key)})  # fmt: skip
    assert missing.returncode == 2
    assert "tls.cert_file" in missing.stderr and "does not exist" in missing.stderr
    alone = _serve(tmp_path, {"SOVLLM_TLS__CERT_FILE": str(pki.cert)})
    assert alone.returncode == 2 and "set both or neither" in alone.stderr
    mismatched = _serve(tmp_path, {"SOVLLM_TLS__CERT_FILE": str(pki.other_cert),
                                   "SOVLLM_TLS__KEY_FILE": str(pki.key)})  # fmt: skip
    assert mismatched.returncode == 1, mismatched.stderr
    assert "tls.cert_file" in mismatched.stderr and "private key" in mismatched.stderr
    not_ca = _serve(tmp_path, {"SOVLLM_TLS__CERT_FILE": str(pki.cert),
                               "SOVLLM_TLS__KEY_FILE": str(pki.key),
                               "SOVLLM_TLS__CLIENT_CA": str(pki.key)})  # fmt: skip
    assert not_ca.returncode == 1 and "tls.client_ca" in not_ca.stderr, not_ca.stderr
    unreadable = tmp_path / "unreadable.pem"
    unreadable.mkdir()
    folder = _serve(tmp_path, {"SOVLLM_TLS__CERT_FILE": str(unreadable),
                               "SOVLLM_TLS__KEY_FILE": str(pki.key)})  # fmt: skip
    assert folder.returncode == 2 and "not a PEM file" in folder.stderr
