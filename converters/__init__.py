"""Training the reference model, export, conversion, quantization, checks and bundles."""
