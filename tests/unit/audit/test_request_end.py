"""The `request.end` entry's token counts are what usage settles, also with no output."""

from __future__ import annotations

from sovllm.engines.base import GenerationOutput
from sovllm.governance.audit import records


def test_an_end_with_output_counts_its_tokens() -> None:
    out = GenerationOutput("hi", (1,), 12, 3, "stop")
    fields = records.request_end(out, "completed", None, settled=(99, 99))
    assert fields["tokens"] == {"prompt": 12, "completion": 3}  # the output's own counts


def test_a_client_gone_before_any_output_still_counts_its_prompt() -> None:
    # Usage settles the counted prompt of such a request: its end entry says the same, so the
    # sum of usage equals the sum of the log's token counts (the soak and kill loop check it).
    fields = records.request_end(None, "client_disconnected", None, settled=(40, 0))
    assert fields["tokens"] == {"prompt": 40, "completion": 0}
    assert "tokens" not in records.request_end(None, "client_disconnected", None)
