"""Inference engines behind one small interface (``base.Engine``), looked up by name in ``registry``."""
