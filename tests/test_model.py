"""The model: defaults, UTC handling, id rule, derived members, exact JSON round trip."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hybridstore import InvalidJobId, JobStatus, RemoteJob
from hybridstore.model import utcnow, validate_job_id

BASE = {"ingestion_task_id": "t", "source_file_path": "/in/a.pdf", "content_type": "document"}


def test_defaults() -> None:
    job = RemoteJob(**BASE)
    assert uuid.UUID(job.id).version == 4
    assert job.status is JobStatus.PENDING
    assert job.task_options == {}
    assert job.retry_count == 0 and job.max_retries == 3
    assert job.version == 0 and job.attempt == 0
    assert job.created_at.tzinfo is UTC
    assert abs((utcnow() - job.created_at).total_seconds()) < 5
    for name in (
        "worker_id",
        "started_at",
        "completed_at",
        "timeout_at",
        "error_message",
        "result_data",
    ):
        assert getattr(job, name) is None


def test_naive_timestamps_are_utc_and_aware_ones_are_converted() -> None:
    job = RemoteJob.model_validate(
        {
            **BASE,
            "id": "a",
            "created_at": "2026-01-01T12:00:00",
            "timeout_at": "2026-01-01T14:00:00+02:00",
        }
    )
    assert job.created_at == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert job.created_at.tzinfo is UTC
    assert job.timeout_at == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert job.timeout_at.tzinfo is UTC


@pytest.mark.parametrize(
    "bad", ["", "../x", "a/b", "/abs", "a\x00", "job\n", ".x", "-x", "a" * 129, "ä", "a b", 5]
)
def test_invalid_ids_raise_invalid_job_id(bad: object) -> None:
    with pytest.raises(InvalidJobId):
        validate_job_id(bad)
    with pytest.raises(ValueError):  # InvalidJobId is a ValueError too
        RemoteJob(**BASE, id=bad)


def test_valid_ids() -> None:
    for good in ("a", "A.b_c-1", "9" * 128, "a..b"):
        assert RemoteJob(**BASE, id=good).id == good


def test_invalid_id_in_a_body_is_refused() -> None:
    with pytest.raises(ValidationError):
        RemoteJob.model_validate({**BASE, "id": "../x"})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1: "x"}, (1, 2), {"d": {"s": {1}}}])
def test_options_must_be_json(value: object) -> None:
    with pytest.raises(ValidationError):
        RemoteJob(**BASE, task_options={"x": value})


def test_negative_counters_are_refused() -> None:
    for field in ("retry_count", "max_retries", "version", "attempt"):
        with pytest.raises(ValidationError):
            RemoteJob(**BASE, **{field: -1})


@pytest.mark.parametrize("field", ["ingestion_task_id", "source_file_path", "content_type"])
@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_identifying_fields_are_refused_by_name(field: str, blank: str) -> None:
    with pytest.raises(ValidationError) as raised:
        RemoteJob(**{**BASE, field: blank})
    assert [error["loc"] for error in raised.value.errors()] == [(field,)]
    job = RemoteJob(**BASE)
    with pytest.raises(ValidationError, match=field):
        setattr(job, field, blank)
    assert RemoteJob(**{**BASE, field: " padded "}).model_dump()[field] == " padded "


def test_is_expired() -> None:
    assert not RemoteJob(**BASE).is_expired
    assert RemoteJob(**BASE, timeout_at=utcnow() - timedelta(seconds=1)).is_expired
    assert not RemoteJob(**BASE, timeout_at=utcnow() + timedelta(hours=1)).is_expired


def test_processing_duration() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert RemoteJob(**BASE).processing_duration == 0.0
    done = RemoteJob(**BASE, started_at=start, completed_at=start + timedelta(seconds=90))
    assert done.processing_duration == 90.0
    running = RemoteJob(**BASE, started_at=utcnow() - timedelta(seconds=10))
    assert 9 < running.processing_duration < 60


def test_can_retry() -> None:
    assert RemoteJob(**BASE, status="failed", retry_count=2).can_retry()
    assert RemoteJob(**BASE, status="timeout").can_retry()
    assert not RemoteJob(**BASE, status="failed", retry_count=3).can_retry()
    assert not RemoteJob(**BASE, status="pending").can_retry()
    assert not RemoteJob(**BASE, status="completed").can_retry()


def test_to_dict_is_the_api_shape() -> None:
    job = RemoteJob(
        **BASE,
        id="j1",
        result_data={"secret": 1},
        worker_id="w",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    shape = job.to_dict()
    assert shape["job_id"] == "j1" and "id" not in shape
    assert "result_data" not in shape
    assert shape["status"] == "pending"
    assert shape["created_at"] == "2026-01-01T00:00:00+00:00"
    assert shape["started_at"] is None
    json.dumps(shape)  # JSON-ready


def test_status_assignment_is_validated() -> None:
    job = RemoteJob(**BASE)
    job.status = "completed"  # type: ignore[assignment]
    assert job.status is JobStatus.COMPLETED
    with pytest.raises(ValidationError):
        job.status = "done"  # type: ignore[assignment]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
non_blank = st.text().filter(lambda text: text.strip() != "")
aware = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
)
jobs = st.builds(
    RemoteJob,
    id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", fullmatch=True),
    ingestion_task_id=non_blank,
    source_file_path=non_blank,
    content_type=non_blank,
    task_options=st.dictionaries(st.text(), json_values, max_size=5),
    status=st.sampled_from(JobStatus),
    worker_id=st.none() | st.text(),
    created_at=aware,
    started_at=st.none() | aware,
    completed_at=st.none() | aware,
    timeout_at=st.none() | aware,
    error_message=st.none() | st.text(),
    result_data=st.none() | st.dictionaries(st.text(), json_values, max_size=5),
    retry_count=st.integers(min_value=0, max_value=10**6),
    max_retries=st.integers(min_value=0, max_value=10**6),
    version=st.integers(min_value=0, max_value=2**62),
    attempt=st.integers(min_value=0, max_value=2**62),
)


@given(jobs)
def test_json_round_trip_is_exact(job: RemoteJob) -> None:
    body = job.to_json()
    again = RemoteJob.from_json(body)
    assert again == job
    assert again.to_json() == body
    assert json.loads(body)["id"] == job.id
