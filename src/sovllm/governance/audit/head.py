"""The last checkpoint this host signed, kept outside the database.

Checkpoints live in the database beside the entries they sign. Whoever can write that database
but does not hold the signing key could otherwise delete every checkpoint, rewrite entries and
their hashes into a self-consistent tree, and wait: the next checkpoint the server signs would
cover the rewritten log, and `audit verify` would find nothing to compare it with. So each host
keeps the newest note it signed in `data_dir/audit/last-checkpoint.<database>` (a public note,
not a secret; one file per database, named by a hash of its URL without the password, so a
data folder used with another database is not taken for tampering): the log signs nothing more
while the database no longer holds that checkpoint, and `audit verify` checks the tree against
it. It protects against a database-only writer; one who can also write the data folder holds
the signing key, and only a copy kept elsewhere (`audit verify --against`) tells. A host
without the file (a new pod, a restore) starts trusting the log as it finds it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

from sovllm.governance.audit.checkpoint import Checkpoint, CheckpointError, parse

FILE_NAME = "last-checkpoint"
log = logging.getLogger("sovllm.audit")


def file_for(folder: Path, database_url: str) -> Path:
    """This host's file for the log in the database at `database_url` (password left out)."""
    digest = hashlib.sha256(database_url.encode()).hexdigest()[:16]
    return folder / f"{FILE_NAME}.{digest}"


class Head:
    def __init__(self, path: Path) -> None:
        self.path = path

    def note(self) -> str | None:
        """The note this host signed last, None where it has none; CheckpointError naming the
        file where it is unreadable or not a checkpoint (never silently trusted afresh)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(
                f"cannot read this host's last checkpoint {self.path}: {exc}"
            ) from None
        try:
            parse(text)
        except CheckpointError as exc:
            raise CheckpointError(
                f"{self.path} is not a signed checkpoint ({exc}): nothing is signed until it is "
                "deleted, which trusts the database as it is now"
            ) from None
        return text

    def checkpoint(self) -> Checkpoint | None:
        note = self.note()
        return None if note is None else parse(note)[0]

    def keep(self, note: str) -> None:
        """Replace the file with `note` unless it already holds a larger tree (another process
        on this host signed after it; two racing can still leave the smaller, which the
        database holds too); atomically and durably, so a reader, after a crash too, sees one
        whole note."""
        size = parse(note)[0].size
        try:
            current = self.checkpoint()
        except CheckpointError:
            current = None  # replaced by a good note
        if current is not None and current.size > size:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f"{self.path.name}.")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(note)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)  # the rename itself survives a power cut
            finally:
                os.close(folder)
        except OSError as exc:
            # The checkpoint is in the database; only this host's own check of it is lost.
            log.warning("could not keep the last checkpoint in %s: %s", self.path, exc)
