"""The benchmark scripts and their shared modules, importable as ``benchmarks.NAME``.

Not part of the installed ``invdiff`` package: run from the repository root, as a script
(``python benchmarks/harness.py``) or imported by the tests (``from benchmarks import datasets``).
A script run by path puts the repository root on ``sys.path`` in place of ``benchmarks/`` before
its package imports, so ``benchmarks/datasets.py`` never shadows an installed ``datasets``.
"""
