"""``python -m hybridstore.cli``: the ``hybridstore`` command."""

from . import main

main()
