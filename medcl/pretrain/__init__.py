"""Pretraining: config -> run directory (checkpoints, metrics, the encoder).

- :mod:`~medcl.pretrain.config`: ``PretrainConfig`` (YAML, pydantic), ``load_config``.
- :mod:`~medcl.pretrain.loop`: ``pretrain(config, out)``, ``resume(run_dir)``.
- :mod:`~medcl.pretrain.module`: the Lightning module (views -> encoder -> head -> loss).
- :mod:`~medcl.pretrain.run_dir`: ``RunDir``, the layout of a run directory.
- :mod:`~medcl.pretrain.callbacks`, :mod:`~medcl.pretrain.health`, :mod:`~medcl.pretrain.probe_online`,
  :mod:`~medcl.pretrain.progress`: what a run records and shows while it trains.
- :mod:`~medcl.pretrain.loader`, :mod:`~medcl.pretrain.optim`, :mod:`~medcl.pretrain.launcher`:
  resumable batches, optimiser and schedule, multi-process launch.

Nothing is imported here, so ``import medcl.pretrain.config`` does not load Lightning.
"""
