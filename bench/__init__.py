"""FinGate benchmarks: `python -m bench`, `make bench`."""
