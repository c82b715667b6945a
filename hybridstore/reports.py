"""What ``reindex``, ``verify`` and ``repair`` return: plain dataclasses with ``to_dict``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Problem", "ReindexReport", "RepairReport", "VerifyReport"]


@dataclass(frozen=True)
class Problem:
    """One finding: which kind, the job id when known, the path, and why."""

    kind: str
    path: str
    reason: str
    job_id: str | None = None


@dataclass
class ReindexReport:
    """The outcome of rebuilding the sidecar from the files."""

    indexed: int = 0
    skipped: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Kinds of drift ``verify`` reports. Also reported, not drift: "foreign" entries, and
# "busy" jobs whose lock a writer held for the whole check (a write in flight, or a writer
# stopped mid-write): checked by the next run.
DRIFT_KINDS = (
    "missing",  # a valid job file without a row
    "stale",  # a row that differs from its file
    "orphaned",  # a row without a file
    "duplicate",  # a job in more than one status directory
    "unreadable",  # a job file that cannot be parsed as a valid job
    "intent",  # a write that did not finish (its process died)
    "temp",  # a temp file too old to belong to a write in flight
    "moved",  # a job file moved by hand into another status directory, not yet taken in
    "counts",  # the sidecar's job counts differ from its rows
)


@dataclass
class VerifyReport:
    """Differences between the files and the sidecar."""

    problems: list[Problem] = field(default_factory=list)
    jobs: int = 0

    @property
    def drift(self) -> list[Problem]:
        return [p for p in self.problems if p.kind in DRIFT_KINDS]

    @property
    def ok(self) -> bool:
        """True when files and sidecar agree (foreign entries do not count)."""
        return not self.drift

    def counts(self) -> dict[str, int]:
        found = {kind: 0 for kind in (*DRIFT_KINDS, "foreign", "busy")}
        for problem in self.problems:
            found[problem.kind] += 1
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "jobs": self.jobs,
            "counts": self.counts(),
            "problems": [asdict(p) for p in self.problems],
        }


@dataclass
class RepairReport:
    """What ``repair`` did: the drift it found and the actions taken."""

    found: VerifyReport
    actions: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    #: Jobs left alone because a writer held their lock throughout: repaired next time.
    busy: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "found": self.found.to_dict(),
            "actions": self.actions,
            "quarantined": self.quarantined,
            "busy": self.busy,
        }
