"""Rotation of the audit log's signing key: a key transition the old key vouches for.

The transition is one transaction (AuditLog.rotate_key): an `audit.signing_key_rotated` entry
naming the old and the new verifier keys, and a checkpoint of the tree ending with it signed by
both. A verifier that trusts either key follows the chain through these entries (verify.py);
they are never pruned, so the log keeps every public key it was signed with.

For the default key file, in steps each safe to repeat: the new key is written to
`signing.key.next` (0600); the transition is committed (a resumed run finds it in the log and
does not repeat it); `signing.key.next` replaces `signing.key`. Other processes that share the
log follow at their next checkpoint (AuditLog._follow_rotation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.log import KEY_KIND, AuditLog
from sovllm.governance.audit.lookup import latest_of_kind
from sovllm.governance.privacy.masterkey import swap, write_key


@dataclass(frozen=True)
class KeyRotated:
    old_key: str
    new_key: str
    """Verifier keys (name+hash+key)."""
    entry: int
    """The transition's audit entry."""
    resumed: bool
    key_file: Path


def rotate_signing_key(
    log: AuditLog, path: Path, fields: Mapping[str, Any], new_key_file: Path | None = None
) -> KeyRotated:
    """Rotate the key in `path` (see the module doc); with `new_key_file` (the key file is a
    mounted secret its owner swaps) sign the transition with that key and write no file."""
    side = path.with_name(path.name + ".next")
    resumed = False
    if new_key_file is not None:
        new = Signer.load(new_key_file, log.origin)
    elif side.exists():
        new, resumed = Signer.load(side, log.origin), True
    else:
        private = Ed25519PrivateKey.generate()
        write_key(side, private.private_bytes_raw())
        new = Signer(log.origin, private)
    if new.verifier == log.signer.verifier:
        raise ValueError("the new signing key is the current one")
    done = latest_of_kind(log.db, KEY_KIND)
    if done is not None and done.get("new_key") == new.verifier.encode():
        # Interrupted after the transition was committed: only the file swap is left.
        seq, old_key = int(done["seq"]), str(done["old_key"])
        log.signer = new
    else:
        old_key = log.signer.verifier.encode()
        seq = log.rotate_key(new, fields)[0]
    if new_key_file is None:
        swap(side, path)
    return KeyRotated(old_key, new.verifier.encode(), seq, resumed, new_key_file or path)
