"""Upstream replicas (an OpenAI-compatible server, vLLM's command line) and start-up errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from sovllm.engines.catalog import resolve_model
from tests.conftest import MODEL_ID, free_port, run_server, wait_until, wait_until_up

PEER_ID = "peer-smol"


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's own OpenAI server, as an `openai`-kind replica would find it."""
    port = free_port()
    log = tmp_path_factory.mktemp("peer") / "peer.log"
    path = resolve_model(MODEL_ID).path
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--port", str(port),
           "--host", "127.0.0.1", "--model_alias", PEER_ID, "--n_ctx", "2048",
           "--n_threads", "1", "--verbose", "False",
           # By default this server aborts the request in progress whenever another arrives,
           # the pool's health probes included.
           "--interrupt_requests", "False"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(proc, f"{url}/models", log)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_an_openai_upstream_beside_an_embedded_worker(peer: str, tmp_path: Path) -> None:
    config = tmp_path / "sovllm.yaml"
    config.write_text(json.dumps({"replicas": [
        {"kind": "embedded"},
        {"kind": "openai", "url": peer, "model": PEER_ID, "served_model_name": "upstream-smol",
         "tokenizer": MODEL_ID},
    ]}))  # fmt: skip
    env = {"SOVLLM_ENGINE__THREADS": "1"}
    with run_server(tmp_path, env=env, args=("--config", str(config))) as srv:
        # Ready means one replica answers; the upstream's first probe may still be under way.
        def all_healthy() -> bool:
            replicas = srv.admin("GET", "/pool").json()["replicas"]
            return {r["state"] for r in replicas} == {"healthy"}

        wait_until(all_healthy, "both replicas healthy")
        client = OpenAI(base_url=srv.base_url, api_key=srv.api_key, max_retries=0)
        assert sorted(m.id for m in client.models.list()) == sorted([MODEL_ID, "upstream-smol"])
        raw = client.chat.completions.with_raw_response.create(
            model="upstream-smol", messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=8, temperature=0,
        )  # fmt: skip
        assert raw.headers["x-sovllm-replica"] == "upstream-0"
        reply = raw.parse()
        assert reply.choices[0].message.content
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        stream = client.chat.completions.create(
            model="upstream-smol", messages=[{"role": "user", "content": "Count to five"}],
            max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text and chunks[-1].usage is not None
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
        # The embedded model answers on its own replica, in the same gateway.
        local = client.chat.completions.with_raw_response.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert local.headers["x-sovllm-replica"] == "worker-0"
        # Request metrics carry each request's own model.
        text = httpx.get(f"{srv.url}/metrics", timeout=10).text
        for model, count in (("upstream-smol", 2), (MODEL_ID, 1)):
            line = f'sovllm:e2e_request_latency_seconds_count{{model_name="{model}"}} {count}.0'
            assert line in text, text


def serve(
    tmp_path: Path, *args: str, config: object | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sovllm", "serve", "--port", str(free_port()), *args]
    if config is not None:
        path = tmp_path / "sovllm.yaml"
        path.write_text(json.dumps(config))
        argv += ["--config", str(path)]
    env = {**os.environ, "SOVLLM_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)


def test_a_replica_with_a_bad_model_path_stops_the_start_naming_it(tmp_path: Path) -> None:
    done = serve(tmp_path, config={"replicas": [{"kind": "embedded", "name": "ward-a",
                                                 "model": "/nowhere/model.gguf"}]})  # fmt: skip
    assert done.returncode == 1
    assert "replica 'ward-a'" in done.stderr and "/nowhere/model.gguf" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_replica_on_a_taken_port_stops_the_start_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve(tmp_path, config={"replicas": [{"kind": "embedded", "port": port}]})
    assert done.returncode == 1
    assert f"replica 'worker-0': cannot listen on 127.0.0.1:{port}" in done.stderr


def test_a_replica_that_dies_while_starting_is_reported_with_its_log(tmp_path: Path) -> None:
    not_a_model = tmp_path / "broken.gguf"
    not_a_model.write_bytes(b"GGUF" + b"\0" * 64)
    done = serve(tmp_path, config={"replicas": [{"kind": "embedded", "model": str(not_a_model)}]})
    assert done.returncode == 1
    assert "replica 'worker-0' exited with code" in done.stderr


def test_an_upstream_outside_the_private_networks_is_refused(tmp_path: Path) -> None:
    outside = {"kind": "openai", "url": "http://93.184.215.14/v1", "model": "m"}
    done = serve(tmp_path, config={"replicas": [outside]})
    assert done.returncode == 1
    assert "egress_allow" in done.stderr and "93.184.215.14" in done.stderr
    # Listed, it passes the check (and is only probed, never reached, in a dry run).
    allowed = serve(tmp_path, "--dry-run", config={"replicas": [outside],
                                                   "egress_allow": ["93.184.215.0/24"]})  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr


def test_dry_run_prints_the_vllm_command_lines(tmp_path: Path) -> None:
    config = {"replicas": [{
        "kind": "vllm", "model": "meta-llama/Llama-3.1-70B-Instruct", "count": 2,
        "tensor_parallel_size": 4, "gpu_memory_utilization": 0.92, "max_model_len": 8192,
        "served_model_name": "llama-70b", "extra_args": ["--kv-cache-dtype", "fp8"],
    }]}  # fmt: skip
    done = serve(tmp_path, "--dry-run", config=config)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    commands = [line for line in lines if "vllm serve" in line]
    assert len(commands) == 2
    first, second = commands
    for flag in ("--tensor-parallel-size 4", "--gpu-memory-utilization 0.92",
                 "--max-model-len 8192", "--enable-prefix-caching",
                 "--served-model-name llama-70b", "--kv-cache-dtype fp8",
                 "meta-llama/Llama-3.1-70B-Instruct"):  # fmt: skip
        assert flag in first and flag in second
    assert "CUDA_VISIBLE_DEVICES=0,1,2,3" in first and "CUDA_VISIBLE_DEVICES=4,5,6,7" in second
    assert not (tmp_path / "data").exists()  # a dry run starts and writes nothing


def test_vllm_that_is_not_installed_is_a_clear_start_error(tmp_path: Path) -> None:
    config = {"replicas": [{"kind": "vllm", "model": "m", "executable": "no-such-vllm"}]}
    done = serve(tmp_path, config=config)
    assert done.returncode == 1
    assert "no-such-vllm" in done.stderr and "Traceback" not in done.stderr


def test_a_gateway_joins_a_worker_started_elsewhere(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SOVLLM_DATA_DIR": str(tmp_path / "w"), "SOVLLM_ENGINE__THREADS": "1",
           "SOVLLM_WORKER_TOKEN": "s3cret-worker-token"}  # fmt: skip
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "sovllm", "worker", "--port", str(port)], env=env,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until_up(worker, f"http://127.0.0.1:{port}/health", log)
        # Its engine routes need the token.
        assert httpx.get(f"http://127.0.0.1:{port}/v1/engine/info").status_code == 401
        config = tmp_path / "sovllm.yaml"
        config.write_text(json.dumps({"replicas": [{"kind": "embedded", "name": "ward-b",
            "url": f"http://127.0.0.1:{port}", "api_key_env": "WARD_B_TOKEN"}]}))  # fmt: skip
        gw_env = {"WARD_B_TOKEN": "s3cret-worker-token"}
        with run_server(tmp_path / "gw", env=gw_env, args=("--config", str(config))) as srv:
            client = OpenAI(base_url=srv.base_url, api_key=srv.api_key, max_retries=0)
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
            )
            assert raw.headers["x-sovllm-replica"] == "ward-b"
            assert raw.parse().usage is not None
            # The worker's prefix cache shows through the pool: the same prompt again is cached
            # (one long enough for the engine to reuse: 32 tokens at least).
            long = [{"role": "user", "content": "Please summarise the ward's week. " * 6}]
            for _ in range(2):
                again = client.chat.completions.create(model=MODEL_ID, messages=long,  # type: ignore[arg-type]
                                                       max_tokens=4)  # fmt: skip
            assert again.usage is not None and again.usage.prompt_tokens_details is not None
            cached = again.usage.prompt_tokens_details.cached_tokens
            assert cached == again.usage.prompt_tokens - 2  # its last two computed again
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_a_worker_off_loopback_needs_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SOVLLM_WORKER_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "sovllm", "worker", "--host", "0.0.0.0", "--port", str(free_port())],
        env={**env, "SOVLLM_DATA_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "SOVLLM_WORKER_TOKEN" in done.stderr
