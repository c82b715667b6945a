"""What the HTTP server and client agree on: error codes, statuses, and their exceptions.

An error response is ``{"error": CODE, "message": TEXT, ...}`` with the fields the typed
exception carries (``job_id``, ``existing_id``, ``expected``, ``actual``...). The server
turns an exception into one (``error_body``); the client turns one back into the same
exception class with the same message (``error_from_body``). Imports neither FastAPI nor
httpx.
"""

from __future__ import annotations

from typing import Any

from . import errors

__all__ = ["CLAIM_WAIT_MAX", "error_body", "error_from_body"]

#: The longest a claim waits for work on the server (seconds); longer asks are cut to it.
CLAIM_WAIT_MAX = 30.0

# (class name, code, HTTP status, attributes carried). Order matters: subclasses first.
# DuplicateJob is looked up by name: it arrives with the worker features (issue 12).
_TABLE: list[tuple[str, str, int, tuple[str, ...]]] = [
    ("AccessDenied", "access_denied", 401, ("status",)),
    ("DuplicateJob", "duplicate_job", 409, ("job_id", "existing_id")),
    ("JobAlreadyExists", "job_already_exists", 409, ("job_id",)),
    ("JobNotFound", "job_not_found", 404, ("job_id",)),
    ("InvalidJobId", "invalid_job_id", 400, ("job_id",)),
    ("JobTooLarge", "job_too_large", 413, ("job_id",)),
    ("InvalidArgument", "invalid_argument", 400, ()),
    ("VersionConflict", "version_conflict", 409, ("job_id", "expected", "actual")),
    ("NotJobOwner", "not_job_owner", 409, ("job_id",)),
    ("InvalidTransition", "invalid_transition", 409, ("job_id", "action", "status")),
    ("LockTimeout", "lock_timeout", 503, ("job_id",)),
    ("StoreNotFound", "store_not_found", 503, ()),
    ("StorageError", "storage_error", 503, ()),
    ("CorruptJobFile", "corrupt_job_file", 500, ()),
    ("SchemaError", "schema_error", 500, ()),
    ("UnsupportedFileSystem", "unsupported_file_system", 500, ()),
    ("BackendUnavailable", "not_supported", 501, ()),
    ("HybridStoreError", "store_error", 500, ()),
]


def _classes() -> list[tuple[type[BaseException], str, int, tuple[str, ...]]]:
    found = []
    for name, code, status, attrs in _TABLE:
        cls = getattr(errors, name, None)
        if isinstance(cls, type):
            found.append((cls, code, status, attrs))
    return found


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and JSON body for a hybridstore error (``store_error``/500 for a
    HybridStoreError not in the table)."""
    for cls, code, status, attrs in _classes():
        if isinstance(exc, cls):
            body: dict[str, Any] = {"error": code, "message": str(exc)}
            for attr in attrs:
                value = getattr(exc, attr, None)
                if isinstance(value, (str, int, float)) or value is None:
                    body[attr] = value
            if code == "access_denied":
                status = int(getattr(exc, "status", 401))
            return status, body
    return 500, {"error": "internal_error", "message": "internal server error"}


# Codes the server sends without an exception class behind them.
_PLAIN: dict[str, tuple[str, dict[str, Any]]] = {
    "unauthorized": ("AccessDenied", {"status": 401}),
    "forbidden": ("AccessDenied", {"status": 403}),
    "malformed_json": ("InvalidArgument", {}),
    "invalid_body": ("InvalidArgument", {}),
    "request_too_large": ("JobTooLarge", {"job_id": None}),
    "not_found": ("BackendUnavailable", {}),
    "method_not_allowed": ("BackendUnavailable", {}),
}


def error_from_body(status: int, body: Any) -> errors.HybridStoreError:
    """The exception an error response stands for, with the server's message and the
    attributes it carried; an unknown code becomes a ``HybridStoreError``."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return errors.HybridStoreError(f"HTTP {status} from the server, without an error body")
    code = body["error"]
    message = str(body.get("message") or code)
    name: str | None = None
    attrs: dict[str, Any] = {}
    for cls_name, known, _status, carried in _TABLE:
        if known == code:
            name = cls_name
            attrs = {a: body.get(a) for a in carried}
            break
    if name is None and code in _PLAIN:
        name, attrs = _PLAIN[code]
    cls = getattr(errors, name, None) if name else None
    if name == "DuplicateJob" and cls is None:
        cls = errors.JobAlreadyExists  # an older client than the server's store
    if not isinstance(cls, type) or not issubclass(cls, errors.HybridStoreError):
        return errors.HybridStoreError(f"{message} (HTTP {status}, {code})")
    return _make(cls, message, attrs)


def _make(
    cls: type[errors.HybridStoreError], message: str, attrs: dict[str, Any]
) -> errors.HybridStoreError:
    # Built without the class's own __init__ (whose arguments differ per class, and which
    # would rebuild the message): the server's message is kept word for word.
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    if isinstance(exc, OSError):
        # OSError keeps (errno, strerror) in args for two arguments; one keeps the message.
        exc.args = (None, message) if issubclass(cls, errors.StorageError) else (message,)
    for key, value in attrs.items():
        setattr(exc, key, value)
    return exc
