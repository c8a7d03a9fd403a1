"""RFC 6962 hashing against Certificate Transparency's test vectors, and proofs by property."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sovllm.governance.audit import merkle

# The leaves and roots of certificate-transparency's merkle tree tests (RFC 6962).
LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def hashes(n: int) -> list[bytes]:
    return [merkle.leaf_hash(x) for x in LEAVES[:n]]


def test_rfc6962_roots() -> None:
    assert (
        merkle.root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    for n, expected in enumerate(ROOTS, start=1):
        assert merkle.root(hashes(n)).hex() == expected
    assert {k: v.hex() for k, v in merkle.roots_at(hashes(8), range(1, 9)).items()} == {
        n: r for n, r in enumerate(ROOTS, start=1)
    }


def test_rfc6962_inclusion_proof_of_leaf_0_in_8() -> None:
    proof = merkle.inclusion_proof(0, hashes(8))
    assert [p.hex() for p in proof] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]


def test_rfc6962_consistency_proof_1_to_8() -> None:
    proof = merkle.consistency_proof(1, hashes(8))
    assert [p.hex() for p in proof] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]


leaves_st = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@given(leaves_st, st.data())
def test_every_leaf_has_a_verifying_inclusion_proof(raw: list[bytes], data: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(x) for x in raw]
    i = data.draw(st.integers(0, len(leaves) - 1))
    r = merkle.root(leaves)
    proof = merkle.inclusion_proof(i, leaves)
    assert merkle.verify_inclusion(i, len(leaves), leaves[i], proof, r)
    other = merkle.leaf_hash(b"tampered" + raw[i])
    assert not merkle.verify_inclusion(i, len(leaves), other, proof, r)


@given(leaves_st, st.data())
def test_consistency_proofs_verify_and_detect_rewrites(
    raw: list[bytes], data: st.DataObject
) -> None:
    leaves = [merkle.leaf_hash(x) for x in raw]
    m = data.draw(st.integers(1, len(leaves)))
    old, new = merkle.root(leaves[:m]), merkle.root(leaves)
    proof = merkle.consistency_proof(m, leaves)
    assert merkle.verify_consistency(m, len(leaves), old, new, proof)
    j = data.draw(st.integers(0, m - 1))
    rewritten = [*leaves[:j], merkle.leaf_hash(b"x" + raw[j]), *leaves[j + 1 :]]
    assert not merkle.verify_consistency(m, len(leaves), old, merkle.root(rewritten), proof)
