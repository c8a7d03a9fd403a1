"""Signed checkpoints in the C2SP tlog-checkpoint format, as Ed25519 signed notes.

A checkpoint body is three lines: the log's origin, the tree size, the base64 root hash. The
signed note adds a blank line and one line per signature: an em dash, the key name, and the
base64 of the 4-byte key hash followed by the signature (C2SP signed-note).
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = b"\x01"
DASH = "\u2014"


class CheckpointError(Exception):
    pass


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def _key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public).digest()[:4]


@dataclass(frozen=True)
class Verifier:
    name: str
    public: bytes

    @property
    def key_hash(self) -> bytes:
        return _key_hash(self.name, self.public)

    def encode(self) -> str:
        """The verifier key in the note format: name+hash+base64(alg||key)."""
        return (
            f"{self.name}+{self.key_hash.hex()}+{base64.b64encode(ED25519 + self.public).decode()}"
        )

    @classmethod
    def decode(cls, text: str) -> Verifier:
        try:
            name, _hash, key = text.strip().split("+", 2)  # base64 has "+" too
            raw = base64.b64decode(key, validate=True)
        except ValueError:
            raise CheckpointError("not a verifier key (name+hash+key)") from None
        if raw[:1] != ED25519 or len(raw) != 33:
            raise CheckpointError("the verifier key is not an Ed25519 key")
        return cls(name, raw[1:])


class Signer:
    def __init__(self, name: str, private: Ed25519PrivateKey) -> None:
        self.name = name
        self._private = private
        # Keyed hashes (pseudonyms) derive their key from this; it never leaves the process.
        self.secret = hashlib.sha256(
            b"sovllm-keyed-hash\x00" + private.private_bytes_raw()
        ).digest()
        public = private.public_key().public_bytes_raw()
        self.verifier = Verifier(name, public)

    def sign_bytes(self, data: bytes) -> bytes:
        """A plain Ed25519 signature (erasure receipts)."""
        return self._private.sign(data)

    def signature_line(self, checkpoint: Checkpoint) -> str:
        sig = self._private.sign(checkpoint.body().encode())
        return f"{DASH} {self.name} {base64.b64encode(self.verifier.key_hash + sig).decode()}\n"

    def sign(self, checkpoint: Checkpoint) -> str:
        return sign_by(checkpoint, [self])

    @classmethod
    def load(cls, path: Path, name: str) -> Signer:
        """The log's key from an existing file (a configured one is never created)."""
        seed = base64.b64decode(path.read_text().strip())
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load_or_create(cls, path: Path, name: str) -> Signer:
        """The log's key, made at first start and kept readable by the owner only (0600)."""
        if path.exists():
            return cls.load(path, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        private = Ed25519PrivateKey.generate()
        seed = private.private_bytes_raw()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.b64encode(seed).decode() + "\n")
        return cls(name, private)


def sign_by(checkpoint: Checkpoint, signers: list[Signer]) -> str:
    """A note signed by each of `signers` (two at a key transition: the old and the new)."""
    lines = "".join(signer.signature_line(checkpoint) for signer in signers)
    return f"{checkpoint.body()}\n{lines}"


def parse(note: str) -> tuple[Checkpoint, list[tuple[str, bytes, bytes]]]:
    """Split a signed note into its checkpoint and its (name, key hash, signature) lines."""
    body, sep, sigs = note.partition("\n\n")
    lines = body.split("\n")
    if not sep or len(lines) < 3:
        raise CheckpointError("not a signed checkpoint note")
    try:
        size = int(lines[1])
        root = base64.b64decode(lines[2], validate=True)
    except ValueError:
        raise CheckpointError("the checkpoint's size or root hash is malformed") from None
    if size < 0 or len(root) != 32:
        raise CheckpointError("the checkpoint's size or root hash is malformed")
    signatures = []
    for line in sigs.splitlines():
        if not line.startswith(DASH + " "):
            continue
        try:
            name, blob = line[2:].rsplit(" ", 1)
            raw = base64.b64decode(blob, validate=True)
        except ValueError:
            raise CheckpointError("a signature line is malformed") from None
        signatures.append((name, raw[:4], raw[4:]))
    return Checkpoint(lines[0], size, root), signatures


def verify(note: str, verifier: Verifier) -> Checkpoint:
    """The checkpoint, if `verifier` signed this note; else CheckpointError saying why."""
    checkpoint, signatures = parse(note)
    for name, key_hash, sig in signatures:
        if name == verifier.name and key_hash == verifier.key_hash:
            try:
                Ed25519PublicKey.from_public_bytes(verifier.public).verify(
                    sig, checkpoint.body().encode()
                )
            except InvalidSignature:
                raise CheckpointError(f"the signature of {name} does not verify") from None
            return checkpoint
    raise CheckpointError(f"the note carries no signature of {verifier.name}")
