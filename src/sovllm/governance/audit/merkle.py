"""RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs.

leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right); the tree over n leaves
splits at the largest power of two smaller than n. The proof algorithms follow RFC 9162 §2.1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


Compact = list[tuple[int, bytes]]
"""The complete subtrees of a tree, left to right, as (size, hash): all a tree head needs."""


def extend(compact: Compact, leaves: Sequence[bytes]) -> Compact:
    """Append leaves to a compact range (in place; also returned)."""
    for h in leaves:
        size, node = 1, h
        while compact and compact[-1][0] == size:
            left_size, left = compact.pop()
            size, node = left_size + size, node_hash(left, node)
        compact.append((size, node))
    return compact


def compact_root(compact: Compact) -> bytes:
    """Fold the complete subtrees right to left: the shape RFC 6962 gives an incomplete tree."""
    if not compact:
        return EMPTY_ROOT
    acc = compact[-1][1]
    for _, left in reversed(compact[:-1]):
        acc = node_hash(left, acc)
    return acc


def root(leaves: Sequence[bytes]) -> bytes:
    """The tree head over leaf hashes, in O(n)."""
    return compact_root(extend([], leaves))


def compacts_at(leaves: Sequence[bytes], sizes: Sequence[int]) -> dict[int, Compact]:
    """The compact ranges at several sizes in one pass over the leaves."""
    wanted = set(sizes)
    out: dict[int, Compact] = {0: []} if 0 in wanted else {}
    compact: Compact = []
    for i, h in enumerate(leaves, start=1):
        extend(compact, [h])
        if i in wanted:
            out[i] = list(compact)
    return out


def roots_at(leaves: Sequence[bytes], sizes: Sequence[int]) -> dict[int, bytes]:
    """Tree heads at several sizes in one pass over the leaves."""
    return {n: compact_root(c) for n, c in compacts_at(leaves, sizes).items()}


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the audit path of leaf `index` in the tree over `leaves`."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"leaf {index} is not in a tree of {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), root(leaves[:k])]


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = node_hash(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) for 0 < m <= n."""
    n = len(leaves)
    if not 0 < old_size <= n:
        raise ValueError(f"no consistency proof from size {old_size} to {n}")
    return _subproof(old_size, leaves, True)


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), root(leaves[:k])]


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2."""
    if old_size == new_size:
        return old_root == new_root and not proof
    if not 0 < old_size < new_size or not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn % 2 == 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
