"""FinGate benchmarks (issue 5): `python -m bench`, `make bench`."""
