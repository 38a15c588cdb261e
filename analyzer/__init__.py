"""Metric dialects, the Prometheus adapter, the statistics and verdicts (see design.md)."""
