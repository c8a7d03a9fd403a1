"""Human review on a real database (SQLite and PostgreSQL): the policy, the queue, a held
answer sealed until approved and handed over once, overrides, who may see what, what a reviewer
reads under each content policy, the records each decision writes, and the 0009 migration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, select

from sovllm.api.stored_completions import review_status
from sovllm.governance import identity as idn
from sovllm.governance import review, tenancy, tenants
from sovllm.governance.audit import records
from sovllm.governance.privacy.content import ContentVault, load_or_create_master
from sovllm.governance.review_view import content_view
from sovllm.store import migrate
from sovllm.store.db import Database
from sovllm.store.schema import Review

ACTOR = {"cli": "tester", "host": "here"}
ANSWER = "Call Jane Doe at jane.doe@example.org about the results."


class Written(list[tuple[str, dict[str, Any], str]]):
    def __call__(self, kind: str, fields: dict[str, Any], request_id: str) -> None:
        self.append((kind, fields, request_id))


def _vault(db: Database, tmp_path: Path) -> ContentVault:
    return ContentVault(db, load_or_create_master(tmp_path / "master.key"))


def _queue(
    db: Database,
    vault: ContentVault,
    request_id: str,
    tenant: str = "clinic",
    mode: str = "hold",
    content_policy: str = "none",
    key_id: str = "key_a",
) -> None:
    names = {t.name: t.id for t in tenants.list_tenants(db)}
    if tenant not in names:
        names[tenant] = tenants.create_tenant(db, tenant).id
    item = review.Queued(
        request_id=request_id,
        tenant_id=names[tenant],
        key_id=key_id,
        mode=mode,
        route="/v1/chat/completions",
        model="m",
        weights_sha256="ab" * 32,
        created=1_700_000_000,
        finish_reason="stop",
        prompt_tokens=12,
        completion_tokens=9,
        content_policy=content_policy,
        subject="subject-1",
    )
    review.queue(db, vault, item, ANSWER if mode == "hold" else None)


@pytest.mark.parametrize(
    ("text", "shown"),
    [("none", "none"), ("hold", "hold"), ("sample:10", "sample:10"), ("sample:2.5%", "sample:2.5")],
)
def test_policies_parse(text: str, shown: str) -> None:
    assert str(review.parse_policy(text)) == shown


@pytest.mark.parametrize("text", ["", "always", "sample:0", "sample:101", "sample:x", "sample:"])
def test_a_bad_policy_is_named(text: str) -> None:
    with pytest.raises(review.PolicyError, match=f"got {text!r}"):
        review.parse_policy(text)


def test_sampling_draws_its_share() -> None:
    policy = review.parse_policy("sample:25")
    assert policy.picks(0.0) and policy.picks(0.2499) and not policy.picks(0.25)
    assert not review.parse_policy("hold").picks(0.0)


def test_a_held_answer_is_sealed_then_handed_over_once(db: Database, tmp_path: Path) -> None:
    vault = _vault(db, tmp_path)
    _queue(db, vault, "chatcmpl-1")
    with db.read() as s:
        row = s.scalars(select(Review)).one()
        assert row.sealed is not None and ANSWER not in row.sealed  # encrypted at rest
    # Pending: nothing is delivered, to its own key or any other.
    pending = review.for_owner(db, vault, "chatcmpl-1", "key_a")
    assert pending.text is None and pending.info.status == "pending" and pending.info.held
    with pytest.raises(review.ReviewNotFound):
        review.for_owner(db, vault, "chatcmpl-1", "key_b")
    written = Written()
    approved = review.decide(db, written, ACTOR, "chatcmpl-1", "approve")
    assert approved.status == "approved" and approved.reviewer == ACTOR
    assert [(k, r) for k, _, r in written] == [(records.REVIEW_DECIDED, "chatcmpl-1")]
    assert written[0][1]["decision"] == "approve" and written[0][1]["from"] == "pending"
    first = review.for_owner(db, vault, "chatcmpl-1", "key_a")
    assert first.text == ANSWER and first.first and first.info.delivered_at is not None
    again = review.for_owner(db, vault, "chatcmpl-1", "key_a")
    assert again.text is None and not again.first and not again.info.held
    with db.read() as s:
        assert s.scalars(select(Review)).one().sealed is None  # deleted once delivered


def test_an_override_deletes_the_held_answer_and_cannot_be_undone(
    db: Database, tmp_path: Path
) -> None:
    vault = _vault(db, tmp_path)
    _queue(db, vault, "chatcmpl-2")
    with pytest.raises(review.PolicyError, match="needs a note"):
        review.decide(db, Written(), ACTOR, "chatcmpl-2", "override", "  ")
    written = Written()
    done = review.decide(db, written, ACTOR, "chatcmpl-2", "override", "Wrong dosage.")
    assert done.status == "overridden" and done.note == "Wrong dosage." and not done.held
    assert written[0][1]["note"] == "Wrong dosage."
    seen = review.for_owner(db, vault, "chatcmpl-2", "key_a")
    assert seen.text is None and seen.info.status == "overridden"
    with pytest.raises(review.ReviewConflict, match="already overridden"):
        review.decide(db, Written(), ACTOR, "chatcmpl-2", "approve")
    refused = Written()
    with pytest.raises(review.PolicyError, match="approve or override"):
        review.decide(db, refused, ACTOR, "chatcmpl-2", "delete")
    assert refused == []  # a refused decision writes nothing


def test_an_approved_sample_can_still_be_overridden(db: Database, tmp_path: Path) -> None:
    vault = _vault(db, tmp_path)
    _queue(db, vault, "chatcmpl-3", mode="sample")
    with db.read() as s:
        assert s.scalars(select(Review)).one().sealed is None  # delivered: nothing to hold
    review.decide(db, Written(), ACTOR, "chatcmpl-3", "approve")
    done = review.decide(db, Written(), ACTOR, "chatcmpl-3", "override", "Outdated guideline.")
    assert done.status == "overridden"


def test_a_reviewer_sees_only_its_own_tenant(db: Database, tmp_path: Path) -> None:
    vault = _vault(db, tmp_path)
    _queue(db, vault, "chatcmpl-a", tenant="clinic")
    _queue(db, vault, "chatcmpl-b", tenant="school")
    school = next(t.id for t in tenants.list_tenants(db) if t.name == "school")
    assert [r.request_id for r in review.list_reviews(db, school)] == ["chatcmpl-b"]
    assert len(review.list_reviews(db, None)) == 2
    assert [r.tenant for r in review.list_reviews(db, None, tenant="clinic")] == ["clinic"]
    with pytest.raises(review.ReviewNotFound):
        review.get_review(db, "chatcmpl-a", school)
    with pytest.raises(review.ReviewNotFound):
        review.decide(db, Written(), ACTOR, "chatcmpl-a", "approve", scope=school)
    review.decide(db, Written(), ACTOR, "chatcmpl-a", "approve")
    assert review.list_reviews(db, None, "approved")[0].request_id == "chatcmpl-a"
    with pytest.raises(review.PolicyError, match="status must be one of"):
        review.list_reviews(db, None, "done")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("none", None),
        ("redacted", "Call Jane Doe at [EMAIL] about the results."),
        ("full", ANSWER),
    ],
)
def test_a_reviewer_reads_what_the_content_policy_keeps(
    db: Database, tmp_path: Path, policy: str, expected: str | None
) -> None:
    vault = _vault(db, tmp_path)
    _queue(db, vault, "chatcmpl-v", content_policy=policy)
    if policy != "none":
        vault.store("chatcmpl-v", "subject-1", policy, "prompt", "What about Jane Doe?")
    view = content_view(db, vault, review.get_review(db, "chatcmpl-v", None))
    assert view.shown == policy and view.answer == expected
    if policy == "none":
        assert (
            view.prompt is None and view.note is not None and "content policy is none" in view.note
        )


def test_erasing_the_subject_shreds_a_held_answer(db: Database, tmp_path: Path) -> None:
    vault = _vault(db, tmp_path)
    _queue(db, vault, "chatcmpl-e")
    vault.erase("subject-1")
    review.decide(db, Written(), ACTOR, "chatcmpl-e", "approve")
    for _ in range(2):  # the first fetch and any later one
        delivery = review.for_owner(db, vault, "chatcmpl-e", "key_a")
        assert delivery.text is None and not delivery.first
        # Never said to be delivered: nothing was.
        assert delivery.info.delivered_at is None and not delivery.info.held
        assert "erased at its data subject's request" in review_status(delivery)["message"]


def test_the_tenant_policy_is_stored_recorded_and_authenticated(db: Database) -> None:
    written: list[tuple[str, dict[str, Any]]] = []

    def write(kind: str, fields: dict[str, Any]) -> None:
        written.append((kind, fields))

    new = tenancy.NewTenant("ward", review_policy="sample:5%")
    assert tenancy.create_tenant(db, write, ACTOR, new).review_policy == "sample:5"
    assert written[-1][1]["target"]["review_policy"] == "sample:5"
    change = tenancy.TenantChange("ward", review_policy="hold")
    assert tenancy.update_tenant(db, write, ACTOR, change).review_policy == "hold"
    assert written[-1][1]["target"] == {"name": "ward", "review_policy": "hold"}
    before = len(written)
    with pytest.raises(idn.IdentityError, match="review policy must be"):
        tenancy.update_tenant(db, write, ACTOR, tenancy.TenantChange("ward", review_policy="x"))
    assert len(written) == before  # refused before its entry
    raw, _ = tenants.create_key(db, "ward", idn.Role.REVIEWER)
    principal = idn.authenticate(db, raw)
    assert principal.role == idn.Role.REVIEWER and principal.review_policy == "hold"


def test_migration_0009_upgrades_and_downgrades(database_url_any: str) -> None:
    db = Database(database_url_any)
    try:
        migrate.upgrade(db, "0009")
        assert "reviews" in inspect(db.engine).get_table_names()
        columns = {c["name"] for c in inspect(db.engine).get_columns("tenants")}
        assert "review_policy" in columns
        command.downgrade(migrate._config(db), "-1")
        assert "reviews" not in inspect(db.engine).get_table_names()
        columns = {c["name"] for c in inspect(db.engine).get_columns("tenants")}
        assert "review_policy" not in columns
        migrate.upgrade(db)
    finally:
        db.dispose()
