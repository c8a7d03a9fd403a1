"""The real peers of benchmarks/engine_throughput.py: where they are, how they start, and the
quality questions every server answers.

scripts/peers/install.sh (`make peers`) installs them and writes their paths to
`peers.env` in the peers folder (`~/.cache/sovllm/peers`, or `$SOVLLM_PEERS_DIR`), the file
tests/peers/peers.py reads too. This module reads it without pytest.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import httpx

QUESTIONS = Path(__file__).resolve().parent.parent / "tests/data/quality_questions.json"
VLLM_KVCACHE_GB = "2"
VLLM_START_S = 400.0
"""vLLM compiles its graphs at every start on CPU: 90-160 s on two idle cores."""


def peers_dir() -> Path:
    return Path(os.environ.get("SOVLLM_PEERS_DIR") or Path.home() / ".cache/sovllm/peers")


def peer(name: str) -> str:
    """A path from peers.env; exits with a clear message when the peer is not installed."""
    env = peers_dir() / "peers.env"
    values: dict[str, str] = {}
    if env.exists():
        for line in env.read_text().splitlines():
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    value = values.get(name, "")
    if not value:
        sys.exit(
            f"{name} is not in {env}: install the peers first (`make peers`, or "
            "scripts/peers/install.sh; SOVLLM_PEERS_DIR names another peers folder)"
        )
    if not Path(value).exists():
        sys.exit(f"{name}={value} in {env} does not exist: run `make peers` again")
    return value


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def llama_cpp_python_argv(py: str, gguf: str, port: int, ctx: int, threads: int) -> list[str]:
    return [
        py, "-m", "llama_cpp.server", "--model", gguf, "--port", str(port),
        "--n_ctx", str(ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads),
        "--verbose", "False",
        # By default each new request aborts the one streaming: queue them instead.
        "--interrupt_requests", "False",
        # Its prompt cache, as sovllm has its prefix cache (no prompt here shares a prefix).
        "--cache", "True",
    ]  # fmt: skip


def llama_server_argv(
    binary: str, gguf: str, port: int, streams: int, context_per_slot: int, threads: int, alias: str
) -> list[str]:
    """`streams` slots with continuous batching, each with sovllm's context per slot."""
    return [
        binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "--alias", alias,
        "-np", str(streams), "-c", str(streams * context_per_slot), "--cont-batching",
        "-t", str(threads), "-tb", str(threads), "--metrics",
    ]  # fmt: skip


def vllm_argv(vllm: str, model_dir: str, port: int, served: str) -> list[str]:
    """The recipe of shared/research/peers-cpu.md: bf16 as converted, vLLM's default
    compilation (not `--enforce-eager`: eager starts faster but decodes slower), vLLM's prefix
    caching left at its default (on)."""
    return [
        vllm, "serve", model_dir, "--dtype", "bfloat16", "--max-model-len", "2048",
        "--served-model-name", served, "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


def vllm_env(bind: str | None) -> dict[str, str]:
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=VLLM_KVCACHE_GB)
    if bind is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = bind
    return env


_BINDING = re.compile(r"VLLM_CPU_OMP_THREADS_BIND=|core ids=|reserved_cpus=")


def vllm_binding(log: Path) -> list[str]:
    """What vLLM's log says about the cores its worker bound its OpenMP threads to (its
    "OpenMP thread binding info" lines: the setting, each rank's core ids, the reserved ones)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = [ln.rsplit("] ", 1)[-1] for ln in lines if _BINDING.search(ln)]  # no log prefix
    return [" ".join(ln.split())[:200] for ln in found][:6]


# -- quality -------------------------------------------------------------------------------


def load_questions() -> list[dict[str, Any]]:
    return list(json.loads(QUESTIONS.read_text())["questions"])


async def _ask(
    client: httpx.AsyncClient, url: str, model: str, question: str, headers: dict[str, str] | None
) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 48,
    }
    resp = await client.post(url, json=body, headers=headers)
    if resp.status_code != 200:
        return f"<HTTP {resp.status_code}: {resp.text[:100]}>"
    return str(resp.json()["choices"][0]["message"]["content"] or "")


def ask_all(
    base: str, model: str, headers: dict[str, str] | None, questions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every question, one at a time, greedy: the answer and whether it passes."""

    async def run() -> list[str]:
        async with httpx.AsyncClient(timeout=300) as client:
            url = base + "/v1/chat/completions"
            return [await _ask(client, url, model, q["q"], headers) for q in questions]

    answers = asyncio.run(run())
    return [
        {"q": q["q"], "answer": a, "pass": any(x in a.lower() for x in q["accept"])}
        for q, a in zip(questions, answers, strict=True)
    ]


def print_quality(quality: dict[str, list[dict[str, Any]]]) -> None:
    """Per system, how many pass; then the questions where the systems' verdicts differ."""
    print("\nquality: greedy chat answers to tests/data/quality_questions.json (48 tokens)")
    for name, answers in quality.items():
        passed = sum(a["pass"] for a in answers)
        print(f"  {name:<16} {passed}/{len(answers)} pass")
    names = list(quality)
    if len(names) < 2:
        return
    rows = [
        i
        for i in range(len(quality[names[0]]))
        if len({quality[n][i]["pass"] for n in names}) > 1
        or len({quality[n][i]["answer"].strip() for n in names}) > 1
    ]
    if not rows:
        print("  every system gave the same answers")
        return
    print(
        f"  {len(rows)} of {len(quality[names[0]])} questions where the answers differ "
        "(+ passes, - fails; first 60 characters):"
    )
    for i in rows:
        print(f"  {quality[names[0]][i]['q']}")
        for n in names:
            a = quality[n][i]
            text = " ".join(a["answer"].split())[:60]
            print(f"    {'+' if a['pass'] else '-'} {n:<16} {text!r}")
