"""Benchmarks that measure the pipeline on real data (run by Make targets, not by the test suite)."""
