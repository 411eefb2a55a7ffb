"""Benchmarks: run by hand (`python tests/bench/<name>.py`), never collected by pytest."""
