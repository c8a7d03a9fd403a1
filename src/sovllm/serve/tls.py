"""TLS: the server's HTTPS options for uvicorn, checked at start, and the certificate the
gateway makes for the workers it starts.

Gateway to worker: with `tls.*` on, each gateway makes its own key pair and self-signed
certificate for 127.0.0.1 at start (data_dir/tls/, 0600), hands the files to the workers it
starts, and trusts that one certificate alone when it connects to them. The deployment's own
certificate is not reused: it names the service's public host, not 127.0.0.1, and its key
would then sit in every worker; and no CA the machine trusts can stand in for the worker. The
token (SOVLLM_WORKER_TOKEN) still authenticates the gateway to the worker, as without TLS.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sovllm.tls_settings import TlsSettings

WORKER_CERT_ENV = "SOVLLM_WORKER_TLS_CERT"
WORKER_KEY_ENV = "SOVLLM_WORKER_TLS_KEY"
"""The files a gateway hands the workers it starts (their paths, never their contents)."""


class TlsError(Exception):
    """A certificate, key or CA file that cannot be used; the message names the setting."""


def uvicorn_options(tls: TlsSettings) -> dict[str, Any]:
    """uvicorn's ssl_* options for `tls`, after loading each file once here, so a bad one stops
    the start with a line naming the setting (none when TLS is off)."""
    if tls.cert_file is None or tls.key_file is None:
        return {}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as exc:
        raise TlsError(
            f"invalid setting 'tls.cert_file'/'tls.key_file': {tls.cert_file} and "
            f"{tls.key_file} are not a PEM certificate and its private key ({exc.reason})"
        ) from None
    except OSError as exc:
        raise TlsError(f"invalid setting 'tls.cert_file': {exc.strerror}") from None
    options: dict[str, Any] = {
        "ssl_certfile": str(tls.cert_file),
        "ssl_keyfile": str(tls.key_file),
    }
    if tls.client_ca is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise TlsError(
                f"invalid setting 'tls.client_ca': {tls.client_ca} holds no PEM CA "
                f"certificate ({reason})"
            ) from None
        options["ssl_ca_certs"] = str(tls.client_ca)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def worker_options() -> dict[str, Any]:
    """A started worker's uvicorn ssl_* options: the files its gateway handed it, if any."""
    cert, key = os.environ.get(WORKER_CERT_ENV), os.environ.get(WORKER_KEY_ENV)
    if not cert or not key:
        return {}
    return uvicorn_options(TlsSettings(cert_file=Path(cert), key_file=Path(key)))


@dataclass(frozen=True)
class WorkerIdentity:
    cert_file: Path
    key_file: Path
    cert_pem: bytes

    def env(self) -> dict[str, str]:
        return {WORKER_CERT_ENV: str(self.cert_file), WORKER_KEY_ENV: str(self.key_file)}

    def client_context(self) -> ssl.SSLContext:
        """What the gateway connects to its workers with: this certificate is the only one
        trusted, for 127.0.0.1."""
        return ssl.create_default_context(cadata=self.cert_pem.decode())


def make_worker_identity(folder: Path, name: str) -> WorkerIdentity:
    """A new key pair and self-signed certificate for 127.0.0.1, written to `folder` as
    NAME.crt and NAME.key (replacing earlier ones atomically)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sovllm worker")])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    secret = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    for path, data in ((key_file, secret), (cert_file, pem)):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    return WorkerIdentity(cert_file, key_file, pem)
