"""The retention job: what is past `retention.*` goes, and each deletion is an audit entry.

- Stored content past `content_days` is deleted (`privacy.purge`).
- Audit entries past `audit_days` lose their bodies; their leaf hashes stay, so the tree, the
  signed checkpoints and every later proof still verify. The prune is recorded by a
  `retention.prune` entry written in the same transaction: the setting, the cutoff, the range,
  the count and a digest of the columns the pruned rows keep (seq, at, kind, request_id), so
  verify can still check those. `retention.prune` entries are never pruned themselves.
- Usage days past `usage_days` are rolled up per tenant and month into `usage_monthly` and
  deleted, with a `retention.usage` entry in the same transaction. `usage_days` is at least 31,
  so the current month, which the monthly token budget sums (quotas.py), is never rolled up.

`run` is the one entry point: the server's job (api/app.py) and `sovllm privacy purge`. Several
gateways may run it at once: each step holds the log's lock (audit bodies) or deletes before it
adds (usage), so nothing is pruned or counted twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from sovllm.config import RetentionSettings
from sovllm.governance.audit import records
from sovllm.governance.audit.checkpoint import CheckpointError
from sovllm.governance.audit.log import (
    KEY_KIND,
    PRUNE_KIND,
    PSEUDONYM_KEY_KIND,
    PSEUDONYM_ROTATED_KIND,
    AuditLog,
    kept_columns_digest,
    stamp,
)
from sovllm.governance.privacy.content import ContentVault
from sovllm.store.raw import SQL, raw_transaction

log = logging.getLogger("sovllm.retention")

DAY_S = 86400.0
PRUNE_BATCH = 5000
"""Entries per prune (one transaction, one record): bounds how long the log's lock is held."""
USAGE_KIND = "retention.usage"

_ELIGIBLE = SQL(
    "SELECT seq, at, kind, request_id FROM audit_entries "
    "WHERE seq > :after AND at < :cutoff AND body IS NOT NULL AND kind NOT IN (:keep, :keep_key, :keep_pk, :keep_pr) "
    "ORDER BY seq LIMIT :n"
)
_PRUNE = SQL(
    "UPDATE audit_entries SET body = NULL, pruned_by = :by "
    "WHERE seq >= :lo AND seq <= :hi AND at < :cutoff AND body IS NOT NULL AND kind NOT IN (:keep, :keep_key, :keep_pk, :keep_pr)"
)
# Deleting first (and reading what was deleted) makes a second gateway's run find nothing.
_TAKE_OLD_USAGE = SQL(
    "DELETE FROM usage_daily WHERE day < :before "
    "RETURNING tenant_id, day, requests, prompt_tokens, completion_tokens, energy_joules, "
    "energy_co2e_g"
)
_ADD_MONTH = SQL(
    "INSERT INTO usage_monthly (month, tenant_id, requests, prompt_tokens, completion_tokens, "
    "energy_joules, energy_co2e_g) "
    "VALUES (:month, :tenant, :requests, :prompt, :completion, :joules, :co2e) "
    "ON CONFLICT (month, tenant_id) DO UPDATE SET "
    "requests = usage_monthly.requests + excluded.requests, "
    "prompt_tokens = usage_monthly.prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = usage_monthly.completion_tokens + excluded.completion_tokens, "
    "energy_joules = usage_monthly.energy_joules + excluded.energy_joules, "
    "energy_co2e_g = usage_monthly.energy_co2e_g + excluded.energy_co2e_g"
)


@dataclass(frozen=True)
class Result:
    content_records: int
    audit_entries: int
    """Entries whose bodies were pruned."""
    usage_rows: int
    """Day rows rolled up into months and deleted."""


def run(
    settings: RetentionSettings,
    vault: ContentVault,
    audit: AuditLog,
    actor: dict[str, str],
    now: float | None = None,
) -> Result:
    """Apply every retention setting as of `now` (default: the clock)."""
    now = time.time() if now is None else now
    content = vault.purge(settings.content_days, now=now)
    if content:
        audit.append(
            records.PURGE, records.privacy_purge(actor, content, settings.content_days)
        ).result()
    pruned = prune_audit(audit, settings.audit_days, actor, now)
    rolled = roll_up_usage(audit, settings.usage_days, actor, now)
    if pruned or rolled:
        # Sign the records now: a `retention.prune` record is what vouches for the columns its
        # pruned entries keep, so it must not wait outside every checkpoint (the CLI's log has
        # no writer thread to sign one later).
        try:
            audit.checkpoint()
        except CheckpointError as exc:  # what was pruned stays pruned, and verify says why
            log.error("audit checkpoint refused after retention: %s", exc)
    return Result(content, pruned, rolled)


def prune_audit(
    audit: AuditLog, days: int, actor: dict[str, str], now: float, batch: int = PRUNE_BATCH
) -> int:
    """Remove the bodies of entries older than `days`; return how many."""
    cutoff, cutoff_text = stamp(now - days * DAY_S)
    keep = {
        "cutoff": cutoff,
        "keep": PRUNE_KIND,
        "keep_key": KEY_KIND,  # the key chains stay
        "keep_pk": PSEUDONYM_KEY_KIND,
        "keep_pr": PSEUDONYM_ROTATED_KIND,
    }
    total = 0
    after = -1  # each batch starts past the last: no batch re-reads the entries it pruned
    while True:
        with raw_transaction(audit.db) as tx:
            audit.lock(tx)  # before reading: a concurrent prune then finds these already done
            rows = tx.all(_ELIGIBLE, {**keep, "after": after, "n": batch})
            if not rows:
                return total
            lo, hi = int(rows[0][0]), int(rows[-1][0])
            by = audit.append_in(
                tx,
                PRUNE_KIND,
                records.retention_prune(
                    actor, days, cutoff_text, lo, hi, len(rows), kept_columns_digest(rows)
                ),
            )
            changed = tx.changed(_PRUNE, {**keep, "by": by, "lo": lo, "hi": hi})
            if changed != len(rows):  # cannot happen under the lock; never record a wrong digest
                raise RuntimeError(f"prune of entries {lo}..{hi}: {changed} rows, not {len(rows)}")
        total += len(rows)
        after = hi
        if len(rows) < batch:
            return total


def roll_up_usage(audit: AuditLog, days: int, actor: dict[str, str], now: float) -> int:
    """Fold usage days older than `days` into their tenant's month; return how many rows."""
    before = (dt.datetime.fromtimestamp(now, dt.UTC).date() - dt.timedelta(days=days)).isoformat()
    with raw_transaction(audit.db) as tx:
        rows = tx.all(_TAKE_OLD_USAGE, {"before": before})
        if not rows:
            return 0
        sums: dict[tuple[str, int], list[float]] = {}
        for tenant_id, day, requests, prompt, completion, joules, co2e in rows:
            acc = sums.setdefault((str(day)[:7], int(tenant_id)), [0, 0, 0, 0.0, 0.0])
            acc[0] += int(requests)
            acc[1] += int(prompt)
            acc[2] += int(completion)
            acc[3] += float(joules)
            acc[4] += float(co2e)
        for (month, tenant), (requests, prompt, completion, joules, co2e) in sorted(sums.items()):
            tx.run(
                _ADD_MONTH,
                {
                    "month": month,
                    "tenant": tenant,
                    "requests": int(requests),
                    "prompt": int(prompt),
                    "completion": int(completion),
                    "joules": joules,
                    "co2e": co2e,
                },
            )
        audit.append_in(
            tx,
            USAGE_KIND,
            records.retention_usage(
                actor, days, before, len(rows), sorted({month for month, _ in sums})
            ),
        )
    return len(rows)
