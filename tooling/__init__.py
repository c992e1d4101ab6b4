"""Tooling for tests, benchmarks and scripts: starting the reference server and local Ray clusters from outside.

Not part of any distribution: it lives in the repository for the test suite, `make verify`, the benchmarks and the
load scripts, which import it from the repository root.
"""
