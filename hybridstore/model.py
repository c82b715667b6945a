"""The job model: ``RemoteJob`` and ``JobStatus``, plus the id rule every backend enforces.

A job's JSON body (``RemoteJob.to_json``) is what the file backend writes and what every
backend can read back exactly: aware UTC timestamps, JSON-only option values.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from .errors import InvalidArgument, InvalidJobId

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "JobStatus",
    "RemoteJob",
    "as_utc",
    "parse_status",
    "resolve_now",
    "utcnow",
    "validate_job_id",
]

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# What every backend can store: retry counts are 32-bit (PostgreSQL INTEGER), versions and
# attempts 64-bit (SQLite INTEGER, PostgreSQL BIGINT). A body with more is refused.
MAX_RETRIES_LIMIT = 2**31 - 1
MAX_COUNTER = 2**63 - 1
# Priorities are 32-bit signed (PostgreSQL INTEGER).
MIN_PRIORITY = -(2**31)
MAX_PRIORITY = 2**31 - 1
# Option and result values nested deeper than this could not be parsed back safely.
MAX_JSON_DEPTH = 64


class JobStatus(StrEnum):
    """Where a job is in its life; each status is also the name of its directory."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed, timeout and cancelled."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.TIMEOUT, JobStatus.CANCELLED}
)
ACTIVE_STATUSES = frozenset({JobStatus.PENDING, JobStatus.PROCESSING})


def validate_job_id(job_id: object) -> str:
    """Return ``job_id`` if it is a valid job id, else raise ``InvalidJobId``.

    Valid ids fully match ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``: ASCII only, no path
    separator, no NUL, no newline, at most 128 bytes. They are safe as file names.
    """
    if type(job_id) is not str or JOB_ID_PATTERN.fullmatch(job_id) is None:
        raise InvalidJobId(job_id)
    return job_id


def parse_status(status: object) -> JobStatus:
    """Return ``status`` as a ``JobStatus``; ``InvalidArgument`` for anything else."""
    if isinstance(status, JobStatus):
        return status
    if isinstance(status, str):
        try:
            return JobStatus(status)
        except ValueError:
            pass
    shown = repr(status)[:60]
    names = ", ".join(s.value for s in JobStatus)
    raise InvalidArgument(f"unknown status {shown}: expected one of {names}")


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def resolve_now(now: datetime | None) -> datetime:
    """A caller's ``now=`` argument as aware UTC (naive means UTC); None means now."""
    return utcnow() if now is None else as_utc(now)


def as_utc(value: datetime) -> datetime:
    """``value`` as aware UTC; a naive datetime is read as UTC (as the older design wrote).

    ``ValueError`` if the instant has no UTC datetime (``0001-01-01T00:00:00+05:00``)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is out of range in UTC") from None


UTCDateTime = Annotated[datetime, AfterValidator(as_utc)]


_COUNTER_LIMITS = (
    ("version", MAX_COUNTER),
    ("attempt", MAX_COUNTER),
    ("retry_count", MAX_RETRIES_LIMIT),
    ("max_retries", MAX_RETRIES_LIMIT),
)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return value


# What every real job has: pydantic names the field when one is empty.
NonBlankStr = Annotated[str, AfterValidator(_not_blank)]


_SCALARS = (str, int, bool, type(None))
_WRITTEN_BY_US = {"written_by_us": True}


def _check_json_value(container: dict[Any, Any] | list[Any], depth: int = 1) -> None:
    """Refuse what JSON cannot carry exactly: NaN/inf, non-str keys, foreign types, and
    nesting deeper than ``MAX_JSON_DEPTH``. Scalars are checked inline: one call per
    container, not per value, because this runs on every body read from a file."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if type(container) is dict:
        for key in container:
            if type(key) is not str:
                raise ValueError(f"object key {key!r} is not a string")
        items: Any = container.values()
    else:
        items = container
    for item in items:
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is float:
            if not math.isfinite(item):
                raise ValueError("NaN and infinity are not JSON")
        elif kind is dict or kind is list:
            _check_json_value(item, depth + 1)
        else:
            raise ValueError(f"{kind.__name__} is not a JSON type")


