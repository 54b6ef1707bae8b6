"""Benchmarks behind `make bench` (`python -m benchmarks.run`): not part of the distmeta package."""
