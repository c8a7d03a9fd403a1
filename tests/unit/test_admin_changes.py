"""The governance functions the admin API and the command line share: the stop switch's stop
and resume (recorded before they take effect) and the tenant and key changes (one `admin` entry
each, none for a change refused). The audit writer here is a list; its bodies are the log's."""

from __future__ import annotations

from typing import Any

import pytest

from sovllm.governance import identity as idn
from sovllm.governance import oversight, tenancy
from sovllm.governance.audit import records
from sovllm.store.db import Database

WHO = {"cli": "ops", "host": "h1"}


class Written(list[tuple[str, dict[str, Any]]]):
    def __call__(self, kind: str, fields: dict[str, Any]) -> None:
        self.append((kind, fields))


def _failing(kind: str, fields: dict[str, Any]) -> None:
    raise OSError("the log is unwritable")


def test_a_stop_is_recorded_before_it_is_in_force(db: Database) -> None:
    made = oversight.new_stop("model", "m1", "cut", "incident 7", dict(WHO))
    with pytest.raises(OSError):
        oversight.stop(db, _failing, made)
    assert oversight.list_stops(db) == []  # no record, no stop
    written = Written()
    oversight.stop(db, written, made, served=["m1"])
    assert written == [(records.STOP, made.as_dict())]
    assert made.as_dict()["actor"] == WHO and made.as_dict()["target"] == "m1"
    assert [s.target for s in oversight.list_stops(db)] == ["m1"]


def test_a_stop_of_a_model_not_served_is_refused_unrecorded(db: Database) -> None:
    written = Written()
    made = oversight.new_stop("model", "nope", "drain", "", dict(WHO))
    with pytest.raises(oversight.NotServed, match="no model 'nope'; served: m1"):
        oversight.stop(db, written, made, served=["m1"])
    assert written == [] and oversight.list_stops(db) == []


def test_resume_records_then_lifts_and_refuses_what_is_not_stopped(db: Database) -> None:
    written = Written()
    with pytest.raises(oversight.NotStopped, match="all is not stopped"):
        oversight.resume(db, written, WHO, "all", "")
    assert written == []
    oversight.stop(db, written, oversight.new_stop("all", "", "drain", "", dict(WHO)))
    with pytest.raises(OSError):
        oversight.resume(db, _failing, WHO, "all", "")
    assert oversight.is_stopped(db, "all", "")  # not lifted without its record
    oversight.resume(db, written, WHO, "all", "")
    assert written[-1] == (records.RESUME, {"scope": "all", "target": None, "actor": WHO})
    assert not oversight.is_stopped(db, "all", "")


def test_tenant_and_key_changes_write_one_admin_entry_each(db: Database) -> None:
    written = Written()
    new = tenancy.NewTenant("lab", idn.Limits(rpm=5), weight=2.0)
    tenancy.create_tenant(db, written, WHO, new)
    with pytest.raises(idn.AlreadyExists):
        tenancy.create_tenant(db, written, WHO, new)  # refused: no entry
    raw, key = tenancy.create_key(db, written, WHO, tenancy.NewKey("lab", idn.Role.USER))
    tenancy.update_key(db, written, WHO, key.id, {"tpm": 100})
    tenancy.update_tenant(db, written, WHO, tenancy.TenantChange("lab", {"rpm": None}, 3.0))
    tenancy.revoke_key(db, written, WHO, key.id)
    with pytest.raises(idn.NotFound):
        tenancy.revoke_key(db, written, WHO, "key_missing")
    tenancy.delete_tenant(db, written, WHO, "lab")
    assert [k for k, _ in written] == [records.ADMIN] * 6
    targets = [(f["action"], f["target"]) for _, f in written]
    assert all(f["actor"] == WHO for _, f in written)
    assert targets == [
        (
            "tenant.create",
            {
                "name": "lab",
                "rpm": 5,
                "tpm": None,
                "max_concurrent": None,
                "monthly_tokens": None,
                "weight": 2.0,
                "content_policy": "none",
                "mask_prompts": False,
                "review_policy": "none",
            },
        ),
        ("key.create", {"key_id": key.id, "prefix": key.prefix, "tenant": "lab", "role": "user"}),
        ("key.update", {"key_id": key.id, "tpm": 100}),
        ("tenant.update", {"name": "lab", "rpm": None, "weight": 3.0}),
        ("key.revoke", {"key_id": key.id}),
        ("tenant.delete", {"name": "lab", "force": False, "revoked": 0}),
    ]
    assert raw not in repr(written)  # never the key itself