class RemoteJob(BaseModel):
    """A conversion job handed to a remote worker.

    Every datetime is aware UTC (naive input is read as UTC). ``version`` is the number of
    successful saves of the stored job; ``attempt`` counts claims and fences leases.
    Backends return new ``RemoteJob`` objects and never modify the one passed in.
    """

    model_config = ConfigDict(validate_assignment=True, extra="ignore")

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    ingestion_task_id: NonBlankStr
    source_file_path: NonBlankStr
    content_type: NonBlankStr
    task_options: dict[str, Any] = Field(default_factory=dict)
    status: JobStatus = JobStatus.PENDING
    worker_id: str | None = None
    created_at: UTCDateTime = Field(default_factory=utcnow)
    started_at: UTCDateTime | None = None
    completed_at: UTCDateTime | None = None
    timeout_at: UTCDateTime | None = None
    error_message: str | None = None
    result_data: dict[str, Any] | None = None
    retry_count: int = Field(default=0, ge=0, le=MAX_RETRIES_LIMIT)
    max_retries: int = Field(default=3, ge=0, le=MAX_RETRIES_LIMIT)
    version: int = Field(default=0, ge=0, le=MAX_COUNTER)
    attempt: int = Field(default=0, ge=0, le=MAX_COUNTER)
    # Workers that need nothing else. A body written before these existed reads with the
    # defaults (missing keys take them).
    #: a pending job is not ready before this instant (delayed jobs, retry back-off)
    not_before: UTCDateTime | None = None
    #: higher is claimed first
    priority: int = Field(default=0, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    #: at most one pending or processing job holds a key at a time
    unique_key: NonBlankStr | None = None
    #: the holder's last reported progress, in [0, 1]
    progress: float | None = Field(default=None, ge=0.0, le=1.0)
    #: the holder's last progress message
    progress_message: str | None = None

    def __init__(self, **data: Any) -> None:
        # Raise the typed error itself (not a wrapped ValidationError) for a bad id.
        if "id" in data:
            validate_job_id(data["id"])
        super().__init__(**data)

    # Tell pydantic this __init__ only adds a check: model_validate / model_validate_json
    # then skip it (and a second validation pass) instead of routing through it.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return validate_job_id(value)

    @field_validator("task_options", "result_data")
    @classmethod
    def _json_only(
        cls, value: dict[str, Any] | None, info: ValidationInfo
    ) -> dict[str, Any] | None:
        # Bodies this library wrote (the sidecar's copies) were checked before writing.
        if value is not None and not (info.context and info.context.get("written_by_us")):
            _check_json_value(value)
        return value

    # -- derived ------------------------------------------------------------------------

    @property
    def is_expired(self) -> bool:
        """``timeout_at`` is set and in the past."""
        return self.timeout_at is not None and self.timeout_at < utcnow()

    @property
    def processing_duration(self) -> float:
        """Seconds from ``started_at`` to ``completed_at`` (or now); 0.0 if not started."""
        if self.started_at is None:
            return 0.0
        end = self.completed_at or utcnow()
        return (end - self.started_at).total_seconds()

    def can_retry(self) -> bool:
        """Retries remain and the job ended in failed or timeout."""
        return self.retry_count < self.max_retries and self.status in (
            JobStatus.FAILED,
            JobStatus.TIMEOUT,
        )

    # -- shapes ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The API shape of the older design: id under ``job_id``, ISO times, no result."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "job_id": self.id,
            "ingestion_task_id": self.ingestion_task_id,
            "source_file_path": self.source_file_path,
            "content_type": self.content_type,
            "task_options": self.task_options,
            "status": self.status.value,
            "worker_id": self.worker_id,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "error_message": self.error_message,
            "retry_count": self.retry_count,
            "max_retries": self.max_retries,
            "timeout_at": iso(self.timeout_at),
        }

    def check_storable(self) -> None:
        """``InvalidArgument`` naming the job and field if a counter grew past what every
        backend can store (a version or attempt incremented from the limit: a hostile
        body, in practice). Validation covers the rest; this catches what a
        ``model_copy(update=...)`` skipped it for."""
        for name, limit in _COUNTER_LIMITS:
            value = getattr(self, name)
            if value > limit:
                raise InvalidArgument(f"job {self.id!r}: {name} {value} is over {limit}")

    def check_json_values(self) -> None:
        """``InvalidArgument`` naming the job and field if ``task_options`` or
        ``result_data`` holds what JSON cannot carry exactly (a key that is not a string,
        NaN, a foreign type, nesting past ``MAX_JSON_DEPTH``). Validation checks them; this
        catches a dict changed in place since, or a job built without validation."""
        for name in ("task_options", "result_data"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                if type(value) is not dict:
                    raise ValueError(f"{type(value).__name__} is not a JSON object")
                _check_json_value(value)
            except ValueError as exc:
                raise InvalidArgument(f"job {self.id!r}: {name}: {exc}") from None

    def to_json(self) -> bytes:
        """The stored body: one UTF-8 JSON object, id under ``id``."""
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> RemoteJob:
        """Parse a body written by ``to_json`` (trusted input; see ``files.parse_job``)."""
        return cls.model_validate_json(data, context=_WRITTEN_BY_US)
