"""Errors the planner reports to the user as one clear line (never a stack trace)."""

from __future__ import annotations


class PlannerError(Exception):
    """Bad input that is not a CLI usage error: unknown names, unreadable files."""


class ScenarioError(ValueError):
    """A question the planner cannot answer as put: a scenario or a sizing question whose values
    contradict each other or the model. `field` names the part that is wrong (an attribute,
    or `load.value`, `load.think`, `lengths`), so that a command line can name its flag;
    `detail` is the message (for `lengths`, without its subject)."""

    def __init__(self, field: str, detail: str, subject: str = "") -> None:
        super().__init__(f"{subject} {detail}".strip())
        self.field = field
        self.detail = detail
