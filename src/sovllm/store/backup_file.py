"""The backup file: a versioned container that encrypts a stream under a passphrase.

Format version 1 (docs/reliability.md, "Backup and restore"):

    b"SOVLLM-BACKUP\\n"                    magic, 14 bytes
    uint32 big-endian n, then n bytes     header: JSON, UTF-8 (below)
    chunks                                uint32 big-endian length (high bit: the last chunk),
                                          then that many bytes: AES-256-GCM ciphertext + tag

The header holds `format` (1), `kdf` (`scrypt`, base64 `salt`, `n`, `r`, `p`), `cipher`
(`AES-256-GCM`), `database` (the backend, so a restore can refuse a wrong target before it
decrypts anything) and `check`: a hash of half of the derived key material, which tells a wrong
passphrase from a damaged file. The other half is the AES key. Chunk i's nonce is i (96 bits);
its associated data is the whole header, i and the last-chunk flag, so a header changed, chunks
reordered, dropped or cut off, or bytes added after the last chunk all fail authentication.
Each file has its own salt, hence its own key: counter nonces never repeat under one key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from collections.abc import Iterator
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"SOVLLM-BACKUP\n"
FORMAT = 1
CHUNK = 1 << 20
_LAST = 0x8000_0000
_MAX_HEADER = 64 * 1024
_SCRYPT = {"n": 2**17, "r": 8, "p": 1}
"""About 0.3 s and 128 MiB per try: OWASP's recommendation for scrypt."""
_MAX_N = 2**20  # a crafted header must not make a restore allocate gigabytes


class BackupFileError(Exception):
    """Not a backup file, a version this sovllm cannot read, or a damaged one."""


class WrongPassphrase(BackupFileError):
    """The passphrase does not open this backup."""


def _derive(passphrase: bytes, kdf: dict[str, Any]) -> tuple[bytes, str]:
    material = Scrypt(
        salt=base64.b64decode(kdf["salt"]), length=64, n=kdf["n"], r=kdf["r"], p=kdf["p"]
    ).derive(passphrase)
    check = hmac.new(material[32:], b"sovllm-backup-check", hashlib.sha256).hexdigest()
    return material[:32], check


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def _aad(header: bytes, index: int, last: bool) -> bytes:
    return header + index.to_bytes(8, "big") + (b"\x01" if last else b"\x00")


class EncryptingWriter:
    """A binary file-like sink: what is written is encrypted in chunks into `out`.

    `close()` writes the last chunk (possibly empty); a file without it does not restore."""

    def __init__(self, out: IO[bytes], passphrase: bytes, database: str) -> None:
        kdf = {"name": "scrypt", "salt": base64.b64encode(os.urandom(16)).decode(), **_SCRYPT}
        key, check = _derive(passphrase, kdf)
        header = {
            "format": FORMAT,
            "kdf": kdf,
            "cipher": "AES-256-GCM",
            "chunk_size": CHUNK,
            "database": database,
            "check": check,
        }
        self._header = json.dumps(header, sort_keys=True).encode()
        self._aes = AESGCM(key)
        self._out = out
        self._buffer = bytearray()
        self._index = 0
        self.closed = False
        out.write(MAGIC + struct.pack(">I", len(self._header)) + self._header)

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) > CHUNK:  # keep at least one byte back for the last chunk
            self._chunk(bytes(self._buffer[:CHUNK]), last=False)
            del self._buffer[:CHUNK]
        return len(data)

    def _chunk(self, plain: bytes, last: bool) -> None:
        sealed = self._aes.encrypt(
            _nonce(self._index), plain, _aad(self._header, self._index, last)
        )
        self._out.write(struct.pack(">I", len(sealed) | (_LAST if last else 0)) + sealed)
        self._index += 1

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        if not self.closed:
            self._chunk(bytes(self._buffer), last=True)
            self._buffer.clear()
            self.closed = True
            self._out.flush()


def read_header(src: IO[bytes]) -> tuple[bytes, dict[str, Any]]:
    """The raw header and its fields; BackupFileError if this is not a backup we can read."""
    if src.read(len(MAGIC)) != MAGIC:
        raise BackupFileError("not a sovllm backup file (its first bytes are not the magic)")
    size = src.read(4)
    if len(size) != 4 or struct.unpack(">I", size)[0] > _MAX_HEADER:
        raise BackupFileError("the backup file is damaged: its header is cut off or too long")
    raw = src.read(struct.unpack(">I", size)[0])
    try:
        header = json.loads(raw)
        version = header["format"]
        kdf = header["kdf"]
    except (ValueError, KeyError, TypeError):
        raise BackupFileError("the backup file is damaged: its header is not valid") from None
    if version != FORMAT:
        raise BackupFileError(f"backup format {version!r} is not one this sovllm reads ({FORMAT})")
    try:
        good = (
            kdf["name"] == "scrypt"
            and 2 <= int(kdf["n"]) <= _MAX_N
            and 1 <= int(kdf["r"]) <= 32
            and 1 <= int(kdf["p"]) <= 16
        )
    except (KeyError, TypeError, ValueError):
        good = False
    if not good or header.get("cipher") != "AES-256-GCM":
        raise BackupFileError("the backup file is damaged: unknown key derivation or cipher")
    return raw, header


class DecryptingReader:
    """The plaintext stream of a backup file, as a binary file-like source (for tarfile).

    Opening it checks the passphrase (WrongPassphrase); reading raises BackupFileError at the
    first chunk that fails authentication or at a file that ends before its last chunk."""

    def __init__(self, src: IO[bytes], passphrase: bytes) -> None:
        self._header, fields = read_header(src)
        self.header = fields
        try:
            key, check = _derive(passphrase, fields["kdf"])
        except (ValueError, TypeError, KeyError):
            raise BackupFileError("the backup file is damaged: bad key derivation") from None
        if not hmac.compare_digest(check, str(fields.get("check", ""))):
            raise WrongPassphrase("wrong passphrase for this backup file")
        self._aes = AESGCM(key)
        self._src = src
        self._chunks = self._read_chunks()
        self._buffer = b""
        self.done = False

    def _read_chunks(self) -> Iterator[bytes]:
        index = 0
        while True:
            size = self._src.read(4)
            if len(size) != 4:
                raise BackupFileError("the backup file is cut off: its last chunk is missing")
            (word,) = struct.unpack(">I", size)
            last, length = bool(word & _LAST), word & ~_LAST
            if length > CHUNK + 16:
                raise BackupFileError(f"the backup file is damaged at chunk {index}")
            sealed = self._src.read(length)
            if len(sealed) != length:
                raise BackupFileError(f"the backup file is cut off in chunk {index}")
            try:
                plain = self._aes.decrypt(_nonce(index), sealed, _aad(self._header, index, last))
            except InvalidTag:
                raise BackupFileError(
                    f"the backup file is damaged: chunk {index} fails authentication"
                ) from None
            index += 1
            yield plain
            if last:
                if self._src.read(1):
                    raise BackupFileError("the backup file is damaged: bytes after its end")
                self.done = True
                return

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self._buffer) < n) and not self.done:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if n < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def drain(self) -> None:
        """Read to the end, so every chunk's tag is checked (tarfile may stop early)."""
        while not self.done:
            self.read(CHUNK)
            self._buffer = b""
