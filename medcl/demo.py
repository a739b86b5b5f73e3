"""The embedded demo: does metadata help? Every method, same encoder, budget and seeds.

``medcl demo`` generates the synthetic cohort (:mod:`medcl.data.synthetic`), trains a VAE prior,
then runs the comparison engine of ``medcl compare`` (:mod:`medcl.evaluate.compare`) on it: one encoder per
method and seed, diagnosis (ROC-AUC) and age (MAE) probed on the subjects no pretraining saw
(patient-level cross-validation), paired differences against plain decoupled uniformity with 95%
intervals over seeds, ``report.html``. Age is both a prior (kdu_age, y_aware_age) and a probed
label, so those arms carry the † mark on age.

Everything in ``--out`` is reused only when it was made with the same settings: the cohort (keyed
by its generator settings), the VAE latent (by its options and the cohort's content) and every run
(by the fingerprint of its resolved config, cohort and medcl version; see :mod:`medcl.evaluate.compare`).

Python use::

    from medcl.demo import DemoSettings, run_demo
    result = run_demo("demo_run", DemoSettings.preset("quick"))
    print(result.table())
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medcl.atomic import write_json, write_text
from medcl.errors import MedclInputError
from medcl.evaluate.compare import Arm, CompareSettings, Comparison, cohort_digest, run_comparison
from medcl.report.comparison import render_comparison
from medcl.yaml_files import validation_problems

BASELINE = "du"
LABELS = ("diagnosis", "age")
VAE_STAMP = "vae_latent.json"

ARMS: tuple[Arm, ...] = (
    Arm("random_init", "random_init", description="randomly initialised encoder (lower bound)"),
    Arm("simclr", "simclr", description="SimCLR / InfoNCE"),
    Arm("y_aware_age", "y_aware", attributes=("age",), description="y-Aware InfoNCE on age"),
    Arm("du", "du", description="decoupled uniformity (no prior)"),
    Arm("kdu_age", "kernel_du", attributes=("age",), description="kernel DU, prior: age"),
    Arm("kdu_scores", "kernel_du", attributes=("score1", "score2", "score3"),
        description="kernel DU, prior: clinical scores"),
    Arm("kdu_vae", "kernel_du", attributes=("vae",), description="kernel DU, prior: VAE latent"),
    Arm("supervised", "supervised", label="diagnosis",
        description="cross-entropy on diagnosis (supervised upper bound)"),
    Arm("supcon", "supcon", label="diagnosis", description="SupCon on diagnosis (with its instance mix)"),
)
ARM_NAMES = tuple(m.name for m in ARMS)
DEFAULT_ARMS = tuple(name for name in ARM_NAMES if name != "supcon")
"""The demo's arms unless ``methods`` says otherwise (SupCon on request: it costs a run per seed)."""


