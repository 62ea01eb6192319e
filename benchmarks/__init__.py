"""Benchmarks: scripts run as files (python benchmarks/NAME.py), over one harness (benchmarks/harness.py)."""
