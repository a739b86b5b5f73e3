"""Typed access to a pretraining run directory: the one place that names its files.

Layout::

    RUN_DIR/
      config.yaml          resolved config (manifest path, method, fitted kernel, seed, encoder dims)
      split.csv            subject_id, patient_id, split (ids stay here, next to the user's data)
      spectrum.json        the prior kernel's batch spectrum (kernel DU; medcl.kernels.spectrum)
      versions.json        python, torch, monai, lightning, medcl, numpy, ... versions
      checkpoints/         last.ckpt (refreshed every N steps / each epoch) + epoch=NNNN.ckpt
      metrics.csv          one row per logged step / epoch (flattened Lightning CSV logs)
      tb/                  TensorBoard events
      logs/part-NN/        raw Lightning CSV logs, one folder per session (resumes add one)
      encoder.safetensors  encoder weights (before the projection head), written at the end
      encoder.json         the encoder document (medcl.models.saved): EncoderSpec, input spec
                           (channels, spatial dims, size, spacing, intensity), output size, method
      summary.json         what ran, how long, final loss, where things are
      loss_curve.png       training loss per step and per epoch
      probe/               probe results (probe/random-init/: the random-init baseline's)

The fitted prior kernel (bandwidths fitted on the training split) is stored once, as config.yaml's
``kernel``; runs before that also wrote it to ``kernel.json``, which is still read when config.yaml
has none. ``medcl compare`` adds ``embeddings.npz``, ``kernel_batch.npy`` (for the report),
``fingerprint.json`` and, for a run whose loss diverged, ``diverged.json``; :mod:`medcl.evaluate.artefacts`
lists what the report reads.

The folder is created when a run starts; every file in it is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from medcl.errors import MedclInputError


class RunDir:
    """Paths and loaders for one run directory (see module docstring for the layout)."""

    # file and folder names: spelled here only; other modules use these (or the paths below)
    CONFIG = "config.yaml"
    SPLIT = "split.csv"
    KERNEL = "kernel.json"  # written by older runs only (the kernel now lives in config.yaml)
    SPECTRUM = "spectrum.json"
    VERSIONS = "versions.json"
    CHECKPOINTS = "checkpoints"
    LAST_CHECKPOINT = "last.ckpt"
    METRICS = "metrics.csv"
    LOGS = "logs"
    TB = "tb"
    ENCODER_WEIGHTS = "encoder.safetensors"
    ENCODER_DOCUMENT = "encoder.json"
    SUMMARY = "summary.json"
    LOSS_PLOT = "loss_curve.png"
    PROBE = "probe"
    RANDOM_INIT_PROBE = "random-init"  # probe/random-init/: results of the random-init baseline
    EMBEDDINGS = "embeddings.npz"
    KERNEL_BATCH = "kernel_batch.npy"
    ATTRIBUTES = "attributes.json"
    FINGERPRINT = "fingerprint.json"
    DIVERGED = "diverged.json"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- paths ----------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def split_path(self) -> Path:
        return self.path / self.SPLIT

    @property
    def kernel_path(self) -> Path:
        return self.path / self.KERNEL

    @property
    def spectrum_path(self) -> Path:
        return self.path / self.SPECTRUM

    @property
    def versions_path(self) -> Path:
        return self.path / self.VERSIONS

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints_dir / self.LAST_CHECKPOINT

    def epoch_checkpoint(self, epoch: int) -> Path:
        """Periodic checkpoint written at the end of ``epoch`` (1-based)."""
        return self.checkpoints_dir / f"epoch={epoch:04d}.ckpt"

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def logs_dir(self) -> Path:
        return self.path / self.LOGS

    @property
    def tb_dir(self) -> Path:
        return self.path / self.TB

    @property
    def encoder_weights(self) -> Path:
        return self.path / self.ENCODER_WEIGHTS

    @property
    def encoder_json(self) -> Path:
        return self.path / self.ENCODER_DOCUMENT

    @property
    def summary_path(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def loss_plot(self) -> Path:
        return self.path / self.LOSS_PLOT

    @property
    def probe_dir(self) -> Path:
        return self.path / self.PROBE

    def probe_results_dir(self, random_init: bool = False) -> Path:
        """Where ``medcl probe`` writes its results: ``probe/`` (``probe/random-init/`` for the baseline)."""
        return self.probe_dir / self.RANDOM_INIT_PROBE if random_init else self.probe_dir

    @property
    def embeddings_path(self) -> Path:
        return self.path / self.EMBEDDINGS

    @property
    def kernel_batch_path(self) -> Path:
        return self.path / self.KERNEL_BATCH

    @property
    def fingerprint_path(self) -> Path:
        return self.path / self.FINGERPRINT

    @property
    def diverged_path(self) -> Path:
        return self.path / self.DIVERGED

    # -- state ----------------------------------------------------------------------------------
    def exists(self) -> bool:
        """True when this folder holds a run (a resolved config)."""
        return self.config_path.is_file()

    def is_finished(self) -> bool:
        """True when the run completed and exported its encoder."""
        return self.summary_path.is_file() and self.encoder_weights.is_file()

    def check_new(self) -> None:
        """Refuse to start a new run over an existing run or non-empty folder."""
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise MedclInputError(
                f"run directory {self.path} exists and is not empty; choose another --out "
                f"or continue it with --resume {self.path}"
            )

    def check_resumable(self) -> None:
        """Refuse ``--resume`` on a folder without a config or checkpoint."""
        if not self.exists():
            raise MedclInputError(f"--resume {self.path}: no config.yaml there, not a medcl run directory")
        if not self.last_checkpoint.is_file():
            raise MedclInputError(f"--resume {self.path}: no checkpoints/last.ckpt to resume from")

    # -- readers --------------------------------------------------------------------------------
    def config(self):
        """The resolved :class:`medcl.pretrain.config.PretrainConfig`."""
        from medcl.pretrain.config import parse_config, upgrade_saved_config

        data = upgrade_saved_config(yaml.safe_load(self.config_path.read_text()))
        return parse_config(data, source=str(self.config_path))

    def cache_settings(self) -> dict[str, Any]:
        """``{"cache": mode, "cache_dir": root or None}`` of the run's preprocessed images, so that
        probing and fine-tuning read the cache its pretraining filled (defaults without a config)."""
        data = yaml.safe_load(self.config_path.read_text()) if self.config_path.is_file() else {}
        data = data if isinstance(data, dict) else {}
        return {"cache": data.get("cache") or "auto", "cache_dir": data.get("cache_dir")}

    def kernel_dict(self) -> dict[str, Any] | None:
        """The fitted prior kernel as stored (``PriorKernel.to_dict()``), or None when the run used none.

        Read from config.yaml's ``kernel`` (the one store), else from an older run's ``kernel.json``.
        """
        data = yaml.safe_load(self.config_path.read_text()) if self.config_path.is_file() else None
        kernel = data.get("kernel") if isinstance(data, dict) else None
        if kernel is None and self.kernel_path.is_file():
            kernel = json.loads(self.kernel_path.read_text())
        return kernel

    def kernel(self):
        """The fitted :class:`medcl.kernels.PriorKernel`, or None when the run used none."""
        data = self.kernel_dict()
        if data is None:
            return None
        from medcl.kernels import PriorKernel

        return PriorKernel.from_dict(data)

    def pretraining_subject_ids(self) -> set[str]:
        """Ids of the subjects the encoder was pretrained on (``split == "train"`` in split.csv).

        Raises MedclInputError when split.csv is missing or has no ``subject_id`` / ``split`` column.
        """
        import csv

        if not self.split_path.is_file():
            raise MedclInputError(
                f"{self.split_path} missing: cannot tell which subjects pretrained this encoder"
            )
        with self.split_path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = {"subject_id", "split"} - set(reader.fieldnames or [])
            if missing:
                raise MedclInputError(f"{self.split_path}: column(s) {sorted(missing)} missing")
            return {row["subject_id"] for row in reader if row["split"] == "train"}

    def summary(self) -> dict[str, Any]:
        return json.loads(self.summary_path.read_text())

    def encoder_info(self) -> dict[str, Any]:
        """Contents of ``encoder.json`` (spec, input spec, output size)."""
        if not self.encoder_json.is_file():
            raise MedclInputError(f"{self.encoder_json} missing: the run has not finished (no exported encoder)")
        return json.loads(self.encoder_json.read_text())

    def metrics(self):
        """``metrics.csv`` as a pandas DataFrame."""
        import pandas as pd

        return pd.read_csv(self.metrics_path)

    def load_encoder(self, device: str = "cpu"):
        """Rebuild the encoder from ``encoder.json`` and load ``encoder.safetensors`` (no pickle),
        with :func:`medcl.models.saved.load_safetensors` (as ``medcl.load_encoder(run dir)``).

        Returns the :class:`medcl.models.Encoder` in eval mode, with ``.input_spec`` (dict) and
        ``.metadata`` (the document). Raises MedclInputError when the run has not exported it.
        """
        from medcl.models.saved import load_safetensors

        for path in (self.encoder_json, self.encoder_weights):
            if not path.is_file():
                raise MedclInputError(f"{path} missing: the run has not finished (no exported encoder)")
        return load_safetensors(self.encoder_weights, self.encoder_json).to(device)

