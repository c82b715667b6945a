"""``python -m hybridstore``: the ``hybridstore`` command."""

from .cli import main

main()
