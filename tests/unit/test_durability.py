"""`audit.durability`: what SQLite syncs at each commit, on every connection the service opens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from sovllm.config import ConfigError, load_settings
from sovllm.store.db import Database


def synchronous(db: Database) -> tuple[int, int]:
    """PRAGMA synchronous on the write engine and the read engine (1 NORMAL, 2 FULL)."""
    with db.transaction() as w, db.read() as r:
        return (
            int(w.execute(text("PRAGMA synchronous")).scalar_one()),
            int(r.execute(text("PRAGMA synchronous")).scalar_one()),
        )


def test_power_loss_syncs_the_wal_at_every_commit(tmp_path: Path) -> None:
    assert synchronous(Database(f"sqlite:///{tmp_path / 'a.db'}")) == (1, 1)
    assert synchronous(Database(f"sqlite:///{tmp_path / 'b.db'}", "power_loss")) == (2, 2)


def test_the_setting_is_validated_and_reaches_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"audit\.durability"):
        load_settings(data_dir=tmp_path, audit={"durability": "sometimes"})
    # The CLI opens the database as the server does (cli.common.open_db), with the setting.
    probe = (
        "from sovllm.cli.common import open_db; from sqlalchemy import text; "
        "s = open_db(None).transaction().__enter__(); "
        "print(s.execute(text('PRAGMA synchronous')).scalar_one())"
    )
    env = {**os.environ, "SOVLLM_DATA_DIR": str(tmp_path), "SOVLLM_AUDIT__DURABILITY": "power_loss"}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "2", out.stderr
