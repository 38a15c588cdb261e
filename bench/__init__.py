"""Benchmarks that print figures and write them to bench/RESULTS.md; never part of pass/fail."""
