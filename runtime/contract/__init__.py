"""The bundle contract: the typed manifest (``manifest.py``) and the format table (``formats.py``).

Plain types and validation: no OpenCV, no engine, nothing that runs a model."""
