"""The gateway's shared state (gateway/state.py), as the routes reach it: through the app."""

from __future__ import annotations

from fastapi import Request

from sovllm.gateway.state import AppState

__all__ = ["AppState", "app_state"]


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.sovllm
    return state
