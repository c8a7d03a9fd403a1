"""What a reviewer reads of a queued answer: only what the tenant's content policy lets the
service keep (governance/privacy/content.py), as it stood when the request ran.

- `full`: the prompt and the answer as kept;
- `redacted`: both with personal data masked (a held answer is masked here, failing closed:
  an answer that cannot be masked is not shown);
- `none`: no text at all; the reviewer decides from the metadata (model, lengths, finish
  reason), and the view says so.

The held answer's sealed copy (review.py) exists to deliver it to its client; it is shown to a
reviewer only through this policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from sovllm.governance.privacy import pii
from sovllm.governance.privacy.content import ContentVault
from sovllm.governance.review import HELD_LABEL, ReviewInfo
from sovllm.store.db import Database
from sovllm.store.schema import Review


@dataclass(frozen=True)
class View:
    shown: str
    """full, redacted or none: the content policy the text follows."""
    prompt: str | None
    answer: str | None
    note: str | None
    """Why some text is missing, when it is."""

    def as_dict(self) -> dict[str, str | None]:
        return dict(self.__dict__)


NONE_NOTE = (
    "The tenant's content policy is none: the service keeps no content, so no text is shown. "
    "Decide from the metadata, or give the tenant the policy redacted or full."
)


def content_view(db: Database, vault: ContentVault, info: ReviewInfo) -> View:
    policy = info.content_policy
    if policy not in ("full", "redacted"):
        return View("none", None, None, NONE_NOTE)
    kept = {c.part: c.text for c in vault.read(info.request_id)}
    prompt, answer = kept.get("prompt"), kept.get("response")
    notes = []
    if answer is None and info.held:  # kept in the background: it may not be written yet
        answer = _held_answer(db, vault, info.request_id, policy)
    if prompt is None:
        notes.append("the prompt is not kept (erased, purged, or it could not be masked)")
    if answer is None:
        notes.append("the answer is not kept (erased, purged, or it could not be masked)")
    return View(policy, prompt, answer, "; ".join(notes) or None)


def _held_answer(db: Database, vault: ContentVault, request_id: str, policy: str) -> str | None:
    with db.read() as s:
        row = s.execute(
            select(Review.subject, Review.nonce, Review.sealed).where(
                Review.request_id == request_id
            )
        ).first()
    if row is None or row[1] is None or row[2] is None:
        return None
    text = vault.unseal(row[0], f"{request_id}|{HELD_LABEL}", row[1], row[2])
    if text is None or policy == "full":
        return text
    try:
        return pii.mask(text)[0]
    except Exception:  # fail closed: an answer that cannot be masked is not shown
        return None
