"""Secrets at rest: a private data folder, the bootstrap key in a file, keys given from outside,
no database password in a message."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from sovllm import datadir
from sovllm.cli.main import app
from sovllm.config import ConfigError, Settings, load_settings
from sovllm.governance import bootstrap, tenants
from sovllm.governance import identity as idn
from sovllm.governance.audit import open_audit
from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.privacy.content import ContentVault, open_vault
from sovllm.serve.gateway import ServeError, open_database
from sovllm.store.db import DatabaseConfigError, database_url, hide_password


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture(autouse=True)
def shell_umask() -> Iterator[None]:
    """Start from the umask of a usual shell (0022: files 0644), and give the process its own
    back afterwards: the umask is per process and the code under test changes it."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv(bootstrap.BOOTSTRAP_ENV, raising=False)
    return load_settings(None, data_dir=tmp_path / "data")


def start(settings: Settings) -> Path | None:
    """The server's start-up up to the first key, as run_server does it."""
    datadir.prepare(settings)
    db = open_database(settings)
    key_file = bootstrap.create_first_key(db, settings.data_dir)
    if key_file is not None:
        print(bootstrap.announcement(key_file), flush=True)
    open_audit(settings, db).close()
    open_vault(settings, db)
    return key_file


# -- private by default -------------------------------------------------------------------------


def test_a_fresh_data_folder_and_everything_in_it_are_the_owners_alone(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        start(settings)
    assert not caplog.records  # a fresh folder has nothing to warn about
    data = settings.data_dir
    assert mode(data) == 0o700 and mode(data / "audit") == 0o700
    # SQLite made the WAL and shared-memory files itself, with the database file's mode.
    for name in (
        "sovllm.db",
        "sovllm.db-wal",
        "sovllm.db-shm",
        bootstrap.BOOTSTRAP_FILE,
        "audit/signing.key",
        "audit/master.key",
    ):
        assert mode(data / name) == 0o600, name


def test_every_cli_command_creates_private_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["db", "upgrade"], env={"SOVLLM_DATA_DIR": str(data)})
    assert result.exit_code == 0, result.output
    assert mode(data) == 0o700 and mode(data / "sovllm.db") == 0o600


def _loosen(settings: Settings) -> tuple[Path, Path]:
    """A data folder left 0755 with a database 0644, as an older version made them."""
    data = settings.data_dir
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    (data / "sovllm.db").touch()
    os.chmod(data / "sovllm.db", 0o644)
    return data, data / "sovllm.db"


def test_an_existing_loose_folder_is_a_warning_naming_the_path_and_the_fix(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    data, db_file = _loosen(settings)
    with caplog.at_level(logging.WARNING, "sovllm.security"):
        datadir.prepare(settings)
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        f"{data} is open to group or others (mode 0755): run `chmod 700 {data}`",
        f"{db_file} is open to group or others (mode 0644): run `chmod 600 {db_file}`",
    ]
    assert mode(data) == 0o755  # reported, not changed behind the operator's back
    os.chmod(data, 0o700)
    os.chmod(db_file, 0o600)
    caplog.clear()
    datadir.prepare(settings)
    assert not caplog.records


