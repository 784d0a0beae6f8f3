"""cmsf's benchmark suite (pytest-benchmark). See bench/README.md for the commands.

A package so that the benchmark modules can share ``bench.harness`` and ``bench.reference``
without clashing with the module names under ``tests/``.
"""
