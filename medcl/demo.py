"""The embedded demo: does metadata help? Every method, same encoder, budget and seeds.

``medcl demo`` generates the synthetic cohort (:mod:`medcl.data.synthetic`), trains a VAE prior,
pretrains one encoder per method and seed, probes diagnosis (ROC-AUC) and age (MAE) on the subjects
no pretraining saw (patient-level cross-validation), prints a comparison table with paired
differences against plain decoupled uniformity, and writes ``report.html``.

Python use::

    from medcl.demo import DemoSettings, run_demo
    result = run_demo("demo_run", DemoSettings.preset("quick"))
    print(result.table())
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medcl.atomic import atomic_path, write_json, write_text
from medcl.errors import MedclInputError
from medcl.yaml_files import validation_problems

BASELINE = "du"


@dataclass(frozen=True)
class DemoMethod:
    """One arm of the comparison: a name for the table and the config keys it sets."""

    name: str
    description: str
    config: dict[str, Any] | None  # None: no pretraining (random initialisation)


METHODS: tuple[DemoMethod, ...] = (
    DemoMethod("random_init", "randomly initialised encoder (lower bound)", None),
    DemoMethod("simclr", "SimCLR / InfoNCE", {"method": "simclr"}),
    DemoMethod("y_aware_age", "y-Aware InfoNCE on age", {"method": "y_aware", "attributes": ["age"]}),
    DemoMethod("du", "decoupled uniformity (no prior)", {"method": "du", "attributes": []}),
    DemoMethod("kdu_age", "kernel DU, prior: age", {"method": "kernel_du", "attributes": ["age"]}),
    DemoMethod(
        "kdu_scores",
        "kernel DU, prior: clinical scores",
        {"method": "kernel_du", "attributes": ["score1", "score2", "score3"]},
    ),
    DemoMethod("kdu_vae", "kernel DU, prior: VAE latent", {"method": "kernel_du", "attributes": ["vae"]}),
    DemoMethod(
        "supervised", "supervised on diagnosis (upper bound)", {"method": "supervised", "label": "diagnosis"}
    ),
)
METHOD_NAMES = tuple(m.name for m in METHODS)


class DemoSettings(BaseModel):
    """Size of the demo. The same budget applies to every method."""

    model_config = ConfigDict(extra="forbid")

    dims: Literal[2, 3] = 2
    subjects: int = Field(400, ge=40)
    size: int = Field(32, ge=16)
    seeds: int = Field(3, ge=1)
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(32, ge=4)
    widths: list[int] = [8, 16, 32, 64]
    first_stride: int = Field(1, ge=1, description="1 keeps full resolution: small lesions survive the stem")
    max_pool: bool = False
    lr: float = 3e-3
    views: int = Field(2, ge=2)
    vae_epochs: int = Field(15, ge=1)
    probe_folds: int = Field(5, ge=2)
    methods: list[str] = list(METHOD_NAMES)
    generator: dict[str, Any] = Field(default_factory=dict, description="SyntheticConfig overrides")

    @classmethod
    def preset(cls, name: Literal["quick", "default", "full"], **overrides: Any) -> DemoSettings:
        """``quick``: a 2-minute smoke run; ``default``: <= 10 minutes on 2 CPU cores; ``full``: more."""
        presets: dict[str, dict[str, Any]] = {
            "quick": {"subjects": 160, "seeds": 1, "epochs": 3, "batch_size": 32, "vae_epochs": 3,
                      "widths": [4, 8, 16, 32], "probe_folds": 3},
            "default": {},
            "full": {"subjects": 1000, "seeds": 5, "epochs": 30, "vae_epochs": 30, "size": 48},
        }
        if name not in presets:
            raise MedclInputError(f"demo preset {name!r} unknown; use one of {sorted(presets)}")
        try:
            return cls.model_validate({**presets[name], **overrides})
        except ValidationError as err:
            raise MedclInputError("; ".join(validation_problems(err, "demo settings"))) from None

    @model_validator(mode="after")
    def _check_methods(self) -> DemoSettings:
        unknown = [m for m in self.methods if m not in METHOD_NAMES]
        if unknown:
            raise ValueError(f"demo methods {unknown} unknown; choose from {list(METHOD_NAMES)}")
        if BASELINE not in self.methods:
            raise ValueError(f"the demo compares against {BASELINE!r}: keep it in methods")
        return self


@dataclass
class DemoResult:
    """Per-method, per-seed probe metrics and where everything was written."""

    out: Path
    settings: DemoSettings
    rows: list[dict[str, Any]] = field(default_factory=list)  # method, seed, auc, bacc, mae, r2, run_dir
    elapsed_s: float = 0.0

    def summary(self) -> list[dict[str, Any]]:
        """Mean and spread over seeds, and the paired difference to the baseline per seed."""
        out = []
        base = {r["seed"]: r for r in self.rows if r["method"] == BASELINE}
        for method in self.settings.methods:
            rows = [r for r in self.rows if r["method"] == method]
            if not rows:
                continue
            entry: dict[str, Any] = {"method": method, "seeds": len(rows)}
            for metric in ("auc", "bacc", "mae"):
                vals = np.array([r[metric] for r in rows], float)
                diffs = np.array([r[metric] - base[r["seed"]][metric] for r in rows if r["seed"] in base], float)
                entry[metric] = float(vals.mean())
                entry[f"{metric}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
                entry[f"d_{metric}"] = float(diffs.mean()) if len(diffs) else float("nan")
                entry[f"d_{metric}_sd"] = float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0
                entry[f"d_{metric}_wins"] = int((diffs > 0).sum()) if metric != "mae" else int((diffs < 0).sum())
            out.append(entry)
        return out

    def table(self) -> str:
        """The comparison as a plain-text table (what ``medcl demo`` prints)."""
        lines = [
            f"{'method':<13} {'diagnosis AUC':>15} {'ΔAUC vs DU (paired)':>22} {'wins':>5} "
            f"{'age MAE':>13} {'ΔMAE vs DU':>14}",
        ]
        for e in self.summary():
            n = e["seeds"]

            def sd(key: str, digits: int, n: int = n, e: dict = e) -> str:
                return f"± {e[key]:.{digits}f}" if n > 1 else " " * (digits + 4)  # no spread from one seed

            lines.append(
                f"{e['method']:<13} {e['auc']:>8.3f} {sd('auc_sd', 3)} "
                f"{_signed(e['d_auc']):>12} {sd('d_auc_sd', 3)}   {e['d_auc_wins']:>2}/{n} "
                f"{e['mae']:>6.2f} {sd('mae_sd', 2)} {_signed(e['d_mae'], 2):>8} {sd('d_mae_sd', 2)}"
            )
        if self.rows and max(r["seed"] for r in self.rows) == 0:
            lines.append("(one seed: no spread; use --seeds 3 or more to compare methods)")
        return "\n".join(lines)


def _signed(x: float, digits: int = 3) -> str:
    return "—" if not np.isfinite(x) else f"{x:+.{digits}f}"


# ------------------------------------------------------------------------------------- pieces


def _quiet_engine() -> None:
    """Lightning's info lines would drown the demo's own progress display."""
    import lightning.pytorch  # noqa: F401  (it sets its loggers' levels on import: override after)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", category=UserWarning, message=".*does not have many workers.*")


def _cohort(out: Path, s: DemoSettings) -> Path:
    from medcl.data.synthetic import SyntheticConfig, generate_cohort

    manifest = out / "cohort" / "manifest.yaml"
    stamp = out / "cohort.json"
    want = {"dims": s.dims, "subjects": s.subjects, "size": s.size, "generator": s.generator}
    if manifest.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == want:
        return manifest
    if (out / "cohort").exists():
        import shutil

        shutil.rmtree(out / "cohort")
    fmt = "nifti" if s.dims == 3 else "png"
    path = generate_cohort(out / "cohort", dims=s.dims, subjects=s.subjects, size=s.size, seed=0,
                           image_format=fmt, config=SyntheticConfig(**s.generator))
    write_json(stamp, want)
    return path


def _vae_manifest(manifest: Path, s: DemoSettings, out: Path) -> Path:
    """Train the VAE prior once and declare its latent means as an embedding attribute."""
    import yaml

    from medcl.prior.vae import VAEOptions, fit_vae_prior

    features = manifest.parent / "vae_latent.csv"
    if not features.is_file():
        fit_vae_prior(manifest, features, VAEOptions(epochs=s.vae_epochs, latent_dim=8, batch_size=32, seed=0))
    data = yaml.safe_load(manifest.read_text())
    data["attributes"] = [a for a in data["attributes"] if a["name"] != "vae"]
    data["attributes"].append({"name": "vae", "type": "embedding", "kernel": "cosine",
                               "features": features.name})
    path = manifest.parent / "manifest_vae.yaml"
    write_text(path, yaml.safe_dump(data, sort_keys=False))
    return path


def _encoder(s: DemoSettings) -> dict[str, Any]:
    """The one encoder every arm uses (random init included)."""
    return {"arch": "resnet18", "widths": s.widths, "first_stride": s.first_stride, "max_pool": s.max_pool}


def _pretrain_config(method: DemoMethod, manifest: Path, s: DemoSettings, seed: int) -> dict[str, Any]:
    return {
        "manifest": str(manifest),
        **(method.config or {}),
        "views": s.views,
        "encoder": _encoder(s),
        "projection": {"hidden": 4 * s.widths[-1], "dim": 2 * s.widths[-1]},
        "optimizer": {"name": "adamw", "lr": s.lr, "weight_decay": 1e-4, "warmup_epochs": 1},
        "epochs": s.epochs,
        "batch_size": s.batch_size,
        "num_workers": 0,
        "cache": "memory",
        "seed": seed,
        "log_every_n_steps": 2,
        "checkpoint": {"every_n_epochs": 0},
        "progress_bar": False,
    }


def _evaluate(encoder: Any, images: Any, cohort: Any, held_out: np.ndarray, s: DemoSettings,
              seed: int) -> tuple[dict, Any]:
    """Probe diagnosis and age on the held-out subjects; returns metrics and the features.

    ``images`` is the held-out subjects' ImageDataset, cached in memory once for every arm.
    """
    from medcl.train.features import encode_dataset
    from medcl.train.probe import probe_features

    feats = encode_dataset(encoder, images, batch_size=64, progress=False)
    groups = np.asarray(cohort.patient_ids, dtype=object)[held_out]
    diag = probe_features(feats, cohort.label("diagnosis")[held_out], groups, "binary",
                          n_folds=s.probe_folds, seed=seed, train_sizes=[25, 50, "all"])
    age = probe_features(feats, cohort.label("age")[held_out], groups, "continuous",
                         n_folds=s.probe_folds, seed=seed)
    metrics = {
        "auc": diag.metric("roc_auc").mean,
        "bacc": diag.metric("balanced_accuracy").mean,
        "mae": age.metric("mae").mean,
        "r2": age.metric("r2").mean,
    }
    return metrics, (feats, diag, age)


def _write_run_artefacts(run_path: Path, cohort: Any, held_out: np.ndarray, feats: np.ndarray,
                         diag: Any, age: Any, kernel: Any | None) -> None:
    """What the report shows: probe results, embeddings coloured by label/age/site, a batch kernel."""
    from medcl.report import write_embeddings, write_kernel_batch
    from medcl.train.probe import write_probe_result

    write_probe_result(diag, run_path / "probe", "diagnosis")
    write_probe_result(age, run_path / "probe", "age")
    site_values, _, _ = cohort.attribute_matrix(["site"])
    write_embeddings(run_path, feats, {
        "diagnosis": cohort.label("diagnosis")[held_out],
        "age": cohort.label("age")[held_out],
        "site": site_values[held_out, 0],
    })
    if kernel is not None:
        names = [t.name for t in kernel.terms]
        values, missing, _ = cohort.attribute_matrix(names)
        idx = held_out[:64]
        write_kernel_batch(run_path, np.asarray(kernel(values[idx], missing[idx])))


# ------------------------------------------------------------------------------------- the demo


def run_demo(
    out: str | Path,
    settings: DemoSettings | None = None,
    *,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> DemoResult:
    """Run the whole comparison into ``out``; see the module docstring.

    ``on_progress(description, done, total)`` is called before each step (for a progress bar).
    Finished runs in ``out`` are reused, so an interrupted demo picks up where it stopped.
    """
    import torch

    from medcl.data.cohort import Cohort
    from medcl.data.datasets import ImageDataset
    from medcl.models.encoders import EncoderSpec, build_encoder
    from medcl.train.config import parse_config
    from medcl.train.pretrain import pretrain
    from medcl.train.run_dir import RunDir

    s = settings or DemoSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _quiet_engine()
    t0 = time.perf_counter()
    methods = [m for m in METHODS if m.name in s.methods]
    runs = [(m, seed) for seed in range(s.seeds) for m in methods]
    total = len(runs) + 2
    progress = on_progress or (lambda *_: None)

    progress("generating the synthetic cohort", 0, total)
    manifest = _cohort(out, s)
    progress("training the VAE prior", 1, total)
    vae_manifest = _vae_manifest(manifest, s, out) if "kdu_vae" in s.methods else manifest
    cohort = Cohort.from_manifest(vae_manifest)
    split = np.asarray(cohort.split())
    held_out = np.flatnonzero(split != "train")
    images = ImageDataset(cohort, held_out, cache="memory")

    result = DemoResult(out=out, settings=s)
    for i, (method, seed) in enumerate(runs):
        progress(f"{method.name} (seed {seed})", i + 2, total)
        run_path = out / "runs" / method.name / f"seed{seed}"
        kernel = None
        if method.config is None:
            torch.manual_seed(seed)
            spec = EncoderSpec(**_encoder(s), spatial_dims=s.dims, in_channels=1)
            encoder = build_encoder(spec).eval()
            run_path.mkdir(parents=True, exist_ok=True)
            write_text(run_path / "config.yaml", f"method: random_init\nseed: {seed}\n")
        else:
            run = RunDir(run_path)
            if not run.is_finished():
                if run_path.exists():
                    import shutil

                    shutil.rmtree(run_path)
                config = parse_config(_pretrain_config(method, vae_manifest, s, seed), source=method.name)
                run = pretrain(config, run_path)
            encoder = run.load_encoder()
            kernel = run.kernel() if method.config.get("method") == "kernel_du" else None
        metrics, (feats, diag, age) = _evaluate(encoder, images, cohort, held_out, s, seed)
        _write_run_artefacts(run_path, cohort, held_out, feats, diag, age, kernel)
        result.rows.append({"method": method.name, "seed": seed, **metrics, "run_dir": str(run_path)})

    result.elapsed_s = time.perf_counter() - t0
    _write_results(result)
    progress("writing the report", total, total)
    return result


def _write_results(result: DemoResult) -> None:
    import pandas as pd

    from medcl.report import render_report

    out = result.out
    with atomic_path(out / "results.csv") as tmp:
        pd.DataFrame(result.rows).to_csv(tmp, index=False)
    write_json(out / "summary.json", {
        "settings": result.settings.model_dump(),
        "elapsed_s": round(result.elapsed_s, 1),
        "baseline": BASELINE,
        "methods": {m.name: m.description for m in METHODS if m.name in result.settings.methods},
        "summary": result.summary(),
    })
    write_text(out / "comparison.txt", result.table() + "\n")
    seed0 = [Path(r["run_dir"]) for r in result.rows if r["seed"] == 0]
    render_report(seed0, out / "report.html", title="medcl demo: does metadata help?")
