"""A start-up that fails for a reason sovllm names says that reason in one line.

Starlette answers an exception in the lifespan with `lifespan.startup.failed` carrying the
whole traceback, which uvicorn logs: eighty lines for "this model file cannot be loaded". This
outermost middleware replaces that message with the error's own sentence when the error is one
the operator is meant to read (a model llama.cpp cannot load); anything unexpected keeps its
traceback, which is what a bug report needs.
"""

from __future__ import annotations

import sys

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sovllm.engines.llamacpp.model import ModelLoadError

OPERATOR_ERRORS: tuple[type[BaseException], ...] = (ModelLoadError,)


class StartupFailure:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_plainly(message: Message) -> None:
            # Starlette sends this from inside its `except` block: the exception is at hand.
            failed = sys.exc_info()[1]
            if message["type"] == "lifespan.startup.failed" and isinstance(failed, OPERATOR_ERRORS):
                message = {**message, "message": f"sovllm: {failed}"}
            await send(message)

        await self.app(scope, receive, send_plainly)
