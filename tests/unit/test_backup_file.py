"""The backup container (store/backup_file.py): what it encrypts comes back only whole, in
order, under the right passphrase."""

from __future__ import annotations

import io
import json
import os
import struct

import pytest

from sovllm.store.backup_file import (
    CHUNK,
    MAGIC,
    BackupFileError,
    DecryptingReader,
    EncryptingWriter,
    WrongPassphrase,
)

PASS = b"a passphrase of some length"


def _seal(data: bytes, passphrase: bytes = PASS) -> bytes:
    out = io.BytesIO()
    sink = EncryptingWriter(out, passphrase, "sqlite")
    for i in range(0, len(data), 70_000):  # writes that straddle chunk boundaries
        sink.write(data[i : i + 70_000])
    sink.close()
    return out.getvalue()


def _open(blob: bytes, passphrase: bytes = PASS) -> bytes:
    reader = DecryptingReader(io.BytesIO(blob), passphrase)
    got = reader.read()
    reader.drain()
    return got


def _chunks(blob: bytes) -> tuple[bytes, list[bytes]]:
    """The prefix (magic and header) and each chunk with its length word."""
    n = struct.unpack(">I", blob[len(MAGIC) : len(MAGIC) + 4])[0]
    at = len(MAGIC) + 4 + n
    prefix, chunks = blob[:at], []
    while at < len(blob):
        length = struct.unpack(">I", blob[at : at + 4])[0] & 0x7FFF_FFFF
        chunks.append(blob[at : at + 4 + length])
        at += 4 + length
    return prefix, chunks


@pytest.fixture(scope="module")
def data() -> bytes:
    return os.urandom(2 * CHUNK + 12345)


@pytest.fixture(scope="module")
def sealed(data: bytes) -> bytes:
    return _seal(data)


def test_what_is_sealed_opens_whole(data: bytes, sealed: bytes) -> None:
    assert _open(sealed) == data
    assert len(_chunks(sealed)[1]) == 3
    assert _open(_seal(b"")) == b""
    assert data[:1000] not in sealed


def test_a_wrong_passphrase_is_named(sealed: bytes) -> None:
    with pytest.raises(WrongPassphrase):
        _open(sealed, b"another passphrase here")


def test_every_change_is_refused(sealed: bytes) -> None:
    prefix, chunks = _chunks(sealed)
    header = json.loads(prefix[len(MAGIC) + 4 :])
    cases = {
        "a flipped byte": sealed[:-100] + bytes([sealed[-100] ^ 1]) + sealed[-99:],
        "reordered chunks": prefix + chunks[1] + chunks[0] + chunks[2],
        "a dropped chunk": prefix + chunks[0] + chunks[2],
        "the last chunk gone": prefix + chunks[0] + chunks[1],
        "cut mid-chunk": sealed[:-10],
        "bytes after the end": sealed + b"x",
        "a changed header": MAGIC
        + struct.pack(">I", len(prefix) - len(MAGIC) - 4)
        + json.dumps({**header, "chunk_size": CHUNK + 1}, sort_keys=True)
        .encode()
        .ljust(len(prefix) - len(MAGIC) - 4)
        + b"".join(chunks),
    }
    for what, blob in cases.items():
        with pytest.raises(BackupFileError):
            _open(blob)
            pytest.fail(what)


def test_other_files_and_versions_are_named(sealed: bytes) -> None:
    with pytest.raises(BackupFileError, match="not a sovllm backup"):
        _open(b"PK\x03\x04" + sealed)
    prefix, chunks = _chunks(sealed)
    header = json.loads(prefix[len(MAGIC) + 4 :])
    raw = json.dumps({**header, "format": 2}).encode()
    with pytest.raises(BackupFileError, match="format 2"):
        _open(MAGIC + struct.pack(">I", len(raw)) + raw + b"".join(chunks))
    raw = json.dumps({**header, "kdf": {**header["kdf"], "n": 2**30}}).encode()
    with pytest.raises(BackupFileError, match="key derivation"):
        _open(MAGIC + struct.pack(">I", len(raw)) + raw + b"".join(chunks))
