"""Content kept under a tenant's policy, encrypted per data subject, erasable by crypto-shredding.

Policies: `none` (the default, GDPR Art. 25: nothing kept but keyed hashes in the audit log),
`redacted` (personal data masked, then kept), `full` (kept as is). Whatever is kept is sealed
with AES-256-GCM under a key of its own data subject; subject keys are stored wrapped by a
master key. Erasing a subject destroys its key: its content becomes unreadable while the audit
log, which holds only hashes, keeps verifying.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sovllm.config import Settings
from sovllm.governance.privacy import pii
from sovllm.governance.privacy.masterkey import (
    MasterKeyError,
    MasterKeys,
    key_id,
    lock_for_new_key,
    unwrap,
    wrap,
)
from sovllm.store.db import Database
from sovllm.store.schema import StoredContent, SubjectKey, Tenant

POLICIES = ("none", "redacted", "full")
_CACHE_S = 5.0


def load_or_create_master(path: Path) -> bytes:
    """The key that wraps subject keys, made at first start, readable by the owner only."""
    if path.exists():
        return base64.b64decode(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = AESGCM.generate_key(bit_length=256)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(key).decode() + "\n")
    return key


@dataclass(frozen=True)
class Content:
    request_id: str
    part: str
    policy: str
    text: str | None
    """None once the subject was erased."""


class NotKept(Exception):
    """Content a policy would keep, not kept because it could not be masked."""


@dataclass(frozen=True)
class Erased:
    content_records: int
    """Stored parts made unreadable."""
    old_key_bytes: str
    """Where the destroyed key's bytes may still be found, if anywhere."""


RETIRED_PSEUDONYM = "pseudonym-retired:"
"""subject_keys rows holding retired pseudonym keys (no data subject's id starts so)."""


