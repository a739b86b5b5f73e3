"""Pretraining engine: config, Lightning module, run directory, callbacks. Import submodules directly."""
