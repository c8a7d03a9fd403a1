"""The pool's pure parts: routing policies, affinity keys, the wire format, planning, egress."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sovllm.config import load_settings
from sovllm.engines.base import (
    ChatMessage,
    EngineStats,
    EngineUnavailableError,
    GenerationOutput,
    GenerationRequest,
    ModelInfo,
    SamplingParams,
    Timings,
)
from sovllm.pool import wire
from sovllm.pool.replica import Replica
from sovllm.pool.router import ModelNotServedError
from sovllm.pool.routing import Policy, affinity_key
from sovllm.pool.settings import RoutingSettings
from sovllm.serve import build, replicas
from tests.unit.test_pool_streams import GOOD, MODEL, chunk, http_backend, make_pool, upstream
from tests.unit.test_pool_streams import request as one_request


@dataclass
class R:
    name: str
    outstanding: int = 0


def chat(*contents: str, system: str | None = None) -> GenerationRequest:
    messages = [ChatMessage("system", system)] if system else []
    roles = ["user", "assistant"]
    messages += [ChatMessage(roles[i % 2], c) for i, c in enumerate(contents)]
    return GenerationRequest("r", SamplingParams(), messages=messages)


def test_round_robin_cycles_over_the_replicas() -> None:
    policy = Policy(RoutingSettings(policy="round_robin"))
    replicas = [R("a"), R("b"), R("c")]
    firsts = [policy.order(replicas, None)[0].name for _ in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]
    assert sorted(r.name for r in policy.order(replicas, None)) == ["a", "b", "c"]


def test_least_outstanding_prefers_the_idlest_and_spreads_ties() -> None:
    policy = Policy(RoutingSettings(policy="least_outstanding"))
    replicas = [R("a", 3), R("b", 1), R("c", 2)]
    assert [r.name for r in policy.order(replicas, None)] == ["b", "c", "a"]
    idle = [R("a"), R("b"), R("c")]
    assert {policy.order(idle, None)[0].name for _ in range(3)} == {"a", "b", "c"}


def test_affinity_places_new_conversations_by_hash_when_idle_and_survives_a_departure() -> None:
    policy = Policy(RoutingSettings(policy="prefix_affinity"))
    replicas = [R(f"r{i}") for i in range(4)]
    homes = {f"k{i}": policy.order(replicas, f"k{i}")[0].name for i in range(400)}
    assert all(policy.order(replicas, k)[0].name == home for k, home in homes.items())
    spread = Counter(homes.values())
    assert min(spread.values()) > 60  # about 100 each
    # Rendezvous hashing: only the keys of the replica that left move.
    survivors = [r for r in replicas if r.name != "r0"]
    for key, home in homes.items():
        if home != "r0":
            assert policy.order(survivors, key)[0].name == home


def test_a_new_conversation_goes_to_the_least_loaded_replica() -> None:
    policy = Policy(RoutingSettings(policy="prefix_affinity"))
    replicas = [R("a", 3), R("b", 0), R("c", 1)]
    assert [r.name for r in policy.order(replicas, "new")] == ["b", "c", "a"]


def test_a_conversation_returns_to_its_home_until_the_load_bound() -> None:
    policy = Policy(RoutingSettings(policy="prefix_affinity", load_bound=1.25))
    a, b = R("a"), R("b")
    policy.remember("chat", "a")
    a.outstanding = 2  # bound = 1.25 * 3 / 2 + 1 = 2.875: still home, though b is idle
    assert policy.order([a, b], "chat")[0] is a
    a.outstanding = 6  # bound = 1.25 * 7 / 2 + 1 = 5.375: spill to the least loaded
    assert [r.name for r in policy.order([a, b], "chat")] == ["b", "a"]
    policy.remember("chat", "b")  # where it went: its cache is there now
    a.outstanding = 0
    assert policy.order([a, b], "chat")[0] is b
    # A home that has left the pool is forgotten in the order.
    assert policy.order([a], "chat") == [a]


def test_other_policies_remember_nothing() -> None:
    policy = Policy(RoutingSettings(policy="least_outstanding"))
    policy.remember("chat", "a")
    a, b = R("a", 1), R("b", 0)
    assert policy.order([a, b], "chat")[0] is b


def test_affinity_key_follows_the_conversation_not_its_latest_turn() -> None:
    first = affinity_key(chat("Plan my trip", system="Be brief"), None, None, "auto")
    later = affinity_key(
        chat("Plan my trip", "Sure.", "And hotels?", system="Be brief"), None, None, "auto"
    )
    other = affinity_key(chat("Plan my party", system="Be brief"), None, None, "auto")
    assert first == later != other
    assert affinity_key(chat("x"), "alice", "s1", "auto") == "s:s1"
    assert affinity_key(chat("x"), "alice", None, "auto") == "u:alice"
    assert affinity_key(chat("x"), None, None, "session") is None
    tokens = GenerationRequest("r", SamplingParams(), prompt=list(range(100)))
    assert affinity_key(tokens, None, None, "prefix") == "p:" + ",".join(map(str, range(64)))


def test_requests_and_outputs_cross_the_wire_unchanged() -> None:
    sampling = SamplingParams(
        max_tokens=5,
        temperature=0.3,
        top_k=4,
        seed=7,
        stop=("\n",),
        ignore_eos=True,
        min_tokens=2,
        logit_bias=((3, -1.5),),
    )
    for request in (
        GenerationRequest(
            "a", sampling, messages=[ChatMessage("user", "héllo")], flow="t", weight=2
        ),
        GenerationRequest("b", sampling, prompt="text"),
        GenerationRequest("c", sampling, prompt=[1, 2, 3]),
    ):
        assert wire.request_from_json(wire.request_to_json(request)) == request
    timings = Timings(100.0, 100.5, 101.0, 102.0)
    out = GenerationOutput("é", (5,), 10, 3, "length", timings, cached_tokens=9)
    back = wire.output_from_json(wire.output_to_json(out), arrival=7.0, now=9.5)
    assert (back.text, back.token_ids, back.prompt_tokens, back.finish_reason) == (
        "é",
        (5,),
        10,
        "length",
    )
    assert back.cached_tokens == 9
    assert back.timings == Timings(7.0, 7.5, 8.0, 9.5)  # offsets re-based on the gateway's clock
    info = ModelInfo("m", "/p", "ab" * 32, 2048, 1, engine_config_sha256="cd" * 32)
    stats = EngineStats(1, 2, 3, 4)
    assert wire.info_from_json(wire.info_to_json(info, stats)) == (info, stats)


def test_the_wire_carries_only_what_differs_from_the_defaults() -> None:
    """A worker of the version before (a rolling upgrade) takes a request that asks nothing new
    of it; the penalties reach a worker that knows them."""
    plain = GenerationRequest("p", SamplingParams(temperature=0.0), prompt="x")
    assert wire.request_to_json(plain)["sampling"] == {"temperature": 0.0}
    penalized = GenerationRequest(
        "q", SamplingParams(presence_penalty=0.5, frequency_penalty=-1.0), prompt="x"
    )
    body = wire.request_to_json(penalized)
    assert body["sampling"] == {"presence_penalty": 0.5, "frequency_penalty": -1.0}
    assert wire.request_from_json(body) == penalized


def test_malformed_wire_requests_raise_a_plain_error() -> None:
    for body in ({}, {"request_id": "x"}, {"request_id": "x", "sampling": {"bogus": 1}}):
        with pytest.raises((KeyError, TypeError, ValueError)):
            wire.request_from_json(body)


def test_plan_names_ports_threads_and_gpus(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        replicas=[
            {"kind": "embedded", "count": 2},
            {"kind": "vllm", "model": "m", "count": 2, "tensor_parallel_size": 2},
            {"kind": "openai", "url": "http://127.0.0.1:9/v1", "model": "up", "name": "lab"},
        ],
    )
    plans = replicas.plan(settings)
    assert [p.name for p in plans] == ["worker-0", "worker-1", "vllm-0", "vllm-1", "lab"]
    ports = {p.url for p in plans[:4]}
    assert len(ports) == 4
    assert plans[2].env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert plans[3].env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert plans[0].argv is not None and plans[0].argv[3] == "worker"
    assert plans[4].argv is None and plans[4].model_id == "up"
    text = replicas.describe(plans)
    assert "vllm serve m" in text and build.wire.TOKEN_ENV not in text


def test_a_started_replica_gets_its_own_environment(tmp_path: Path) -> None:
    """Two vLLMs on one CPU each bound to their own core, as two on GPUs get their own GPUs;
    the environment is part of the command line the dry run prints."""
    from sovllm.config import ConfigError

    bind = "VLLM_CPU_OMP_THREADS_BIND"
    settings = load_settings(
        data_dir=tmp_path,
        replicas=[
            {"kind": "vllm", "model": "m", "env": {bind: "0"}},
            {"kind": "vllm", "model": "m", "env": {bind: "1", "CUDA_VISIBLE_DEVICES": ""}},
            {"kind": "embedded", "env": {"SOVLLM_ENGINE__THREADS": "1"}},
        ],
    )
    plans = replicas.plan(settings)
    assert [p.env.get(bind) for p in plans] == ["0", "1", None]
    assert (
        plans[0].env["CUDA_VISIBLE_DEVICES"] == "0" and plans[1].env["CUDA_VISIBLE_DEVICES"] == ""
    )
    assert plans[2].env["SOVLLM_ENGINE__THREADS"] == "1" and "SOVLLM_MODEL" in plans[2].env
    assert f"{bind}=0 " in replicas.describe(plans)
    attached = {"kind": "openai", "url": "http://127.0.0.1:9/v1", "model": "up", "env": {"A": "1"}}
    with pytest.raises(ConfigError, match="'env' applies to a replica sovllm starts"):
        load_settings(data_dir=tmp_path, replicas=[attached])
    with pytest.raises(ConfigError, match="not an environment variable name"):
        load_settings(
            data_dir=tmp_path, replicas=[{"kind": "vllm", "model": "m", "env": {"A=B": "1"}}]
        )


def test_a_started_vllm_is_asked_for_its_served_name(tmp_path: Path) -> None:
    entry = {"kind": "vllm", "model": "/weights/smol-hf", "served_model_name": "smol"}
    [plan] = replicas.plan(load_settings(data_dir=tmp_path, replicas=[entry]))
    assert plan.argv is not None and plan.argv[1:3] == ["serve", "/weights/smol-hf"]
    # vLLM serves (and lists in /v1/models) only --served-model-name, never the path.
    assert (plan.model_id, plan.model) == ("smol", "smol")


def test_no_replicas_means_one_engine_in_process(tmp_path: Path) -> None:
    [only] = replicas.plan(load_settings(data_dir=tmp_path))
    assert (only.kind, only.argv) == ("local", None)
    assert [p.kind for p in replicas.plan(load_settings(data_dir=tmp_path), embedded=2)] == [
        "embedded",
        "embedded",
    ]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1/v1",
        "http://10.1.2.3/v1",
        "http://192.168.0.9:8000/v1",
        "http://[::1]:80/v1",
        "http://localhost:5/v1",
    ],
)
def test_loopback_and_private_upstreams_pass(url: str) -> None:
    replicas.check_egress(url, [], "x")


def test_public_upstreams_need_the_allow_list() -> None:
    with pytest.raises(replicas.PoolConfigError, match="egress_allow"):
        replicas.check_egress("http://8.8.8.8/v1", [], "x")
    replicas.check_egress("http://8.8.8.8/v1", ["8.8.8.0/24"], "x")
    with pytest.raises(replicas.PoolConfigError, match="not an http"):
        replicas.check_egress("ftp://10.0.0.1/", [], "x")


def test_duplicate_names_and_incoherent_entries_are_config_errors(tmp_path: Path) -> None:
    from sovllm.config import ConfigError

    with pytest.raises(replicas.PoolConfigError, match="duplicate replica name 'a'"):
        replicas.plan(
            load_settings(
                data_dir=tmp_path,
                replicas=[{"kind": "embedded", "name": "a"}, {"kind": "embedded", "name": "a"}],
            )
        )
    with pytest.raises(ConfigError, match="needs 'url'"):
        load_settings(replicas=[{"kind": "openai", "model": "m"}])
    with pytest.raises(ConfigError, match=r"replicas\.0\.kind"):
        load_settings(replicas=[{"kind": "tpu"}])
    with pytest.raises(ConfigError, match=r"routing\.policy"):
        load_settings(routing={"policy": "random"})


def test_token_estimate_without_a_tokenizer_is_about_four_characters_a_token() -> None:
    assert build.estimate_tokens(GenerationRequest("r", SamplingParams(), prompt="x" * 400)) == 101
    assert build.estimate_tokens(GenerationRequest("r", SamplingParams(), prompt=[1, 2])) == 2
    assert build.estimate_tokens(chat("y" * 40)) == 11 + 4 + 2


def test_a_joining_replica_takes_only_the_keys_rendezvous_hashing_gives_it() -> None:
    """Discovery adds replicas while the gateway runs: a new conversation's place moves only
    where the newcomer outranks every other replica on its key, and a remembered
    conversation stays home."""
    policy = Policy(RoutingSettings(policy="prefix_affinity"))
    replicas = [R(f"r{i}") for i in range(4)]
    keys = [f"k{i}" for i in range(400)]
    before = {k: policy.order(replicas, k)[0].name for k in keys}
    grown = [*replicas, R("10.0.0.9:8000")]
    after = {k: policy.order(grown, k)[0].name for k in keys}
    moved = {k for k in keys if after[k] != before[k]}
    assert {after[k] for k in moved} == {"10.0.0.9:8000"}
    assert 40 < len(moved) < 130  # about a fifth
    remembering = Policy(RoutingSettings(policy="prefix_affinity"))
    for k in keys:
        remembering.remember(k, before[k])
    assert all(remembering.order(grown, k)[0].name == before[k] for k in keys)


def test_discovery_settings_are_checked_and_named(tmp_path: Path) -> None:
    from sovllm.config import ConfigError

    dns = {"name": "vllm.sovllm.svc.cluster.local", "port": 8000}
    ok = load_settings(
        data_dir=tmp_path, replicas=[{"kind": "vllm", "model": "m", "discovery": dns}]
    )
    assert ok.replicas[0].discovery is not None and ok.replicas[0].discovery.interval_s == 5
    bad = [
        ({"kind": "vllm", "model": "m", "url": "http://a:1/v1", "discovery": dns}, "exclude"),
        ({"kind": "vllm", "discovery": dns}, "needs 'model'"),
        ({"kind": "openai", "model": "m", "discovery": {**dns, "port": 0}}, r"discovery\.port"),
        ({"kind": "openai", "model": "m", "discovery": {**dns, "kind": "k8s"}}, r"discovery\.kind"),
        ({"kind": "vllm", "model": "m", "count": 2, "discovery": dns}, "'count'"),
        ({"kind": "vllm", "model": "m", "port": 9, "discovery": dns}, "discovery.port"),
        ({"kind": "vllm", "model": "m", "discovery": {**dns, "nameserver": "x"}}, "nameserver"),
        ({"kind": "vllm", "model": "m", "discovery": {**dns, "nameserver": "h:70000"}}, "1-65535"),
    ]
    for entry, message in bad:
        with pytest.raises(ConfigError, match=message):
            load_settings(data_dir=tmp_path, replicas=[entry])


def test_a_discovered_group_is_planned_described_and_its_members_checked(tmp_path: Path) -> None:
    dns = {"name": "vllm-x.ns.svc.cluster.local", "port": 8000, "interval_s": 2}
    settings = load_settings(
        data_dir=tmp_path,
        replicas=[
            {"kind": "vllm", "name": "big", "model": "m", "discovery": dns},
            {"kind": "embedded", "discovery": {**dns, "nameserver": "127.0.0.1:53"}},
        ],
    )
    big, workers = replicas.plan(settings)
    assert (big.argv, workers.argv, workers.kind) == (None, None, "embedded")
    text = replicas.describe([big, workers])
    assert "big: vllm replicas of 'm' discovered from DNS name vllm-x.ns.svc" in text
    assert "every 2 s, asking 127.0.0.1:53" in text
    one = replicas.member(big, "10.1.2.3:8000", [])
    assert (one.name, one.url, one.health_url) == (
        "big-10.1.2.3:8000",
        "http://10.1.2.3:8000/v1",
        "http://10.1.2.3:8000/health",
    )
    assert replicas.member(workers, "10.1.2.3:8000", []).url == "http://10.1.2.3:8000"
    with pytest.raises(replicas.PoolConfigError, match="egress_allow"):
        replicas.member(big, "8.8.8.8:8000", [])  # a discovered address outside the allow-list
    assert replicas.member(big, "8.8.8.8:8000", ["8.8.8.8"]).url == "http://8.8.8.8:8000/v1"


async def test_a_draining_replica_finishes_its_streams_then_leaves_and_a_joiner_serves() -> None:
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield chunk("Hel")
        await release.wait()
        for part in GOOD[1:]:
            yield part

    pool, seen = make_pool(slow, GOOD)  # round robin: the first request goes to r0
    await asyncio.gather(*(r.probe() for r in pool.replicas))
    held = await pool.open(MODEL, one_request(), None, 3)
    outs = aiter(held)
    assert held.replica is not None and held.replica.name == "r0"
    assert (await anext(outs)).text == "Hel"
    pool.drain("r0")
    assert [(r.name, r.draining) for r in pool.replicas] == [("r0", True), ("r1", False)]
    for _ in range(3):
        other = await pool.open(MODEL, one_request(), None, 3)
        assert other.replica is not None and other.replica.name == "r1"
        assert [o async for o in other][-1].finish_reason == "stop"
    release.set()
    rest = [o async for o in outs]
    assert "".join(o.text for o in rest) == " there" and rest[-1].finish_reason == "stop"
    assert [r.name for r in pool.replicas] == ["r1"]  # nothing in flight on r0: it left

    settings = pool.settings
    backend = http_backend(upstream(GOOD, seen, "r2"), settings)
    await pool.add(Replica("r2", "openai", "", MODEL, backend, lambda r: 3, settings))
    assert [(r.name, r.state) for r in pool.replicas] == [("r1", "healthy"), ("r2", "healthy")]
    names = set()
    for _ in range(2):
        stream = await pool.open(MODEL, one_request(), None, 3)
        assert stream.replica is not None
        names.add(stream.replica.name)
        assert [o async for o in stream][-1].finish_reason == "stop"
    assert names == {"r1", "r2"}
    await pool.shutdown()


async def test_a_discovered_group_without_members_is_unavailable_not_unknown() -> None:
    pool, _ = make_pool()

    async def never() -> None:
        await asyncio.Event().wait()

    pool.follow("big", "DNS name vllm-x", never)
    assert pool.model_ids == ["big"]
    with pytest.raises(EngineUnavailableError, match="DNS name vllm-x has none ready"):
        pool.model("big")
    with pytest.raises(ModelNotServedError):
        pool.model("other")
