"""A real `sovllm serve` keeps its data folder private and its first admin key out of its output."""

from __future__ import annotations

import openai

from tests.conftest import Server


def test_the_server_keeps_its_files_private_and_its_key_out_of_its_output(server: Server) -> None:
    # The key works, and after a request made with it the output still does not hold it.
    client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    assert [m.id for m in client.models.list().data]
    output = server.log.read_text()
    assert server.api_key.startswith("sk-sovllm-") and server.api_key not in output
    key_file = server.data_dir / "bootstrap-admin.key"
    assert (
        f"sovllm: created the first admin key (tenant 'admin') in {key_file} (mode 0600); "
        "read it once with: sovllm keys bootstrap --print\n"
    ) in output
    assert "open to group or others" not in output  # a fresh folder: nothing to warn about
    data = server.data_dir
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / "audit").stat().st_mode & 0o777 == 0o700
    for name in ("sovllm.db", "sovllm.db-wal", "sovllm.db-shm", "audit/signing.key",
                 "audit/master.key"):  # fmt: skip
        assert (data / name).stat().st_mode & 0o777 == 0o600, name
