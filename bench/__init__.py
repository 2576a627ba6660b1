"""Benchmarks (`make bench`): ratios against baselines run in the same command."""
