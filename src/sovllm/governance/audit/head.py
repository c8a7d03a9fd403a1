"""The last checkpoint this host signed, kept outside the database.

Checkpoints live in the database beside the entries they sign. Whoever can write that database
but does not hold the signing key could otherwise delete every checkpoint, rewrite entries and
their hashes into a self-consistent tree, and wait: the next checkpoint the server signs would
cover the rewritten log, and `audit verify` would find nothing to compare it with. So each host
keeps the newest note it signed in `data_dir/audit/last-checkpoint` (a public note, not a
secret): the log signs nothing more while the database no longer holds that checkpoint, and
`audit verify` checks the tree against it. It protects against a database-only writer; one who
can also write the data folder holds the signing key, and only a copy kept elsewhere (`audit
verify --against`) tells. A host without the file (a new pod, a restore) starts trusting the
log as it finds it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sovllm.governance.audit.checkpoint import Checkpoint, CheckpointError, parse

FILE_NAME = "last-checkpoint"
log = logging.getLogger("sovllm.audit")


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
            raise CheckpointError(f"{self.path} is not a signed checkpoint: {exc}") from None
        return text

    def checkpoint(self) -> Checkpoint | None:
        note = self.note()
        return None if note is None else parse(note)[0]

    def keep(self, note: str) -> None:
        """Replace the file with `note` unless it already holds a larger tree (another process
        on this host signed after it); atomically, so a reader sees one whole note."""
        size = parse(note)[0].size
        try:
            current = self.checkpoint()
        except CheckpointError:
            current = None  # replaced by a good note
        if current is not None and current.size > size:
            return
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(note, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            # The checkpoint is in the database; only this host's own check of it is lost.
            log.warning("could not keep the last checkpoint in %s: %s", self.path, exc)
