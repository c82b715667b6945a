"""pytest-benchmark suite for hybridstore (run explicitly: ``pytest benchmarks/ --benchmark-only``).

Never part of the default test run (``testpaths`` is ``tests``). See ``benchmarks/README.md``.
"""