class ContentVault:
    def __init__(self, db: Database, master_key: bytes, key_file: Path | None = None) -> None:
        """`key_file`: the master key file sovllm manages, followed through rotations
        (privacy/masterkey.py); None for a given key that is only read."""
        self.db = db
        self.masters = MasterKeys(master_key, key_file)
        self._policies: dict[int, tuple[float, str]] = {}

    # -- policy ------------------------------------------------------------------------

    def cached_policy(self, tenant_id: int) -> str | None:
        """The policy if known from the last few seconds, without touching the database."""
        cached = self._policies.get(tenant_id)
        if cached is not None and time.monotonic() - cached[0] < _CACHE_S:
            return cached[1]
        return None

    def policy_of(self, tenant_id: int) -> str:
        """The tenant's content policy; cached a few seconds (a change applies within 5 s)."""
        now = time.monotonic()
        cached = self._policies.get(tenant_id)
        if cached is not None and now - cached[0] < _CACHE_S:
            return cached[1]
        with self.db.read() as s:
            policy = s.scalar(select(Tenant.content_policy).where(Tenant.id == tenant_id))
        value = policy or "none"
        self._policies[tenant_id] = (now, value)
        return value

    # -- keys --------------------------------------------------------------------------

    def _subject_key(self, subject: str, create: bool) -> bytes | None:
        try:
            return self._subject_key_once(subject, create)
        except IntegrityError:  # a concurrent first request of the subject made its key first
            return self._subject_key_once(subject, create)

    def _subject_key_once(self, subject: str, create: bool) -> bytes | None:
        with self.db.transaction() as s:
            row = s.get(SubjectKey, subject)
            if row is not None and row.wrapped_key is not None:
                return unwrap(self.masters.get(row.master_id), subject, row.wrapped_key)
            if not create:
                return None
            # New subject, or one erased before: new content gets a new key, under the master
            # current once no re-wrap can run (masterkey.py).
            lock_for_new_key(self.db, s)
            master_id, master = self.masters.current()
            self._check_not_superseded(s, master_id)
            key = AESGCM.generate_key(bit_length=256)
            wrapped = wrap(master, subject, key)
            if row is None:
                s.add(
                    SubjectKey(
                        subject=subject,
                        created_at=time.time(),
                        wrapped_key=wrapped,
                        master_id=master_id,
                    )
                )
            else:
                row.wrapped_key, row.erased_at, row.master_id = wrapped, None, master_id
            return key

    def _check_not_superseded(self, s: Session, master_id: str) -> None:
        """Refuse to wrap under a master a rotation has left behind: live subject keys under a
        master this process cannot get mean a rotation (e.g. with a mounted key, servers left
        running) re-wrapped them under a newer one; a key wrapped under ours would be lost when
        the old key goes."""
        other = s.scalar(
            select(SubjectKey.master_id)
            .where(
                SubjectKey.wrapped_key.is_not(None),
                SubjectKey.master_id.is_not(None),
                SubjectKey.master_id != master_id,
            )
            .limit(1)
        )
        if other is None:
            return
        try:
            self.masters.get(other)
        except MasterKeyError:
            raise MasterKeyError(
                f"refusing to wrap a new subject key under master key {master_id}: subject keys "
                f"are under master key {other}, which this process does not have (the master "
                "key was rotated while it ran): restart it with the new master key"
            ) from None

    # -- content -----------------------------------------------------------------------

    def store(self, request_id: str, subject: str, policy: str, part: str, text: str) -> bool:
        """Seal and keep one part (prompt or response) under `policy`; False under `none`.

        Fails closed: under `redacted`, if masking fails nothing of this part is stored and
        NotKept says why (without the text).
        """
        if policy == "none":
            return False
        if policy == "redacted":
            try:
                text = pii.mask(text)[0]
            except Exception as exc:
                why = pii.describe_failure(exc)
                raise NotKept(f"the {part} was not kept: masking it failed ({why})") from None
        nonce, ciphertext = self.seal(subject, f"{request_id}|{part}", text)
        with self.db.transaction() as s:
            s.add(
                StoredContent(
                    request_id=request_id,
                    part=part,
                    subject=subject,
                    policy=policy,
                    nonce=nonce,
                    ciphertext=ciphertext,
                    created_at=time.time(),
                )
            )
        return True

    def seal(self, subject: str, label: str, text: str) -> tuple[str, str]:
        """`text` sealed under its subject's key (made if new) and bound to `label`: the nonce
        (hex) and the ciphertext (base64). Erasing the subject makes it unreadable."""
        key = self._subject_key(subject, create=True)
        assert key is not None
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(key).encrypt(nonce, text.encode(), label.encode())
        return nonce.hex(), base64.b64encode(sealed).decode()

    def unseal(self, subject: str, label: str, nonce: str, ciphertext: str) -> str | None:
        """What `seal` sealed; None once the subject was erased."""
        key = self._subject_key(subject, create=False)
        if key is None:
            return None
        try:
            opened = AESGCM(key).decrypt(
                bytes.fromhex(nonce), base64.b64decode(ciphertext), label.encode()
            )
        except InvalidTag:  # sealed under a key since destroyed
            return None
        return opened.decode()

    def read(self, request_id: str) -> list[Content]:
        with self.db.read() as s:
            rows = list(
                s.scalars(
                    select(StoredContent)
                    .where(StoredContent.request_id == request_id)
                    .order_by(StoredContent.id)
                )
            )
        out = []
        for row in rows:
            label = f"{row.request_id}|{row.part}"
            text = self.unseal(row.subject, label, row.nonce, row.ciphertext)
            out.append(Content(row.request_id, row.part, row.policy, text))
        return out

    def erase(self, subject: str) -> Erased:
        """Destroy the subject's key: its stored parts become unreadable.

        Setting the column to NULL is not enough on its own: SQLite zeroes the old cell only
        with secure_delete (set on every connection, store/db.py), and the WAL keeps the page
        as it was until a checkpoint, so erasure ends with one.
        """
        now = time.time()
        with self.db.transaction() as s:
            count = s.scalar(
                select(func.count())
                .select_from(StoredContent)
                .where(StoredContent.subject == subject)
            )
            s.execute(
                update(SubjectKey)
                .where(SubjectKey.subject == subject)
                .values(wrapped_key=None, erased_at=now)
            )
        if self.db.backend != "sqlite":
            where = (
                "PostgreSQL keeps the old row version until VACUUM, and its WAL and backups "
                "until they are recycled (docs/audit.md)"
            )
        elif self.db.checkpoint_wal():
            where = "nowhere: zeroed in the SQLite file (secure_delete), WAL checkpointed"
        else:
            where = "in the SQLite WAL until its next checkpoint: a reader held it"
        return Erased(int(count or 0), where)

    def purge(self, older_than_days: int, now: float | None = None) -> int:
        """Delete content past its retention (the audit log keeps only its hash), and the
        retired pseudonym keys retired before it: no content of their epochs is left to erase,
        and without them earlier epochs are unlinkable."""
        now = time.time() if now is None else now
        cutoff = now - older_than_days * 86400
        with self.db.transaction() as s:
            result = s.execute(delete(StoredContent).where(StoredContent.created_at < cutoff))
            s.execute(
                update(SubjectKey)
                .where(
                    SubjectKey.subject.startswith(RETIRED_PSEUDONYM, autoescape=True),
                    SubjectKey.created_at < cutoff,
                    SubjectKey.wrapped_key.is_not(None),
                )
                .values(wrapped_key=None, erased_at=now)
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # -- retired pseudonym keys ---------------------------------------------------------

    def keep_retired_pseudonym_key(self, key: bytes) -> None:
        """Keep a retired pseudonym key in the database, wrapped under the master key like a
        subject key (a row named by its id; a master rotation re-wraps it): every gateway's
        erasure then reaches that epoch (privacy/pseudonyms.py). Once per key."""
        subject = RETIRED_PSEUDONYM + key_id(key)
        with self.db.transaction() as s:
            if s.get(SubjectKey, subject) is not None:
                return
            lock_for_new_key(self.db, s)
            master_id, master = self.masters.current()
            self._check_not_superseded(s, master_id)
            s.add(
                SubjectKey(
                    subject=subject,
                    created_at=time.time(),
                    master_id=master_id,
                    wrapped_key=wrap(master, subject, key),
                )
            )

    def retired_pseudonym_keys(self) -> tuple[list[bytes], set[str]]:
        """The retired pseudonym keys kept in the database, and the ids of those purged (their
        epochs' content is gone: nothing left to erase)."""
        with self.db.read() as s:
            rows = s.execute(
                select(SubjectKey.subject, SubjectKey.wrapped_key, SubjectKey.master_id).where(
                    SubjectKey.subject.startswith(RETIRED_PSEUDONYM, autoescape=True)
                )
            ).all()
        keys = [unwrap(self.masters.get(m), sub, w) for sub, w, m in rows if w is not None]
        purged = {str(sub).removeprefix(RETIRED_PSEUDONYM) for sub, w, _ in rows if w is None}
        return keys, purged


def set_policy(db: Database, tenant: str, policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"content policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    with db.transaction() as s:
        found = s.execute(update(Tenant).where(Tenant.name == tenant).values(content_policy=policy))
        if not found.rowcount:  # type: ignore[attr-defined]
            raise LookupError(f"tenant {tenant!r} does not exist")


def set_masking(db: Database, tenant: str, on: bool) -> None:
    with db.transaction() as s:
        found = s.execute(update(Tenant).where(Tenant.name == tenant).values(mask_prompts=on))
        if not found.rowcount:  # type: ignore[attr-defined]
            raise LookupError(f"tenant {tenant!r} does not exist")


def master_key_path(settings: Settings) -> Path:
    """Where the key that wraps every subject key lives: `privacy.master_key_file`, else
    data_dir/audit/master.key (made at first start)."""
    return settings.privacy.master_key_file or settings.data_dir / "audit" / "master.key"


def open_vault(settings: Settings, db: Database) -> ContentVault:
    if settings.privacy.master_key_file is not None:  # given: only read, never created
        key = base64.b64decode(settings.privacy.master_key_file.read_text().strip())
        return ContentVault(db, key)
    path = master_key_path(settings)
    return ContentVault(db, load_or_create_master(path), path)
