"""The checks of the signed checkpoints: each note signed by the key of its epoch (both keys
at a signing-key rotation), its root the tree's root at its size, its stored columns those of its
note and of the tree, and consecutive checkpoints consistent (RFC 9162)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence

from sovllm.governance.audit import merkle
from sovllm.governance.audit.checkpoint import CheckpointError, Verifier, parse, verify
from sovllm.governance.audit.log import KEY_KIND
from sovllm.governance.audit.report import Report
from sovllm.governance.audit.rows import CheckpointRow, parse_body


def _compact(text: str | None) -> merkle.Compact | None:
    try:
        return [(int(n), bytes.fromhex(h)) for n, h in json.loads(text or "")]
    except (ValueError, TypeError):
        return None


Transition = tuple[int, Verifier, Verifier]
"""A signing-key rotation: the seq of its entry, the old key, the new key."""


def key_transitions(bodies: Iterable[tuple[int, str | None]], report: Report) -> list[Transition]:
    """The key chain, from the `audit.signing_key_rotated` entries among (seq, body)."""
    out = []
    for seq, body in bodies:
        if body is None or KEY_KIND not in body:
            continue
        obj = parse_body(body.encode())
        if obj is None or obj.get("kind") != KEY_KIND:
            continue
        try:
            out.append(
                (seq, Verifier.decode(str(obj["old_key"])), Verifier.decode(str(obj["new_key"])))
            )
        except (KeyError, CheckpointError) as exc:
            report.fail(f"entry {seq}: a key transition without a valid key ({exc})", seq)
    for (_, _, new), (seq, old, _) in itertools.pairwise(out):
        if old != new:
            report.fail(f"entry {seq}: a key transition from a key the log no longer had", seq)
    return out


def _keys_at(size: int, chain: Sequence[Transition], trusted: Verifier) -> list[Verifier]:
    """The keys that must have signed a checkpoint of `size`: the key of its epoch, both at a
    transition (its checkpoint is the tree ending with the transition entry). A trusted key that
    is not in the chain is asked of every checkpoint, which then names it as missing."""
    keys = [chain[0][1], *(new for _, _, new in chain)] if chain else [trusted]
    if trusted not in keys:
        return [trusted]
    needed = []
    lo = 0
    for j, key in enumerate(keys):
        hi = chain[j][0] + 1 if j < len(chain) else None
        if lo <= size and (hi is None or size <= hi):
            needed.append(key)
        lo = hi if hi is not None else lo
    return needed


def check_checkpoints(
    leaves: Sequence[bytes],
    rows: Iterable[CheckpointRow | str],
    verifier: Verifier,
    report: Report,
    chain: Sequence[Transition] = (),
) -> None:
    """Each note is signed by the key of its epoch (both keys at a key transition, `chain`), one
    of them `verifier`, and its root is the tree's root at its size; a row's stored size, root
    and compact range are those of its note and of the tree."""
    parsed = []
    for item in rows:
        row = item if isinstance(item, CheckpointRow) else CheckpointRow(item)
        name = "checkpoint" if row.size is None else f"checkpoint {row.size}"
        try:
            for key in _keys_at(parse(row.note)[0].size, chain, verifier):
                cp = verify(row.note, key)
        except CheckpointError as exc:
            report.fail(f"{name}: {exc}", checkpoint=row.size)
            continue
        if cp.origin != verifier.name:
            report.fail(
                f"{name} is from another log ({cp.origin!r}, not {verifier.name!r})",
                checkpoint=row.size,
            )
            continue
        matches = {"size": row.size in (None, cp.size), "root": row.root in (None, cp.root.hex())}
        bad = [column for column, ok in matches.items() if not ok]
        if bad:
            report.fail(
                f"checkpoint {cp.size} was altered: its stored {' and '.join(bad)} "
                f"{'does' if len(bad) == 1 else 'do'} not match its signed note",
                checkpoint=cp.size,
            )
        parsed.append((cp, row))
    parsed.sort(key=lambda p: p[0].size)
    signed = {c.size for c, _ in parsed}
    for seq, _old, _new in chain:
        # Whatever key the verifier trusts: a transition only the new key signed could be
        # anyone's (whoever can write the database can append one for a key of their own).
        if seq + 1 not in signed:
            report.fail(f"the key transition at entry {seq} has no checkpoint signed by both keys")
    compacts = merkle.compacts_at(leaves, [c.size for c, _ in parsed if c.size <= len(leaves)])
    checked: list[tuple[int, bytes]] = []
    previous = 0
    for cp, row in parsed:
        if cp.size > len(leaves):
            report.fail(
                f"the log has {len(leaves)} entries but a checkpoint was signed at size "
                f"{cp.size}: entries from {len(leaves)} on were removed",
                len(leaves),
            )
            continue
        if merkle.compact_root(compacts[cp.size]) != cp.root:
            report.fail(
                f"the tree at size {cp.size} does not match its signed checkpoint: an entry "
                f"between {previous} and {cp.size - 1} was changed, removed or inserted",
                # Only a bound: an entry named by its own hash above is more precise.
                previous if report.first_bad is None else None,
            )
            continue
        if row.compact is not None and _compact(row.compact) != compacts[cp.size]:
            # The next checkpoint is computed from this range: a wrong one would sign a wrong
            # tree head.
            report.fail(
                f"checkpoint {cp.size} was altered: its stored compact range is not the tree's",
                checkpoint=cp.size,
            )
        if checked:
            # Between consecutive checkpoints, the RFC 9162 consistency proof must verify.
            old_size, old_root = checked[-1]
            if old_size and cp.size > old_size:
                proof = merkle.consistency_proof(old_size, leaves[: cp.size])
                if not merkle.verify_consistency(old_size, cp.size, old_root, cp.root, proof):
                    report.fail(f"checkpoints {old_size} and {cp.size} are inconsistent")
        checked.append((cp.size, cp.root))
        previous = cp.size
        report.checkpoints += 1
