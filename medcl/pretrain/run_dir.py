"""Typed access to a pretraining run directory.

Layout::

    RUN_DIR/
      config.yaml          resolved config (manifest path, method, fitted kernel, seed, encoder dims)
      split.csv            subject_id, patient_id, split (ids stay here, next to the user's data)
      kernel.json          fitted PriorKernel (bandwidths fitted on the training split)
      spectrum.json        the prior kernel's batch spectrum (kernel DU; medcl.kernels.spectrum)
      versions.json        python, torch, monai, lightning, medcl, numpy, ... versions
      checkpoints/         last.ckpt (refreshed every N steps / each epoch) + epoch=NNNN.ckpt
      metrics.csv          one row per logged step / epoch (flattened Lightning CSV logs)
      tb/                  TensorBoard events
      logs/part-NN/        raw Lightning CSV logs, one folder per session (resumes add one)
      encoder.safetensors  encoder weights (before the projection head), written at the end
      encoder.json         EncoderSpec + input spec (channels, spatial dims, size, spacing, intensity)
      summary.json         what ran, how long, final loss, where things are
      loss_curve.png       training loss per step and per epoch
      probe/               online-probe results

The folder is created when a run starts; every file in it is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from medcl.errors import MedclInputError

ENCODER_FORMAT = "medcl-encoder"


class RunDir:
    """Paths and loaders for one run directory (see module docstring for the layout)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- paths ----------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def split_path(self) -> Path:
        return self.path / "split.csv"

    @property
    def kernel_path(self) -> Path:
        return self.path / "kernel.json"

    @property
    def spectrum_path(self) -> Path:
        return self.path / "spectrum.json"

    @property
    def versions_path(self) -> Path:
        return self.path / "versions.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints_dir / "last.ckpt"

    def epoch_checkpoint(self, epoch: int) -> Path:
        """Periodic checkpoint written at the end of ``epoch`` (1-based)."""
        return self.checkpoints_dir / f"epoch={epoch:04d}.ckpt"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def tb_dir(self) -> Path:
        return self.path / "tb"

    @property
    def encoder_weights(self) -> Path:
        return self.path / "encoder.safetensors"

    @property
    def encoder_json(self) -> Path:
        return self.path / "encoder.json"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def loss_plot(self) -> Path:
        return self.path / "loss_curve.png"

    @property
    def probe_dir(self) -> Path:
        return self.path / "probe"

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

    def kernel(self):
        """The fitted :class:`medcl.kernels.PriorKernel`, or None when the run used none."""
        if not self.kernel_path.is_file():
            return None
        from medcl.kernels import PriorKernel

        return PriorKernel.from_dict(json.loads(self.kernel_path.read_text()))

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
        """Rebuild the encoder from ``encoder.json`` and load ``encoder.safetensors`` (no pickle).

        Returns the :class:`medcl.models.Encoder` in eval mode, with ``.input_spec`` (dict).
        """
        from safetensors.torch import load_file

        from medcl.models.encoders import EncoderSpec, build_encoder

        info = self.encoder_info()
        encoder = build_encoder(EncoderSpec.model_validate(info["spec"]))
        encoder.load_state_dict(load_file(str(self.encoder_weights), device=device))
        encoder.input_spec = info["input"]
        return encoder.to(device).eval()