class DemoSettings(BaseModel):
    """Size of the demo. The same budget applies to every method."""

    model_config = ConfigDict(extra="forbid")

    dims: Literal[2, 3] = 2
    subjects: int = Field(400, ge=40)
    size: int = Field(32, ge=16)
    seeds: int = Field(3, ge=1)
    epochs: int | None = Field(
        None, ge=1, description="pretraining epochs; None: 60 in 2D (resnet10, runs side by side: less time than 24 "
        "epochs of resnet18 on two threads, which left about one DU run in ten without the lesion; "
        "docs/reproducibility.md), 24 in 3D")
    arch: Literal["resnet10", "resnet18"] | None = Field(
        None, description="encoder; None: resnet10 in 2D (docs/reproducibility.md), resnet18 in 3D")
    batch_size: int = Field(32, ge=4)
    widths: list[int] = [8, 16, 32, 64]
    first_stride: int = Field(1, ge=1, description="1 keeps full resolution: small lesions survive the stem")
    max_pool: bool = False
    lr: float = Field(6e-3, gt=0, description="AdamW peak rate; at 3e-3 the 24 epochs were too short and DU "
                      "found the lesion on some seeds only (held-out AUC .792 +- .117 over 8 seeds, .854 +- .10 over "
                      "10 at 6e-3; docs/reproducibility.md)")
    views: int = Field(2, ge=2)
    augmentation_strength: float | None = Field(
        None, ge=0, description="scales every augmentation magnitude; None: 0.5 in 2D (at 1.0 the xray2d views cost "
        "DU about 8 held-out AUC points on the small 32^2 demo images), 0.25 in 3D (at 0.5 the 32^3 views cost "
        "SimCLR about 18 points and DU about 11; docs/baselines.md)")
    augmentation_backend: Literal["monai", "batched"] = "batched"
    vae_epochs: int = Field(15, ge=1)
    probe_folds: int = Field(5, ge=2)
    probe_repeats: int = Field(3, ge=1, description="fold draws of the probe CV, averaged")
    jobs: int | Literal["auto"] = Field(
        "auto", description="runs pretrained side by side; auto: one per CPU core (at most 8), 1 on a GPU "
        "(medcl.evaluate.compare.parallel)")
    methods: list[str] = list(DEFAULT_ARMS)
    generator: dict[str, Any] = Field(default_factory=dict, description="SyntheticConfig overrides")

    @classmethod
    def preset(cls, name: Literal["quick", "default", "full"], **overrides: Any) -> DemoSettings:
        """``quick``: a smoke run of a few minutes; ``default``: about 5.5 minutes on 2 CPU cores; ``full``: more."""
        presets: dict[str, dict[str, Any]] = {
            "quick": {"subjects": 160, "seeds": 1, "epochs": 3, "batch_size": 32, "vae_epochs": 3,
                      "widths": [4, 8, 16, 32], "probe_folds": 3, "probe_repeats": 1},
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
        unknown = [m for m in self.methods if m not in ARM_NAMES]
        if unknown:
            raise ValueError(f"demo methods {unknown} unknown; choose from {list(ARM_NAMES)}")
        if BASELINE not in self.methods:
            raise ValueError(f"the demo compares against {BASELINE!r}: keep it in methods")
        return self

    @model_validator(mode="after")
    def _per_dimension_recipe(self) -> DemoSettings:
        """Fill ``arch``, ``epochs`` and ``augmentation_strength`` left unset from the image dimension
        (measured per dimension)."""
        if self.arch is None:
            self.arch = "resnet10" if self.dims == 2 else "resnet18"
        if self.epochs is None:
            self.epochs = 60 if self.dims == 2 else 24
        if self.augmentation_strength is None:
            self.augmentation_strength = 0.5 if self.dims == 2 else 0.25
        return self


# ------------------------------------------------------------------------------------- pieces


def demo_cohort(out: Path, s: DemoSettings) -> Path:
    """The synthetic cohort in ``out/cohort``, regenerated whenever its generator settings change."""
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


def vae_options(s: DemoSettings) -> Any:
    """The VAE prior's training options for these demo settings."""
    from medcl.data.vae_prior import VAEOptions

    return VAEOptions(epochs=s.vae_epochs, latent_dim=8, batch_size=32, seed=0)


def _vae_manifest(manifest: Path, s: DemoSettings, cache_dir: Path) -> Path:
    """Train the VAE prior (or reuse it when made with the same options on the same cohort) and
    declare its latent means as an embedding attribute, in ``manifest_vae.yaml``."""
    import yaml

    from medcl.data.cohort import Cohort
    from medcl.data.vae_prior import fit_vae_prior

    features = manifest.parent / "vae_latent.csv"
    stamp = manifest.parent / VAE_STAMP
    options = vae_options(s)
    want = {"options": options.model_dump(mode="json"),
            "cohort_sha256": cohort_digest(Cohort.from_manifest(manifest))}
    have = json.loads(stamp.read_text()) if stamp.is_file() else None
    if not features.is_file() or have != want:
        stamp.unlink(missing_ok=True)
        fit_vae_prior(manifest, features, options, cache_dir=cache_dir)
        write_json(stamp, want)
    data = yaml.safe_load(manifest.read_text())
    data["attributes"] = [a for a in data["attributes"] if a["name"] != "vae"]
    data["attributes"].append({"name": "vae", "type": "embedding", "kernel": "cosine",
                               "features": features.name})
    path = manifest.parent / "manifest_vae.yaml"
    write_text(path, yaml.safe_dump(data, sort_keys=False))
    return path


def base_config(manifest: Path, s: DemoSettings, cache_dir: Path | None = None) -> Any:
    """The one pretraining config every arm starts from (the engine changes method and prior only).

    ``cache_dir``: root of the preprocessed images (the demo keeps them in its output folder)."""
    from medcl.pretrain.config import parse_config

    return parse_config({
        "manifest": str(manifest),
        "method": "du",
        "attributes": [],
        "views": s.views,
        "augmentation": {"preset": "auto", "backend": s.augmentation_backend, "strength": s.augmentation_strength},
        "encoder": {"arch": s.arch, "widths": s.widths, "first_stride": s.first_stride,
                    "max_pool": s.max_pool},
        "projection": {"hidden": 4 * s.widths[-1], "dim": 2 * s.widths[-1]},
        "optimizer": {"name": "adamw", "lr": s.lr, "weight_decay": 1e-4, "warmup_epochs": 1},
        "epochs": s.epochs,
        "batch_size": s.batch_size,
        "num_workers": 0,
        "cache": "auto",
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "seed": 0,
        "log_every_n_steps": 2,
        "checkpoint": {"every_n_epochs": 0},
        "progress_bar": False,
    }, source="demo settings")


# ------------------------------------------------------------------------------------- the demo


def run_demo(
    out: str | Path,
    settings: DemoSettings | None = None,
    *,
    on_line: Callable[[str], None] | None = None,
) -> Comparison:
    """Run the whole comparison into ``out``; see the module docstring.

    ``on_line`` receives plain progress lines (one per finished method x seed, with ETA).
    Finished runs in ``out`` are reused when their settings match, so an interrupted demo picks up
    where it stopped, and a demo with other settings never mixes in runs of the earlier one.
    """
    s = settings or DemoSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = on_line or (lambda _line: None)
    say("generating the synthetic cohort")
    manifest = demo_cohort(out, s)
    if "kdu_vae" in s.methods:
        say("training the VAE prior")
        manifest = _vae_manifest(manifest, s, out / "cache")
    arms = [m for m in ARMS if m.name in s.methods]
    compare = CompareSettings(labels=list(LABELS), seeds=s.seeds, folds=s.probe_folds,
                              repeats=s.probe_repeats, baseline=BASELINE,
                              train_sizes=[25, 50, "all"], colour_by=["site"],
                              title="medcl demo: does metadata help?", jobs=s.jobs)
    result = run_comparison(base_config(manifest, s, out / "cache"), arms, out, compare, on_line=say)
    render_comparison(result)
    return result
