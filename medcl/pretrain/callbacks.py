"""Lightning plumbing for pretraining runs: atomic checkpoints, resumable RNG state, flattened
metrics, the loss-curve plot, the training-health check and the online probe."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medcl.atomic import atomic_path
from medcl.pretrain.run_dir import RunDir


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary sibling, fsync, then ``os.replace`` it into place.

    A kill at any moment leaves either the previous complete file or the new complete one.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class RunCheckpoints(L.Callback):
    """Refresh ``checkpoints/last.ckpt`` every ``every_n_steps`` steps and at each epoch end; keep
    ``epoch=NNNN.ckpt`` every ``every_n_epochs`` epochs."""

    def __init__(self, run: RunDir, every_n_steps: int = 0, every_n_epochs: int = 1):
        self.run, self.every_n_steps, self.every_n_epochs = run, every_n_steps, every_n_epochs

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            trainer.save_checkpoint(self.run.last_checkpoint, weights_only=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.run.last_checkpoint, weights_only=False)
        epoch = trainer.current_epoch + 1
        if self.every_n_epochs and epoch % self.every_n_epochs == 0:
            trainer.save_checkpoint(self.run.epoch_checkpoint(epoch), weights_only=False)


class RNGState(L.Callback):
    """Save and restore the python / numpy / torch RNG states in checkpoints (plain data only)."""

    def state_dict(self) -> dict[str, Any]:
        version, keys, gauss = random.getstate()
        np_state = np.random.get_state()
        return {
            "python": [version, list(keys), gauss],
            "numpy": [np_state[0], np_state[1].tolist(), *[float(x) if isinstance(x, float) else int(x)
                                                           for x in np_state[2:]]],
            "torch": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, keys, gauss = state["python"]
        random.setstate((version, tuple(keys), gauss))
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["torch"])


def flatten_metrics(run: RunDir) -> Path | None:
    """Merge the Lightning CSV logs into ``metrics.csv`` (one row per step / epoch entry).

    Rows logged twice (after a resume replays steps past the last checkpoint) keep the last value.
    """
    import pandas as pd

    files = sorted(run.logs_dir.rglob("metrics.csv"))
    if not files:
        return None
    df = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    if df.empty:
        return None
    pattern = df.notna().apply(lambda r: "".join("1" if v else "0" for v in r), axis=1)
    key = df["step"].astype(str) + ":" + pattern
    df = df[~key.duplicated(keep="last")].sort_values("step", kind="stable").reset_index(drop=True)
    with atomic_path(run.metrics_path) as tmp:
        df.to_csv(tmp, index=False)
    return run.metrics_path


def plot_loss(run: RunDir) -> Path | None:
    """Write ``loss_curve.png``: loss per step and per epoch from ``metrics.csv``."""
    if not run.metrics_path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(run.metrics_path)
    fig, ax = plt.subplots(figsize=(6, 4))
    if "train/loss_step" in df:
        s = df.dropna(subset=["train/loss_step"])
        ax.plot(s["step"], s["train/loss_step"], lw=0.8, alpha=0.6, label="step")
    if "train/loss_epoch" in df:
        e = df.dropna(subset=["train/loss_epoch"])
        ax.plot(e["step"], e["train/loss_epoch"], "o-", label="epoch mean")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    with atomic_path(run.loss_plot) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return run.loss_plot


class MetricsFile(L.Callback):
    """Keep ``metrics.csv`` at the top of the run dir up to date after every epoch."""

    def __init__(self, run: RunDir):
        self.run = run

    def _flush(self, trainer: L.Trainer) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, L.pytorch.loggers.CSVLogger):
                logger.save()
        if trainer.is_global_zero:
            flatten_metrics(self.run)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)


class TrainingHealth(L.Callback):
    """Feed each epoch's ``health/spread``, ``health/effective_rank`` and loss to a
    :class:`medcl.pretrain.health.HealthMonitor`, which warns when the run collapses."""

    def __init__(self, method: str, collapse_loss: float | None):
        from medcl.pretrain.health import HealthMonitor

        self.monitor = HealthMonitor(method, collapse_loss)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:  # the summary and the warning come from the first process
            return
        metrics = trainer.callback_metrics

        def value(key: str) -> float | None:
            v = metrics.get(key)
            return None if v is None else float(v)

        spread, rank = value("health/spread"), value("health/effective_rank")
        if spread is None or rank is None:
            return
        self.monitor.update(trainer.current_epoch, spread, rank, value("train/loss_epoch"))


class PlainTextProgress(L.Callback):
    """Training progress as plain lines (stdout not a terminal): one per epoch with the loss, the
    rate and the ETA, and one at most every ``every_s`` seconds inside long epochs."""

    def __init__(self, every_s: float = 30.0, stream: Any = None):
        from medcl.pretrain.progress import ProgressLines

        self.every_s = every_s
        self.lines = ProgressLines(stream=stream, unit="step")
        self._last = 0.0
        self._start_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.lines.start = self.lines.clock()  # a resumed run: rate and ETA from this session's steps
        self._start_step = trainer.global_step
        self._last = self.lines.clock()

    def _total(self, trainer: L.Trainer) -> int | None:
        steps = trainer.num_training_batches
        if not isinstance(steps, int) or trainer.max_epochs is None or trainer.max_epochs < 0:
            return None
        return steps * trainer.max_epochs - self._start_step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if not trainer.is_global_zero or self.lines.clock() - self._last < self.every_s:
            return
        self._last = self.lines.clock()
        self.lines.update(trainer.global_step - self._start_step, f"epoch {trainer.current_epoch + 1}",
                          self._total(trainer))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._last = self.lines.clock()
        loss = trainer.callback_metrics.get("train/loss_epoch")
        extra = "" if loss is None else f"loss {float(loss):.4f}"
        self.lines.update(trainer.global_step - self._start_step,
                          f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}", self._total(trainer), extra)


class OnlineProbe(L.Callback):
    """Every ``every_n_epochs`` epochs: fit a kNN or logistic probe on frozen encoder features of
    the training split and score it on the validation split; logs ``probe/<label>_<metric>``."""

    def __init__(self, cohort: Any, train_idx: np.ndarray, val_idx: np.ndarray, label: str, *,
                 every_n_epochs: int, kind: str = "knn", k: int = 5, cache: str = "auto",
                 cache_dir: str | None = None, batch_size: int = 32):
        self.cohort, self.label, self.kind, self.k = cohort, label, kind, k
        self.every_n_epochs, self.cache, self.batch_size = every_n_epochs, cache, batch_size
        self.cache_dir = cache_dir
        y = cohort.label(label)
        self.train_idx = np.asarray([i for i in train_idx if np.isfinite(y[i])])
        self.val_idx = np.asarray([i for i in val_idx if np.isfinite(y[i])])
        self.y = y
        self.continuous = cohort.label_classes(label) is None
        self._datasets: dict[str, Any] = {}

    def _features(self, module: L.LightningModule, part: str, idx: np.ndarray) -> np.ndarray:
        from medcl.data.datasets import ImageDataset
        from medcl.models.encode import encode_dataset

        if part not in self._datasets:
            self._datasets[part] = ImageDataset(self.cohort, idx, cache=self.cache, cache_dir=self.cache_dir)
        return encode_dataset(module, self._datasets[part], batch_size=self.batch_size,
                              device=module.device, progress=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs or len(self.train_idx) < 2 or len(self.val_idx) < 1:
            return
        from medcl.pretrain.probe_online import probe_score

        x_tr = self._features(pl_module, "train", self.train_idx)
        x_va = self._features(pl_module, "val", self.val_idx)
        name, value = probe_score(x_tr, self.y[self.train_idx], x_va, self.y[self.val_idx],
                                  kind=self.kind, k=self.k, continuous=self.continuous)
        pl_module.log(f"probe/{self.label}_{name}", value, on_step=False, on_epoch=True, sync_dist=False)
