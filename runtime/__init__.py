"""On-device runner: bundles, decoding, preprocessing, engines and folder triage.

The runtime never imports torch or textual: an edge box installs only what it runs.
"""
