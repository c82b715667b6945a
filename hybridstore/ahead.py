"""A bulk batch's bodies, written by a thread of their own while the batch's rows commit.

Writing a body (a temp file, then its flush) and committing a row both wait mostly on the
kernel or inside SQLite, which release the GIL: a bulk ``add_many`` or import overlaps the
two instead of doing one after the other. The protocol is unchanged (``Journal.commit_many``
commits the batch's intents before the thread starts, and renames nothing before its rows
are committed); only the temp files are written earlier.
"""

from __future__ import annotations

import threading

from .files import Prepared, discard, prepare_many
from .spares import SparePool

__all__ = ["BodiesAhead"]


class BodiesAhead:
    """``files.prepare_many`` of a bulk batch, in a thread of its own, started before the
    batch's sidecar transaction: the temp files are written (and made durable) while the
    rows commit. Nothing is visible before ``publish_many``; a batch given up removes
    them (``discard``)."""

    #: False: the bodies are written at once, before the rows (the kill-point runner
    #: counts calls in a fixed order).
    IN_THREAD = True

    def __init__(
        self, files: list[tuple[str, str, bytes]], durable: bool, spares: SparePool | None
    ) -> None:
        self._prepared: Prepared | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(files, durable, spares), name="hybridstore-bodies"
        )
        if self.IN_THREAD:
            self._thread.start()
        else:
            self._run(files, durable, spares)

    def _run(
        self, files: list[tuple[str, str, bytes]], durable: bool, spares: SparePool | None
    ) -> None:
        try:
            self._prepared = prepare_many(files, durable=durable, spares=spares)
        except BaseException as exc:  # handed to the writer's thread by ``result``
            self._error = exc

    def result(self) -> Prepared:
        """The prepared bodies, once written; the error of the writing, if it failed."""
        self._join()
        if self._error is not None:
            raise self._error
        assert self._prepared is not None
        return self._prepared

    def discard(self) -> None:
        """The batch is given up: wait for the writing, then remove what it wrote."""
        self._join()
        if self._prepared is not None:
            discard(self._prepared)

    def _join(self) -> None:
        if self._thread.ident is not None:
            self._thread.join()
