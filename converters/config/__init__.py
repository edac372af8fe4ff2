"""The model config (``model.toml``): a user's trained network, its input, outputs, population and
evaluation data, parsed into typed values (:mod:`.model`), its data sources read
(:mod:`.data`), its network loaded (:mod:`.network`) and described for ``config --check``
(:mod:`.describe`)."""
