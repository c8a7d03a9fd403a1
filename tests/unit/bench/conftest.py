from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.bench.stub import Stub, stub_server


@pytest.fixture(scope="module")
def stub() -> Iterator[Stub]:
    with stub_server() as s:
        yield s
