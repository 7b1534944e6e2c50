"""Benchmarks: scripts run as `python3 bench/NAME.py` (each puts the checkout on sys.path)."""
