"""Helpers shared by tests and benchmarks/reliability.py (which puts tests/ on sys.path)."""