def test_a_loose_key_file_is_reported(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    start(settings)
    key = settings.data_dir / "audit" / "signing.key"
    os.chmod(key, 0o640)
    with caplog.at_level(logging.WARNING, "sovllm.security"):
        datadir.prepare(settings)
    assert [r.getMessage() for r in caplog.records] == [
        f"{key} is open to group or others (mode 0640): run `chmod 600 {key}`"
    ]


def test_strict_permissions_refuses_to_start_with_one_line_and_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o750)
    env = {
        **os.environ,
        "SOVLLM_DATA_DIR": str(data),
        "SOVLLM_SECURITY__STRICT_PERMISSIONS": "true",
    }
    out = subprocess.run(
        [sys.executable, "-m", "sovllm", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr == (
        f"sovllm: {data} is open to group or others (mode 0750): run `chmod 700 {data}`; "
        "refused by security.strict_permissions\n"
    )
    assert not (data / "sovllm.db").exists()  # refused before anything was created


# -- the bootstrap key ---------------------------------------------------------------------------


def test_the_first_key_is_in_a_private_file_and_in_no_output(
    settings: Settings, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        key_file = start(settings)
    assert key_file == settings.data_dir / "bootstrap-admin.key"
    key = key_file.read_text().strip()
    assert key.startswith("sk-sovllm-") and mode(key_file) == 0o600
    printed = capsys.readouterr()
    assert printed.out == (
        f"sovllm: created the first admin key (tenant 'admin') in {key_file} (mode 0600); "
        "read it once with: sovllm keys bootstrap --print\n"
    )
    assert key not in printed.out + printed.err + caplog.text
    db = open_database(settings)
    assert idn.authenticate(db, key).role is idn.Role.ADMIN
    # A second start finds keys: no new one, and no file.
    key_file.unlink()
    assert start(settings) is None and not key_file.exists()


def test_keys_bootstrap_print_shows_the_key_once_then_deletes_it(settings: Settings) -> None:
    key_file = start(settings)
    assert key_file is not None
    key = key_file.read_text().strip()
    env = {"SOVLLM_DATA_DIR": str(settings.data_dir)}
    runner = CliRunner()
    status = runner.invoke(app, ["keys", "bootstrap"], env=env)
    assert status.exit_code == 0 and "is waiting to be read" in status.output
    assert key not in status.output
    shown = runner.invoke(app, ["keys", "bootstrap", "--print"], env=env)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.strip().splitlines()[-1] == key
    assert not key_file.exists()
    again = runner.invoke(app, ["keys", "bootstrap", "--print"], env=env)
    assert again.exit_code == 1
    assert again.stderr.startswith(f"sovllm: no bootstrap admin key at {key_file}: ")
    assert "sk-sovllm-" not in again.output


def test_sovllm_bootstrap_key_file_names_where_the_key_goes(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "secret" / "admin.key"
    monkeypatch.setenv(bootstrap.BOOTSTRAP_ENV, str(target))
    assert start(settings) == target
    assert mode(target) == 0o600 and not (settings.data_dir / "bootstrap-admin.key").exists()
    key = target.read_text().strip()
    shown = CliRunner().invoke(
        app, ["keys", "bootstrap", "--print"], env={"SOVLLM_DATA_DIR": str(settings.data_dir)}
    )
    assert shown.stdout.strip().splitlines()[-1] == key and not target.exists()


def test_a_key_file_that_cannot_be_written_creates_no_key(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(bootstrap.BOOTSTRAP_ENV, str(blocker / "admin.key"))
    datadir.prepare(settings)
    db = open_database(settings)
    with pytest.raises(bootstrap.BootstrapKeyError, match=f"cannot write .* to {blocker}"):
        bootstrap.create_first_key(db, settings.data_dir)
    assert tenants.count_keys(db) == 0  # else nobody could ever read it: the next start tries again
    monkeypatch.setenv(bootstrap.BOOTSTRAP_ENV, str(tmp_path / "admin.key"))
    assert bootstrap.create_first_key(db, settings.data_dir) == tmp_path / "admin.key"
    assert tenants.count_keys(db) == 1


# -- keys from outside the data folder ----------------------------------------------------------


def _secret(path: Path, raw: bytes) -> Path:
    """A read-only key in a read-only folder, as a mounted secret is."""
    path.parent.mkdir()
    path.write_text(base64.b64encode(raw).decode() + "\n")
    os.chmod(path, 0o400)
    os.chmod(path.parent, 0o500)
    return path


def test_given_key_files_are_read_and_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed, master = os.urandom(32), os.urandom(32)
    signing = _secret(tmp_path / "signing" / "key", seed)
    wrapping = _secret(tmp_path / "master" / "key", master)
    monkeypatch.setenv("SOVLLM_AUDIT__KEY_FILE", str(signing))
    monkeypatch.setenv("SOVLLM_PRIVACY__MASTER_KEY_FILE", str(wrapping))
    settings = load_settings(None, data_dir=tmp_path / "data")
    datadir.prepare(settings)
    db = open_database(settings)
    audit = open_audit(settings, db)
    given = Signer("sovllm", Ed25519PrivateKey.from_private_bytes(seed))
    assert audit.signer.verifier == given.verifier
    audit.close()
    assert open_vault(settings, db).store("r1", "user:a", "full", "prompt", "kept")
    (kept,) = ContentVault(db, master).read("r1")  # sealed under the given master key
    assert kept.text == "kept"
    # Nothing made in their place in the data folder.
    assert not (settings.data_dir / "audit" / "signing.key").exists()
    assert not (settings.data_dir / "audit" / "master.key").exists()
    assert signing.read_text().strip() == base64.b64encode(seed).decode()


@pytest.mark.parametrize(
    ("variable", "setting"),
    [
        ("SOVLLM_AUDIT__KEY_FILE", "audit.key_file"),
        ("SOVLLM_PRIVACY__MASTER_KEY_FILE", "privacy.master_key_file"),
    ],
)
def test_a_missing_or_bad_given_key_file_is_a_clear_error_not_a_new_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, setting: str
) -> None:
    missing = tmp_path / "nope.key"
    monkeypatch.setenv(variable, str(missing))
    with pytest.raises(ConfigError) as err:
        load_settings(None, data_dir=tmp_path / "data")
    assert str(err.value).startswith(
        f"invalid setting '{setting}' ({variable}): {missing} does not exist; sovllm does not "
        f"create it: make one with `openssl rand -base64 32 > {missing}`"
    )
    assert not missing.exists()
    short = tmp_path / "short.key"
    short.write_text(base64.b64encode(b"x" * 16).decode())
    monkeypatch.setenv(variable, str(short))
    with pytest.raises(ConfigError, match="does not hold 32 bytes in base64"):
        load_settings(None, data_dir=tmp_path / "data")


# -- database passwords ---------------------------------------------------------------------------


def test_database_passwords_stay_out_of_messages(tmp_path: Path) -> None:
    url = "postgresql+psycopg://sovllm:Tr0ub4dor@db.internal:notaport/sovllm"
    with pytest.raises(DatabaseConfigError) as err:
        database_url(url, tmp_path)
    assert "Tr0ub4dor" not in str(err.value)
    assert "postgresql+psycopg://sovllm:***@db.internal:notaport/sovllm" in str(err.value)
    # A driver message that quotes the password is cleaned too.
    good = "postgresql+psycopg://sovllm:Tr0ub4dor@127.0.0.1:1/sovllm"
    assert hide_password('password "Tr0ub4dor" rejected', good) == 'password "***" rejected'
    with pytest.raises(ServeError) as serve:
        open_database(load_settings(None, data_dir=tmp_path, database_url=url))
    assert "Tr0ub4dor" not in str(serve.value) and "***" in str(serve.value)
