"""Per-target benchmark reports: ``python -m benchmarks run`` (see benchmarks/README.md)."""
