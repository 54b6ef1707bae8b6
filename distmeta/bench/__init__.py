"""Benchmarks behind `distmeta bench`."""
