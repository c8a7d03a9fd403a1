"""Errors the planner reports to the user as one clear line (never a stack trace)."""

from __future__ import annotations


class PlannerError(Exception):
    """Bad input that is not a CLI usage error: unknown names, unreadable files."""
