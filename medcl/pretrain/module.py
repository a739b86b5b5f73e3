"""The Lightning module for contrastive pretraining: encoder + projection head + a medcl loss.

With the batched augmentation backend the loader delivers un-augmented images and
:meth:`PretrainModule.on_after_batch_transfer` makes the V views on the training device
(:meth:`PretrainModule.make_views`), each seeded by (seed, epoch, subject, view).
All V views of a batch go through the network in one forward pass ((n·V, C, *S)); the loss
module normalises the projections, and under DDP gathers them to compute the loss on the global
batch. Hyper-parameters saved in checkpoints are the resolved config as plain data, so
checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from medcl.models.encoders import EncoderSpec, ProjectionHead, build_encoder
from medcl.pretrain.config import PretrainConfig
from medcl.pretrain.health import effective_rank, projection_spread


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def loss_options(config: PretrainConfig, kernel: Any | None) -> dict[str, Any]:
    """Keyword options for ``medcl.losses.build_loss`` for the config's method (its record says how)."""
    return config.record.options(config, kernel)


class PretrainModule(L.LightningModule):
    """Encoder + head trained with the config's loss.

    The head is the projection MLP for the contrastive methods and, for ``supervised``, a linear
    layer on the pooled features giving the label's logits (or its standardised prediction). Either
    way it is part of this module only: the exported encoder is ``self.encoder``.

    Args:
        config: the resolved :class:`PretrainConfig` as a plain dict (encoder spatial dims and
            channels filled in, fitted ``kernel`` when the method uses one).
        steps_per_epoch: optimiser steps per epoch, for the warm-up / cosine schedule.
        gather: compute the loss on the global batch (set when the world size is above 1).
    """

    def __init__(self, config: dict[str, Any], steps_per_epoch: int = 1, gather: bool = False):
        super().__init__()
        self.save_hyperparameters({"config": config, "steps_per_epoch": int(steps_per_epoch),
                                   "gather": bool(gather)})
        self.config = PretrainConfig.model_validate(config)
        self.encoder = build_encoder(EncoderSpec.model_validate(self.config.encoder.model_dump()))
        self.loss_fn = self._build_loss(gather)
        proj = self.config.projection
        if self.config.record.linear_head:
            self.head: nn.Module = nn.Linear(self.encoder.out_features, self.loss_fn.outputs)
        else:
            self.head = ProjectionHead(self.encoder.out_features, proj.hidden, proj.dim, proj.batch_norm)
        self.steps_per_epoch = int(steps_per_epoch)
        self.batch_augmentation = self._build_augmentation()

    def _build_augmentation(self) -> Any | None:
        aug = self.config.augmentation
        dims = self.config.encoder.spatial_dims
        if aug.backend != "batched" or dims is None:
            return None
        from medcl.data.batch_augment import BatchAugmentation
        from medcl.data.transforms import preset_spec, resolve_preset

        spec = preset_spec(resolve_preset(aug.preset, dims), dims, strength=aug.strength)
        return BatchAugmentation(spec, seed=self.config.seed)

    def make_views(self, batch: dict[str, torch.Tensor], epoch: int) -> dict[str, torch.Tensor]:
        """A batch of un-augmented ``"image"`` (n, C, *S) -> the same batch with ``"views"``
        (n, V, C, *S) drawn by the batched backend for ``epoch`` (the image is dropped).
        A batch that already has views is returned unchanged."""
        if "views" in batch or "image" not in batch:
            return batch
        if self.batch_augmentation is None:
            raise RuntimeError("this module has no batched augmentation (config augmentation.backend is monai)")
        out = {k: v for k, v in batch.items() if k != "image"}
        with torch.no_grad():
            out["views"] = self.batch_augmentation(batch["image"], batch["index"], epoch, self.config.views)
        return out

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and "image" in batch and "views" not in batch and self.trainer.training:
            return self.make_views(batch, self.current_epoch)
        return batch

    def _build_loss(self, gather: bool) -> nn.Module:
        from medcl.losses import build_loss

        kernel = None
        if self.config.kernel is not None:
            from medcl.kernels import PriorKernel

            kernel = PriorKernel.from_dict(self.config.kernel)
        return build_loss(self.config.method, gather=gather, **loss_options(self.config, kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder features (the representation used downstream): (n, C, *S) -> (n, F)."""
        return self.encoder(x)

    def _features_and_head(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, V, C, *S) views -> encoder features (n, V, F) and head outputs (n, V, d), one forward pass."""
        n, v = views.shape[:2]
        features = self.encoder(views.reshape(n * v, *views.shape[2:]))
        return features.reshape(n, v, -1), self.head(features).reshape(n, v, -1)

    def project(self, views: torch.Tensor) -> torch.Tensor:
        """(n, V, C, *S) views -> (n, V, d) head outputs (projections, not normalised; logits for supervised)."""
        return self._features_and_head(views)[1]

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss of a collated multi-view batch; returns (loss, the embeddings the health check watches).

        Those are the projections (n, V, d), or for ``supervised`` the encoder features (n, V, F): its
        head's outputs are a handful of logits, not a representation.
        """
        features, z = self._features_and_head(batch["views"])
        labels = batch.get("labels")
        if labels is not None and labels.ndim == 2:
            labels = labels[:, 0]
        loss = self.loss_fn(z, attributes=batch.get("attributes"), missing=batch.get("missing"),
                            labels=labels)
        return loss, features if self.config.record.linear_head else z

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, z = self.compute_loss(batch)
        if not torch.isfinite(loss.detach()):
            raise NonFiniteLossError(
                f"the {self.config.method} loss is {loss.item()} at epoch {self.current_epoch}, step "
                f"{self.global_step}; stopped. Lower optimizer.lr, check the inputs (NaN in images?) "
                f"or use precision 32. The last good checkpoint is kept."
            )
        n = z.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False,
                 batch_size=n)
        if batch_idx % self.config.log_every_n_steps == 0:  # training health (medcl.pretrain.health):
            with torch.no_grad():  # epoch means over every n-th step (each costs an SVD and a sync)
                self.log("health/spread", projection_spread(z), on_step=False, on_epoch=True, batch_size=n)
                self.log("health/effective_rank", effective_rank(z), on_step=False, on_epoch=True,
                         batch_size=n)
        if self.config.record.subject_centroids:
            with torch.no_grad():
                centroid = nn.functional.normalize(z.detach().float(), dim=-1).mean(dim=1)
                self.log("train/centroid_norm", centroid.norm(dim=-1).mean(), on_step=True,
                         on_epoch=True, batch_size=n)
        return loss

    def on_train_epoch_start(self) -> None:
        if self.config.record.prior_kernel:  # kernel DU: plain DU during prior.warmup_epochs
            self.loss_fn.use_prior = self.current_epoch >= self.config.prior.warmup_epochs
        loader = self.trainer.train_dataloader
        sampler = getattr(loader, "batch_sampler", None)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.current_epoch)

    def configure_optimizers(self) -> dict[str, Any]:
        from medcl.pretrain.optim import WarmupCosine, build_optimizer, param_groups

        opt = self.config.optimizer
        optimizer = build_optimizer(
            opt.name, param_groups([self.encoder, self.head, self.loss_fn], opt.weight_decay),
            lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay,
            trust_coefficient=opt.trust_coefficient,
        )
        schedule = WarmupCosine(round(opt.warmup_epochs * self.steps_per_epoch),
                                self.config.epochs * self.steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
