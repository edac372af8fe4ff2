"""Preprocessing: decoded pixels -> model input, on the CPU (``cpu.py``) or as a GPU graph (``gpu.py``)."""
