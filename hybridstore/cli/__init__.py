"""The ``hybridstore`` command: a thin layer that parses, calls the library and prints.

Library errors become one line on stderr and exit code 1; usage errors exit 2 (click).
Anything shown that came from a job or an argument is escaped, so control characters and
escape sequences never reach the terminal raw.

``group`` holds the group, its ``Context`` and the error handling; each other module adds
one set of commands to it when imported here.
"""

from __future__ import annotations

import os
import sys

from . import db, demo, jobs, serve, store  # noqa: F401  (each registers its commands)
from .group import cli

__all__ = ["cli", "main"]


def main() -> None:
    """Entry point of the ``hybridstore`` console script."""
    try:
        cli(prog_name="hybridstore")
    except BrokenPipeError:
        # The reader went away (``hybridstore list | head``): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
