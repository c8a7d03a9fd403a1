"""`server.*`: the request size and time limits have sane defaults and refuse nonsense in one
line naming the setting (they are enforced in tests/integration/test_bad_input.py)."""

from __future__ import annotations

import pytest

from sovllm.config import ConfigError, load_settings


def test_defaults_bound_every_request() -> None:
    server = load_settings().server
    assert server.max_body_bytes == 4 * 1024 * 1024
    assert server.max_header_bytes == 16 * 1024
    assert 0 < server.header_timeout_s <= 60 and 0 < server.body_timeout_s <= 300


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_BODY_BYTES", "0"),
        ("MAX_BODY_BYTES", "lots"),
        ("MAX_HEADER_BYTES", "100"),
        ("HEADER_TIMEOUT_S", "0"),
        ("BODY_TIMEOUT_S", "-1"),
    ],
)
def test_a_bad_limit_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"SOVLLM_SERVER__{name}", value)
    with pytest.raises(ConfigError, match=rf"'server\.{name.lower()}' \(SOVLLM_SERVER__{name}\)"):
        load_settings()


def test_an_unknown_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVLLM_SERVER__MAX_BODY", "1")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings()
