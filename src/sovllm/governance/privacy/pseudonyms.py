"""Rotation of the pseudonym key: the HMAC key of the pseudonyms in the audit log and of data
subjects' ids (governance/audit/__init__.py keyed_hash).

Rotating starts a new pseudonym epoch: from the `privacy.pseudonym_key_rotated` entry on (within
a second, the time a running server takes to re-read the key), the same user has a different
pseudonym, so entries of two epochs cannot be linked without the old key. Entries already
written keep their pseudonyms: they are inside hashed bodies, and the log keeps verifying.

The old key is kept in `data_dir/audit/pseudonym.retired` (0600) for one purpose: erasing a
user finds their content stored under an earlier epoch's subject id. Delete that file once
`retention.content_days` has passed since the rotation, and earlier epochs become unlinkable.
The old key is also kept in the database, wrapped under the master key (content.py
keep_retired_pseudonym_key), so every gateway's erasure reaches it; the content purge removes it
after `retention.content_days`. An erasure that reaches fewer earlier keys than the log records
rotations is refused (erasure.py). Each epoch's key
id is in the log (`privacy.pseudonym_key_created`, then these entries): a gateway starts only
with the newest (governance/audit/__init__.py).

For the default key file, in steps each safe to repeat: the new key is written to
`pseudonym.key.next`, the old one appended to the retired file, the audit entry written (a
resumed run finds it and does not repeat it), and `pseudonym.key.next` replaces the key file.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from sovllm.governance.audit import records
from sovllm.governance.audit.log import PSEUDONYM_ROTATED_KIND, AuditLog
from sovllm.governance.audit.lookup import latest_of_kind
from sovllm.governance.privacy.content import ContentVault
from sovllm.governance.privacy.masterkey import key_id, next_path, read_key, swap, write_key
from sovllm.store.schema import AuditEntry

KIND = PSEUDONYM_ROTATED_KIND


@dataclass(frozen=True)
class PseudonymsRotated:
    epoch: int
    """1 for the first rotation: epoch 0 is the key the data folder started with."""
    key_id: str
    """A hash of the new key: which key an epoch used, revealing nothing of it."""
    entry: int
    resumed: bool


def _retire(path: Path, key: bytes) -> None:
    """Append `key` to the retired keys (0600), once."""
    line = base64.b64encode(key).decode()
    if path.exists() and line in path.read_text().split():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def rotate_pseudonym_key(
    log: AuditLog,
    path: Path,
    retired: Path,
    fields: Mapping[str, Any],
    new_key_file: Path | None = None,
    vault: ContentVault | None = None,
) -> PseudonymsRotated:
    """Rotate the key in `path` (see the module doc); with `new_key_file` (the key file is a
    mounted secret its owner swaps) record the epoch of that key and write no key file."""
    old = read_key(path)
    side = next_path(path)
    resumed = False
    if new_key_file is not None:
        new = read_key(new_key_file)
    elif side.exists():
        new, resumed = read_key(side), True
    else:
        new = os.urandom(32)
        write_key(side, new)
    if new == old:
        raise ValueError("the new pseudonym key is the current one")
    _retire(retired, old)
    if vault is not None:  # every gateway's erasure reaches the old epoch (content.py)
        vault.keep_retired_pseudonym_key(old)
    last = latest_of_kind(log.db, KIND)
    if last is not None and last.get("key_id") == key_id(new):
        seq, epoch = int(last["seq"]), int(last["epoch"])  # written before the interruption
    else:
        with log.db.read() as s:
            before = s.scalar(select(func.count()).where(AuditEntry.kind == KIND)) or 0
        epoch = int(before) + 1
        seq = log.append(KIND, records.pseudonyms_rotated(fields, epoch, key_id(new))).result(30)
    if new_key_file is None:
        swap(side, path)
    log.pseudonym_key = new  # this process: at once
    return PseudonymsRotated(epoch, key_id(new), seq, resumed)
