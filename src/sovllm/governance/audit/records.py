"""What an audit entry says about a request: the documented, versioned fields (schema v1).

Content is never stored here: prompts and answers appear only as keyed hashes (GDPR Art. 25,
data protection by default), the `user` field only as a pseudonym.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sovllm.engines.base import GenerationOutput, ModelInfo, SamplingParams
from sovllm.governance.access import actor_of
from sovllm.governance.identity import Principal


def request_begin(
    principal: Principal,
    route: str,
    model: ModelInfo,
    sampling: SamplingParams,
    prompt_tokens: int,
    reserved_tokens: int,
    prompt_hash: str,
    user_pseudonym: str | None,
    pii_found: dict[str, int] | str,
    content_policy: str = "none",
    masked: bool = False,
) -> dict[str, Any]:
    """`pii_found`: personal-data findings per kind in the prompt, or why detection failed;
    `masked`: they were masked before the prompt reached the model."""
    params = asdict(sampling)
    params["stop_count"] = len(params.pop("stop"))  # stop strings can carry content
    params["logit_bias_count"] = len(params.pop("logit_bias"))
    return {
        "principal": {**actor_of(principal), "user": user_pseudonym},
        "route": route,
        "model": {"id": model.id, "weights_sha256": model.sha256,
                  "engine_config_sha256": model.engine_config_sha256},
        "sampling": params,
        "tokens": {"prompt": prompt_tokens, "reserved": reserved_tokens},
        "policy": {"quota": "admitted", "pii": pii_found, "masked_before_model": masked},
        "content": {"policy": content_policy, "prompt_hmac": prompt_hash},
    }  # fmt: skip


def request_rejected(
    principal: Principal, route: str, policy: dict[str, Any], reserved_tokens: int | None = None
) -> dict[str, Any]:
    """A request refused after authentication (a quota, the personal-data rule): who, where and
    which rule; no content."""
    fields: dict[str, Any] = {"principal": actor_of(principal), "route": route, "policy": policy}
    if reserved_tokens is not None:
        fields["tokens"] = {"reserved": reserved_tokens}
    return fields


def request_end(
    out: GenerationOutput | None, outcome: str, response_hash: str | None,
    content_policy: str = "none",
) -> dict[str, Any]:  # fmt: skip
    fields: dict[str, Any] = {"outcome": outcome}
    if out is not None:
        fields["tokens"] = {"prompt": out.prompt_tokens, "completion": out.completion_tokens}
        fields["finish_reason"] = out.finish_reason
        if out.error:
            fields["error"] = out.error
        t = out.timings
        if t is not None:
            fields["timings"] = {
                "queue_s": _span(t.arrival, t.scheduled),
                "ttft_s": _span(t.arrival, t.first_token),
                "total_s": _span(t.arrival, t.finished),
            }
    fields["content"] = {"policy": content_policy, "response_hmac": response_hash}
    return fields


def _span(start: float, end: float | None) -> float | None:
    return round(end - start, 6) if end is not None else None
