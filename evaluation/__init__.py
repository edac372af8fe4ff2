"""Measures shared by the build and the benchmarks (numpy only; imports nothing of the kit)."""
