"""The classes of incidents and the reporting deadline each sets, counted from when the deployer
became aware: AI Act Art. 73(2)-(4) for serious incidents, GDPR Art. 33(1) for a personal data
breach, none for a security incident handled internally (ISO/IEC 27001 A.5.24-A.5.28)."""

from __future__ import annotations

from dataclasses import dataclass

DAY_S = 86400.0


class IncidentError(Exception):
    """A request about an incident that is wrong as given (a class, a status, a link)."""


@dataclass(frozen=True)
class Severity:
    name: str
    report_within_s: float | None
    """None: no report is due to an authority (the incident is handled internally)."""
    basis: str
    meaning: str


SEVERITIES: dict[str, Severity] = {
    s.name: s
    for s in (
        Severity(
            "serious",
            15 * DAY_S,
            "AI Act Art. 73(2)",
            "a serious incident (Art. 3(49)): report within 15 days of becoming aware",
        ),
        Severity(
            "death",
            10 * DAY_S,
            "AI Act Art. 73(4)",
            "a serious incident in which a person died: report within 10 days",
        ),
        Severity(
            "widespread",
            2 * DAY_S,
            "AI Act Art. 73(3)",
            "a widespread infringement (Art. 3(61)): report within 2 days",
        ),
        Severity(
            "critical-infrastructure",
            2 * DAY_S,
            "AI Act Art. 73(3)",
            "a serious, irreversible disruption of critical infrastructure (Art. 3(49)(b)): "
            "report within 2 days",
        ),
        Severity(
            "data-breach",
            3 * DAY_S,
            "GDPR Art. 33(1)",
            "a personal data breach: notify the supervisory authority within 72 hours",
        ),
        Severity(
            "security",
            None,
            "ISO/IEC 27001 A.5.24-A.5.28",
            "an information security incident with no report due to an authority",
        ),
    )
}


def deadline(severity: str, aware_at: float) -> float | None:
    """When the report is due for an incident of this class the deployer became aware of at
    `aware_at` (None: no report due); IncidentError for an unknown class."""
    found = SEVERITIES.get(severity)
    if found is None:
        raise IncidentError(
            f"no severity class {severity!r}; the classes are: {', '.join(SEVERITIES)}"
        )
    return None if found.report_within_s is None else aware_at + found.report_within_s
