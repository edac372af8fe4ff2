"""A bundle on this device: its files and hashes, its artifacts opened in an engine, the device
self-check, and the site calibration it may carry."""
