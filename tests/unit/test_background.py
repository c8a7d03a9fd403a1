"""A request's left-behind work (gateway/state.py `Background`) is drained at shutdown."""

from __future__ import annotations

import asyncio

import pytest

from sovllm.gateway.state import Background


async def test_drain_waits_for_the_work_under_way() -> None:
    background = Background()
    release = asyncio.Event()
    done: list[str] = []

    async def settle() -> None:
        await release.wait()
        done.append("settled")

    background.add(settle())
    assert len(background) == 1
    drained = asyncio.create_task(background.drain(timeout_s=30))
    await asyncio.wait({drained}, timeout=0.05)  # drain is waiting: it cannot end yet
    assert not drained.done()
    release.set()
    assert await drained == 0
    assert done == ["settled"] and len(background) == 0


async def test_drain_gives_up_at_its_deadline_and_says_how_much(
    caplog: pytest.LogCaptureFixture,
) -> None:
    background = Background()
    never = asyncio.Event()
    background.add(never.wait())
    assert await background.drain(timeout_s=0.05) == 1
    assert "still running at shutdown" in caplog.text


async def test_a_failing_task_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    background = Background()

    async def broken() -> None:
        raise RuntimeError("database gone")

    background.add(broken())
    assert await background.drain(timeout_s=30) == 0
    assert "background work for a request failed" in caplog.text
