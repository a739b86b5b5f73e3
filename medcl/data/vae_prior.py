"""A generative prior: a small VAE (MONAI ``VarAutoEncoder``) whose latent means serve as an
``embedding`` attribute of the prior kernel.

The VAE is fitted on the un-augmented images of the training split (so val/test subjects never
shape it), then every subject of the cohort is encoded; the file is keyed by the manifest's
subject id column, ready for ``{name: vae, type: embedding, features: vae.csv}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medcl.errors import MedclInputError


class VAEOptions(BaseModel):
    """Training options of the VAE prior."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(20, ge=1)
    latent_dim: int = Field(16, ge=1)
    channels: list[int] = Field([8, 16, 32], description="encoder channels, one stride-2 stage each")
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    beta: float = Field(1.0, ge=0, description="weight of the KL term")
    fit_split: str = Field("train", description="'train' (default) or 'all' subjects to fit on")
    seed: int = 0


def vae_loss(recon, x, mu, logvar, beta: float = 1.0):
    """Mean squared reconstruction error + ``beta`` x KL(q(z|x) || N(0, I)), per sample."""
    import torch

    rec = torch.nn.functional.mse_loss(recon, x, reduction="sum") / x.shape[0]
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.shape[0]
    return rec + beta * kl


def fit_vae_prior(manifest: str | Path, out: str | Path, options: VAEOptions | None = None, *,
                  cache_dir: str | Path | None = None) -> Path:
    """Fit a VAE on the cohort's images and write per-subject latent means to ``out``.

    Images come from the shared preprocessed cache (root ``cache_dir``, default as for ``ImageDataset``).

    ``out`` ends in ``.csv``, ``.tsv`` or ``.parquet``; columns: the manifest's subject id column,
    then ``vae_0 .. vae_{k-1}``. Written atomically. Returns ``out``.
    """
    import pandas as pd
    import torch
    from monai.networks.nets import VarAutoEncoder
    from torch.utils.data import DataLoader

    from medcl.atomic import atomic_path
    from medcl.data.cohort import Cohort
    from medcl.data.datasets import ImageDataset

    options = options or VAEOptions()
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".tsv", ".parquet"):
        raise MedclInputError(f"--out {out}: the features file must end in .csv, .tsv or .parquet")
    if options.fit_split not in ("train", "all"):
        raise MedclInputError(f"fit_split must be 'train' or 'all', got {options.fit_split!r}")
    cohort = Cohort.from_manifest(manifest)
    m = cohort.manifest
    size = list(m.preprocessing.size)
    stages = len(options.channels)
    if any(s % (2**stages) for s in size):
        raise MedclInputError(f"VAE: image size {size} must be divisible by 2^{stages} (one per channel stage)")

    torch.manual_seed(options.seed)
    fit_idx = (np.flatnonzero(cohort.split() == "train") if options.fit_split == "train"
               else np.arange(len(cohort)))
    net = VarAutoEncoder(
        spatial_dims=m.image.spatial_dims, in_shape=(m.image.channels, *size), out_channels=m.image.channels,
        latent_size=options.latent_dim, channels=options.channels, strides=[2] * stages,
        use_sigmoid=False, use_mean_at_inference=True,
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=options.lr)
    gen = torch.Generator().manual_seed(options.seed)
    loader = DataLoader(ImageDataset(cohort, fit_idx, cache_dir=cache_dir), batch_size=options.batch_size, shuffle=True,
                        generator=gen)
    net.train()
    for _ in range(options.epochs):
        for batch in loader:
            x = batch["image"]
            recon, mu, logvar, _ = net(x)
            loss = vae_loss(recon, x, mu, logvar, options.beta)
            if not torch.isfinite(loss):
                raise RuntimeError("VAE loss is not finite; lower --lr")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    net.eval()
    means = []
    with torch.no_grad():
        images = ImageDataset(cohort, cache_dir=cache_dir)
        for batch in DataLoader(images, batch_size=options.batch_size, shuffle=False):
            means.append(net.encode_forward(batch["image"])[0])
    latent = torch.cat(means).numpy()
    table = pd.DataFrame(latent, columns=[f"vae_{j}" for j in range(latent.shape[1])])
    table.insert(0, m.subject_column, cohort.subject_ids)
    with atomic_path(out) as tmp:
        if suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")
    return out
