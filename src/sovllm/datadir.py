"""The data folder is private: what sovllm creates in it is its owner's alone, and an existing
folder or key file others can reach is reported (or refused) at start-up.

The mode comes from the process umask, set before anything is created, not from a chmod
afterwards: a chmod leaves a window in which the file is readable, and SQLite creates its WAL
and shared-memory files itself, with the database file's mode.
"""

from __future__ import annotations

import logging
import os
import stat

from sovllm.config import Settings
from sovllm.governance.audit import key_path, pseudonym_key_path
from sovllm.governance.bootstrap import bootstrap_key_path
from sovllm.governance.privacy.content import master_key_path
from sovllm.governance.privacy.masterkey import next_path
from sovllm.store.db import SQLITE_FILE

PRIVATE_UMASK = 0o077
"""Files 0600, folders 0700."""
_OTHERS = stat.S_IRWXG | stat.S_IRWXO

log = logging.getLogger("sovllm.security")


class LoosePermissions(Exception):
    """`security.strict_permissions` refused a folder or key file that others can reach."""


def private_umask() -> None:
    """Everything this process creates from now on is readable by its owner only."""
    os.umask(PRIVATE_UMASK)


def loose(settings: Settings) -> list[str]:
    """One line per folder or secret that group or others may read or write: its path, its
    mode and the command that fixes it. Paths that do not exist yet are not reported."""
    data = settings.data_dir
    folders = [data, data / "audit"]
    keys = [key_path(settings), master_key_path(settings), pseudonym_key_path(settings)]
    # A rotation's side files are keys too.
    files = [
        *keys,
        *(next_path(k) for k in keys),
        data / "audit" / "pseudonym.retired",
        bootstrap_key_path(data),
    ]
    if settings.database_url is None:  # the SQLite database holds key hashes and content
        files += [data / (SQLITE_FILE + suffix) for suffix in ("", "-wal", "-shm")]
    found = []
    for path, fix in [(p, "chmod 700") for p in folders] + [(p, "chmod 600") for p in files]:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & _OTHERS:
            found.append(
                f"{path} is open to group or others (mode {stat.S_IMODE(mode):04o}): "
                f"run `{fix} {path}`"
            )
    return found


def prepare(settings: Settings) -> None:
    """At start-up: the private umask, the check of an existing data folder, then the folder
    itself (0700). Raises LoosePermissions in strict mode, else logs a warning per path."""
    private_umask()
    found = loose(settings)
    if found and settings.security.strict_permissions:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise LoosePermissions(f"{found[0]}{more}; refused by security.strict_permissions")
    for line in found:
        log.warning("%s", line)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
