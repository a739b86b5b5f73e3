"""Run a pretraining job: config -> run directory with checkpoints, metrics and the encoder.

Python use::

    from medcl.pretrain.config import load_config
    from medcl.pretrain.loop import pretrain, resume

    run = pretrain(load_config("pipelines/synthetic_3d.yaml"), "runs/synth3d")
    encoder = run.load_encoder()
    run = resume("runs/synth3d")          # continues from checkpoints/last.ckpt

Why this size: preparation (cohort, kernel, spectrum), the trainer and the start / summary
files of one run are the pretraining job's one sequence; the pieces it calls live beside it
(module, callbacks, loader, run_dir).
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medcl.atomic import write_json, write_text
from medcl.errors import MedclInputError
from medcl.pretrain.config import PretrainConfig, parse_config, upgrade_saved_config
from medcl.pretrain.run_dir import RunDir


@dataclass
class PreparedRun:
    """A config resolved against its cohort: what both the run dir and the trainer need."""

    config: PretrainConfig  # encoder dims, attributes and fitted kernel filled in
    cohort: Any
    split: np.ndarray
    train_idx: np.ndarray
    kernel: Any | None


def package_versions() -> dict[str, str]:
    """Versions of python and the packages a run depends on."""
    from importlib import metadata

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("medcl", "torch", "monai", "lightning", "numpy", "pandas", "scikit-learn",
                "pydantic", "safetensors", "nibabel", "pydicom"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    import torch

    out["cuda"] = str(torch.version.cuda)
    return out


def prepare(config: PretrainConfig) -> PreparedRun:
    """Load the cohort, check the config against it, fit the prior kernel on the training split.

    Raises MedclInputError when an attribute or label is unknown or unusable for the method.
    """
    from medcl.data.cohort import Cohort

    cohort = Cohort.from_manifest(config.manifest)
    manifest = cohort.manifest
    split = np.asarray(cohort.split())
    train_idx = np.flatnonzero(split == "train")

    names = config.attributes if config.attributes is not None else list(cohort.attribute_names)
    unknown = [n for n in names if n not in cohort.attribute_names]
    if unknown:
        raise MedclInputError(
            f"attributes: {unknown} not in manifest {config.manifest}; known: {cohort.attribute_names}"
        )
    record = config.record
    if record.uses_attributes and not names:
        raise MedclInputError(f"method {config.method} needs attributes, but the manifest declares none")
    if record.single_attribute and len(names) > 1:
        raise MedclInputError(f"attributes: method {config.method} reads one attribute, got {names}; keep one "
                              f"(e.g. attributes: [{names[0]}])")
    if record.single_attribute and names and manifest.attribute(names[0]).type != "continuous":
        raise MedclInputError(f"method {config.method} uses the first attribute, {names[0]!r}, which must be "
                              "continuous")

    if config.label is not None:
        spec = manifest.label(config.label)
        if record.uses_label:
            if spec.type not in record.label_types:
                raise MedclInputError(f"label {config.label!r} is {spec.type}; method {config.method} needs a "
                                      f"{' or '.join(record.label_types)} label")
            y = cohort.label(config.label)
            train_idx = train_idx[np.isfinite(y[train_idx])]
    if config.probe.every_n_epochs and config.probe.label is not None:
        manifest.label(config.probe.label)

    kernel = None
    kernel_dict = config.kernel
    if kernel_dict is not None:  # resumed run: keep the bandwidths fitted at the start
        from medcl.kernels import PriorKernel

        kernel = PriorKernel.from_dict(kernel_dict)
    elif names and record.uses_attributes:  # no kernel (nor reference) for methods that ignore it
        values, missing, _ = cohort.attribute_matrix(names)
        kernel = cohort.prior_kernel(names, **prior_kernel_options(config))
        kernel = kernel.fit(values[train_idx], missing[train_idx])
        kernel_dict = kernel.to_dict()

    from medcl.data.transforms import preset_spec, resolve_preset

    dims = manifest.image.spatial_dims
    encoder = config.encoder.resolved(dims, manifest.image.channels)
    loss = config.loss.model_copy(update={"lam": config.lam,
                                          **record.resolved_options(config, cohort, names, train_idx)})
    aug = config.augmentation
    preset = resolve_preset(aug.preset, dims)
    preset_spec(preset, dims, strength=aug.strength)  # a preset made for other dims fails here
    resolved = config.model_copy(update={"encoder": encoder, "attributes": names, "kernel": kernel_dict,
                                         "loss": loss,
                                         "augmentation": aug.model_copy(update={"preset": preset})})
    resolved = parse_config(resolved.model_dump(mode="json"), source="resolved config")
    if len(train_idx) < config.batch_size:
        raise MedclInputError(
            f"batch_size {config.batch_size} is larger than the training split ({len(train_idx)} subjects)"
        )
    return PreparedRun(resolved, cohort, split, train_idx, kernel)


def prior_kernel_options(config: PretrainConfig) -> dict[str, Any]:
    """PriorKernel keyword options from the config: the instance term applies to kernel DU only."""
    prior = config.prior
    return {"combine": prior.combine, "bandwidth_scale": prior.bandwidth_scale, "bandwidth_rule": prior.bandwidth_rule,
            "instance_weight": prior.instance_weight if config.record.prior_kernel else 0.0}


def prior_spectrum(prep: PreparedRun, batches: int = 16) -> dict[str, Any] | None:
    """Batch spectrum of the run's prior kernel, and of each of its attributes alone (kernel DU only).

    Training batches at the run's (global) batch size and ``lam``; see :mod:`medcl.kernels.spectrum`.
    """
    from medcl.data.kernel_spectra import cohort_spectra
    from medcl.kernels.spectrum import batch_spectrum, spectrum_warning

    cfg = prep.config
    if not cfg.record.prior_kernel or prep.kernel is None:
        return None
    names = [t.name for t in prep.kernel.terms]
    values, missing, _ = prep.cohort.attribute_matrix(names)
    train = prep.train_idx
    run_row = batch_spectrum(prep.kernel, values[train], missing[train], batch_size=cfg.batch_size,
                             lam=cfg.lam, batches=batches, seed=cfg.seed, name="run kernel")
    single = {n: [n] for n in names} if len(names) > 1 else {}
    rows = cohort_spectra(prep.cohort, train, single, batch_size=cfg.batch_size, lam=cfg.lam,
                          combine=cfg.prior.combine, bandwidth_scale=cfg.prior.bandwidth_scale,
                          bandwidth_rule=cfg.prior.bandwidth_rule, batches=batches, seed=cfg.seed)
    return {"run": run_row.to_dict(), "attributes": [r.to_dict() for r in rows],
            "warning": spectrum_warning(run_row)}


def _write_start_files(run: RunDir, prep: PreparedRun) -> None:
    import pandas as pd

    run.path.mkdir(parents=True, exist_ok=True)
    run.checkpoints_dir.mkdir(exist_ok=True)
    write_text(run.config_path, prep.config.to_yaml())
    table = pd.DataFrame({"subject_id": prep.cohort.subject_ids, "patient_id": prep.cohort.patient_ids,
                          "split": prep.split})
    write_text(run.split_path, table.to_csv(index=False))
    spectrum = prior_spectrum(prep)
    if spectrum is not None:
        write_json(run.spectrum_path, spectrum)
        if spectrum["warning"]:
            logging.getLogger("medcl.pretrain").warning("warning: %s", spectrum["warning"])
    write_json(run.versions_path, package_versions())


def input_spec(manifest: Any) -> dict[str, Any]:
    """What an exported encoder expects as input (from the manifest's preprocessing)."""
    pre = manifest.preprocessing
    return {
        "channels": manifest.image.channels,
        "spatial_dims": manifest.image.spatial_dims,
        "size": list(pre.size),
        "spacing": None if pre.spacing is None else list(pre.spacing),
        "orientation": pre.orientation,
        "intensity": pre.intensity.model_dump(mode="json"),
    }


def export_run_encoder(run: RunDir, module: Any, manifest: Any) -> None:
    """Write ``encoder.safetensors`` + ``encoder.json`` (the encoder document: spec, input spec,
    method) atomically, with :func:`medcl.models.saved.save_encoder`."""
    from medcl.models.saved import encoder_document, save_encoder

    doc = encoder_document(module.encoder, input_spec(manifest), training={"method": module.config.method})
    save_encoder(module.encoder, doc, run.encoder_weights, run.encoder_json)


def build_trainer(config: PretrainConfig, run: RunDir, callbacks: list, steps_per_epoch: int = 1) -> Any:
    """The Lightning Trainer for a run (loggers into the run dir, atomic checkpoint IO)."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from medcl.pretrain.callbacks import AtomicCheckpointIO, PlainTextProgress
    from medcl.pretrain.progress import is_terminal

    # One CSV log folder per session (a resume starts a new part); metrics.csv merges them.
    part = len(list(run.logs_dir.glob("part-*"))) if run.logs_dir.is_dir() else 0
    loggers = [CSVLogger(save_dir=str(run.logs_dir), name="", version=f"part-{part:02d}",
                         flush_logs_every_n_steps=10),
               TensorBoardLogger(save_dir=str(run.path), name="tb", version="", default_hp_metric=False)]
    bar = config.progress_bar and is_terminal()
    if bar:
        callbacks = [*callbacks, TQDMProgressBar(refresh_rate=1)]
    elif config.progress_bar:  # piped or logged output: a plain line per epoch (rate, ETA)
        callbacks = [*callbacks, PlainTextProgress()]
    del LearningRateMonitor  # lr is logged by the module itself
    multi = config.multi_device
    strategy = config.strategy
    if strategy == "auto" and multi:
        strategy = "ddp"
    return L.Trainer(
        default_root_dir=str(run.path),
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=strategy,
        precision=config.precision,
        logger=loggers,
        callbacks=callbacks,
        enable_checkpointing=False,  # checkpoints come from RunCheckpoints
        enable_progress_bar=bar,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(config.log_every_n_steps, steps_per_epoch)),
        use_distributed_sampler=False,  # the loader shards global batches itself
        sync_batchnorm=multi and config.accelerator not in ("cpu",),
        deterministic=config.deterministic,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        plugins=[AtomicCheckpointIO()],
    )


def _run(config: PretrainConfig, run: RunDir, *, resuming: bool) -> RunDir:
    from medcl.pretrain.quiet import quiet_lightning

    with quiet_lightning():
        return _train(config, run, resuming=resuming)


def _train(config: PretrainConfig, run: RunDir, *, resuming: bool) -> RunDir:
    import lightning as L

    from medcl.data.datasets import MultiViewDataset, collate_multiview
    from medcl.pretrain.callbacks import (
        MetricsFile,
        OnlineProbe,
        RNGState,
        RunCheckpoints,
        TrainingHealth,
        plot_loss,
    )
    from medcl.pretrain.launcher import check_accelerator
    from medcl.pretrain.loader import EpochBatchSampler, ResumableLoader
    from medcl.pretrain.module import PretrainModule

    check_accelerator(config.accelerator, config.devices)
    L.seed_everything(config.seed, workers=True, verbose=False)
    prep = prepare(config)
    cfg = prep.config
    health = TrainingHealth(cfg.method, None)
    callbacks: list = [RunCheckpoints(run, cfg.checkpoint.every_n_steps, cfg.checkpoint.every_n_epochs),
                       RNGState(), health, MetricsFile(run)]
    if cfg.probe.every_n_epochs:
        callbacks.append(OnlineProbe(prep.cohort, prep.train_idx, np.flatnonzero(prep.split == "val"),
                                     cfg.probe.label, every_n_epochs=cfg.probe.every_n_epochs,
                                     kind=cfg.probe.kind, k=cfg.probe.k, cache=cfg.cache,
                                     cache_dir=cfg.cache_dir))
    trainer = build_trainer(cfg, run, callbacks, len(prep.train_idx) // cfg.batch_size)
    if trainer.is_global_zero and not resuming:
        _write_start_files(run, prep)

    world = trainer.world_size
    if cfg.batch_size % world:
        raise MedclInputError(f"batch_size {cfg.batch_size} must be divisible by the {world} devices")
    labels = [cfg.label] if cfg.label else None
    aug = cfg.augmentation
    dataset = MultiViewDataset(
        prep.cohort, prep.train_idx, views=cfg.views, augmentation=aug.preset, cache=cfg.cache,
        cache_dir=cfg.cache_dir, seed=cfg.seed,
        attribute_names=cfg.attributes or None, label_names=labels,
        augmentation_strength=aug.strength, backend=aug.backend,
    )
    sampler = EpochBatchSampler(len(prep.train_idx), cfg.batch_size, seed=cfg.seed,
                                rank=trainer.global_rank, world_size=world)
    loader = ResumableLoader(dataset, sampler, num_workers=cfg.num_workers, collate_fn=collate_multiview,
                             pin_memory=trainer.accelerator.__class__.__name__ == "CUDAAccelerator")
    module = PretrainModule(cfg.model_dump(mode="json"), steps_per_epoch=len(sampler), gather=world > 1)
    health.monitor.collapse_loss = module.loss_fn.collapse_value(cfg.batch_size, cfg.views)

    start = time.perf_counter()
    ckpt = str(run.last_checkpoint) if resuming else None
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt, weights_only=True)
    elapsed = time.perf_counter() - start
    if not trainer.is_global_zero:
        return run
    if trainer.interrupted:
        raise KeyboardInterrupt
    export_run_encoder(run, module, prep.cohort.manifest)
    plot_loss(run)
    summary = _summary(cfg, run, prep, trainer, elapsed, len(sampler))
    summary["health"] = health.monitor.verdict().to_dict()
    write_json(run.summary_path, summary)
    return run


def _summary(cfg: PretrainConfig, run: RunDir, prep: PreparedRun, trainer: Any, elapsed: float,
             steps_per_epoch: int) -> dict[str, Any]:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    images = steps_per_epoch * cfg.batch_size * cfg.views * max(trainer.current_epoch, 1)
    return {
        "method": cfg.method,
        "manifest": cfg.manifest,
        "attributes": cfg.attributes,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "train_subjects": len(prep.train_idx),
        "final_loss": metrics.get("train/loss_epoch"),
        "prior_spectrum": json.loads(run.spectrum_path.read_text()) if run.spectrum_path.is_file() else None,
        "metrics": metrics,
        "wall_time_s": round(elapsed, 2),
        "images_per_s_this_session": round(images / elapsed, 2) if elapsed > 0 else None,
        "encoder": {"arch": cfg.encoder.arch, "out_features": json.loads(run.encoder_json.read_text())[
            "out_features"]},
        "files": {
            "config": run.config_path.name, "checkpoint": str(run.last_checkpoint.relative_to(run.path)),
            "encoder": run.encoder_weights.name, "metrics": run.metrics_path.name,
            "tensorboard": run.tb_dir.name, "loss_curve": run.loss_plot.name,
        },
    }


def pretrain(config: PretrainConfig, out: str | Path) -> RunDir:
    """Train a new run into ``out`` (must not exist or be empty); returns its :class:`RunDir`.

    Raises MedclInputError on bad config / cohort, :class:`medcl.pretrain.module.NonFiniteLossError`
    when the loss diverges (the last good checkpoint stays in ``out/checkpoints``).
    """
    from medcl.pretrain.launcher import launch_info

    run = RunDir(out)
    if launch_info().is_first:  # the other processes find the folder the first one created
        run.check_new()
    return _run(config, run, resuming=False)


def resume(run_dir: str | Path, overrides: list[str] | None = None) -> RunDir:
    """Continue a run from ``checkpoints/last.ckpt`` with its resolved config (kernel, split, seed).

    ``overrides`` (``key=value``) may change e.g. ``epochs`` or ``num_workers``.
    """
    import yaml

    run = RunDir(run_dir)
    run.check_resumable()
    data = upgrade_saved_config(yaml.safe_load(run.config_path.read_text()))
    config = parse_config(data, source=str(run.config_path), overrides=overrides)
    return _run(config, run, resuming=True)
