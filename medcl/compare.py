"""Compare pretraining methods on one cohort: same encoder, budget and seeds; held-out probes.

``medcl compare`` (and ``medcl demo``, which is this engine on the embedded synthetic cohort)
pretrains one encoder per *arm* and seed from one base config, changing only the method and its
prior (attributes, or the label of the supervised arm). Each encoder is then probed (linear
model, patient-level cross-validation, :func:`medcl.train.probe.probe_features`) on the subjects
*outside* its pretraining split only, for every requested label. ``random_init`` is the untrained
encoder of the same architecture and seed.

Statistics: for each arm, label and seed the probe's mean over folds; the paired difference to
the baseline arm per seed (same seed = same pretraining order of batches and the same probe
folds), summarised by its mean and a 95% t-interval over seeds (df = seeds - 1). A second interval
uses every (seed, fold) difference with the corrected resampled t-test of Nadeau & Bengio (2003)
in its repeated k-fold form (Bouckaert & Frank 2004): variance factor 1/J + n_test/n_train, since
folds share their training data and a plain t over folds would be far too narrow. The table shows
the seed interval; with a single seed it falls back to the fold interval and says so.

Marks: ``†`` when the arm's prior *is* the probed label (an attribute of that name, or the label of
the supervised arm) or a close proxy of it: |Pearson r| >= :data:`PROXY_CORRELATION` (scalar
attribute) or CKA >= :data:`PROXY_CKA` (the attribute's prior kernel against the label's kernel,
:mod:`medcl.diagnostics`), both computed on the training split only. ``!`` when a run's
``summary.json`` flags training collapse (``health.collapsed``) in any seed.

Reuse: each arm x seed folder holds ``fingerprint.json``, the SHA-256 of the fully resolved
config (fitted kernel included), the cohort's content (manifest, table, image sizes, the feature
files of the attributes the run uses) and the medcl version. A finished run is reused only when its fingerprint matches;
otherwise it is deleted and trained again, so runs with other settings are never mixed in.

Python use::

    from medcl.compare import CompareSettings, parse_arms, run_comparison
    from medcl.train.config import load_config

    base = load_config("pipelines/synthetic_2d.yaml", ["epochs=10"])
    result = run_comparison(base, parse_arms("du,kernel_du:age,random_init"), "cmp",
                            CompareSettings(labels=["diagnosis"], seeds=3))
    print(result.table())
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medcl.atomic import atomic_path, json_safe, write_json, write_text
from medcl.errors import MedclInputError

if TYPE_CHECKING:
    from medcl.data.cohort import Cohort
    from medcl.train.config import PretrainConfig

RANDOM_INIT = "random_init"
PRIOR_METHODS = ("kernel_du", "y_aware")  # methods whose ":a+b" names prior attributes
PROXY_CORRELATION = 0.7
"""|Pearson r| between a continuous or binary prior attribute and a binary or continuous label, on the
training split, that marks a close proxy: the attribute alone explains about half (r^2 >= 0.49) of
the label's variance."""
PROXY_CKA = 0.5
"""CKA between an attribute's (or the whole prior's) kernel and the label's kernel (delta for
classes, median-heuristic RBF for values), on the training split, that marks a close proxy. Used
for every attribute kind, and the only measure for categorical and embedding attributes."""
FINGERPRINT_FILE = "fingerprint.json"
FINGERPRINT_VERSION = 1
_DISPLAY_KEYS = ("progress_bar",)  # config keys that change nothing learned: left out of fingerprints
_PRIMARY = {"binary": "roc_auc", "multiclass": "roc_auc", "continuous": "mae"}
_SECONDARY = {"binary": "balanced_accuracy", "multiclass": "balanced_accuracy", "continuous": "r2"}
_LOWER_IS_BETTER = ("mae",)


# ------------------------------------------------------------------------------------------ arms


@dataclass(frozen=True)
class Arm:
    """One arm of a comparison: a display name, a method and what its prior uses.

    ``attributes``: prior attributes (kernel_du, y_aware; None keeps the base config's);
    ``label``: the supervised arm's label (None keeps the base config's); ``overrides``: dotted
    ``key=value`` settings of this method only (e.g. ``loss.sigma=5`` for y_aware), applied last.
    """

    name: str
    method: str
    attributes: tuple[str, ...] | None = None
    label: str | None = None
    description: str = ""
    overrides: tuple[str, ...] = ()

    @property
    def trains(self) -> bool:
        """False for the random-initialisation arm (nothing to pretrain)."""
        return self.method != RANDOM_INIT

    @property
    def dirname(self) -> str:
        """Folder name under ``runs/`` (``kernel_du:age+sex`` -> ``kernel_du-age+sex``)."""
        return self.name.replace(":", "-").replace("/", "_").replace(" ", "_")

    def config_changes(self, base: PretrainConfig) -> dict[str, Any]:
        """Keys this arm sets on the base config (everything else stays as the base says)."""
        changes: dict[str, Any] = {"method": self.method, "kernel": None, "label": None}
        if self.method in PRIOR_METHODS:
            changes["attributes"] = list(self.attributes) if self.attributes is not None else base.attributes
        else:  # the method ignores attributes: keep them out of the run (and of its fingerprint)
            changes["attributes"] = []
        if self.method == "supervised":
            changes["label"] = self.label if self.label is not None else base.label
        return changes


def _known_methods() -> tuple[str, ...]:
    from medcl.train.config import METHODS

    return (*METHODS, RANDOM_INIT)


def parse_arm(spec: str) -> Arm:
    """Parse ``method[:arg]``: ``kernel_du:age+sex``, ``y_aware:age``, ``supervised:diagnosis``, ``du``.

    Raises MedclInputError for an unknown method, or an argument on a method that takes none.
    """
    text = spec.strip()
    method, colon, arg = text.partition(":")
    method, arg = method.strip(), arg.strip()
    if colon and not arg.replace("+", "").strip():
        raise MedclInputError(f"--methods: {spec!r}: no attribute or label after ':' (e.g. kernel_du:age+sex)")
    known = _known_methods()
    if method not in known:
        raise MedclInputError(f"--methods: unknown method {method!r} in {spec!r}; known: {', '.join(known)}")
    if method in PRIOR_METHODS:
        attrs = tuple(a.strip() for a in arg.split("+") if a.strip()) if arg else None
        what = "prior: " + "+".join(attrs) if attrs else "prior: the base config's attributes"
        return Arm(text, method, attributes=attrs, description=f"{method}, {what}")
    if method == "supervised":
        return Arm(text, method, label=arg or None, description=f"supervised on {arg or 'the base label'}")
    if arg:
        raise MedclInputError(f"--methods: {spec!r}: method {method} takes no ':' argument")
    return Arm(text, method, description="untrained encoder (lower bound)" if method == RANDOM_INIT else method)


def parse_arms(specs: str | Sequence[str]) -> list[Arm]:
    """Parse a comma-separated list (or a list) of arm specs; refuses duplicates and an empty list."""
    items = specs.split(",") if isinstance(specs, str) else list(specs)
    arms = [parse_arm(s) for s in items if s.strip()]
    if not arms:
        raise MedclInputError("--methods: no method given (e.g. --methods du,kernel_du:age,random_init)")
    _check_unique(arms)
    return arms


def _check_unique(arms: Sequence[Arm]) -> None:
    seen: dict[str, str] = {}
    for arm in arms:
        for key in {arm.name, arm.dirname}:
            if key in seen:
                raise MedclInputError(f"--methods: {arm.name!r} given twice (or clashes with {seen[key]!r})")
            seen[key] = arm.name


# ------------------------------------------------------------------------------------- settings


@dataclass
class CompareSettings:
    """What to compare and how to probe (the base config fixes encoder and budget).

    ``seeds``: runs per arm (seeds 0..seeds-1); ``labels``: manifest labels to probe; ``folds``:
    outer folds of the patient-level probe CV; ``repeats``: fresh fold draws of that CV, averaged
    (the fold draw alone moves a 160-subject AUC by 0.02-0.05); ``baseline``: the arm differences refer to;
    ``train_sizes``: label-efficiency points (training patients per fold, "all" always included);
    ``colour_by``: attributes the report's embedding plots are also coloured by.
    """

    labels: list[str]
    seeds: int = 3
    folds: int = 5
    repeats: int = 3
    baseline: str = "du"
    train_sizes: list[int | str] = field(default_factory=lambda: ["all"])
    colour_by: list[str] = field(default_factory=list)
    title: str = "medcl compare"
    encode_batch_size: int = 64

    def check(self, arms: Sequence[Arm]) -> None:
        """Raise MedclInputError for settings that cannot run (before anything is written)."""
        if not self.labels:
            raise MedclInputError("--label: give at least one label to probe (e.g. --label diagnosis)")
        if len(set(self.labels)) != len(self.labels):
            raise MedclInputError(f"--label: a label is given twice: {self.labels}")
        if self.seeds < 1:
            raise MedclInputError(f"--seeds must be >= 1, got {self.seeds}")
        if self.folds < 2:
            raise MedclInputError(f"--folds must be >= 2, got {self.folds}")
        if self.repeats < 1:
            raise MedclInputError(f"--repeats must be >= 1, got {self.repeats}")
        names = [a.name for a in arms]
        if self.baseline not in names:
            raise MedclInputError(f"--baseline {self.baseline!r} is not one of the arms {names}")


# ---------------------------------------------------------------------------------- fingerprints


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medcl")
    except PackageNotFoundError:
        return "unknown"


def cohort_digest(cohort: Cohort, attributes: Sequence[str] | None = None) -> str:
    """SHA-256 of the cohort's content: manifest, table, each image's path and size, and the feature
    files of ``attributes`` (embedding attributes; None: every one the manifest declares).

    Image bytes are not read (a stat per image); regenerating a cohort changes its table or sizes.
    A run's fingerprint takes the feature files of the attributes it uses only, so refitting a VAE
    prior retrains the arms that use it and no other.
    """
    manifest = cohort.manifest
    h = hashlib.sha256()
    if manifest.path is not None and Path(manifest.path).is_file():
        h.update(Path(manifest.path).read_bytes())
    else:
        h.update(manifest.to_yaml().encode())
    h.update((manifest.base_dir / manifest.table).read_bytes())
    for spec in manifest.attributes:
        if spec.features and (attributes is None or spec.name in attributes):
            h.update(b"\0features\0" + spec.name.encode())
            h.update((manifest.base_dir / spec.features).read_bytes())
    for path in cohort.image_paths:
        p = Path(path)
        size = p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        h.update(f"\0{p.name}:{size}".encode())
    return h.hexdigest()


def run_fingerprint(resolved: dict[str, Any], cohort_sha: str, version: str | None = None) -> dict[str, Any]:
    """The fingerprint record of one arm x seed run: hashes of its parts and of the whole.

    ``resolved``: the fully resolved config as a JSON-ready dict (display keys are dropped).
    """
    config = {k: v for k, v in resolved.items() if k not in _DISPLAY_KEYS}
    config_sha = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    version = _version() if version is None else version
    whole = hashlib.sha256(f"{FINGERPRINT_VERSION}|{config_sha}|{cohort_sha}|{version}".encode()).hexdigest()
    return {"fingerprint": whole, "config_sha256": config_sha, "cohort_sha256": cohort_sha,
            "medcl_version": version, "format": FINGERPRINT_VERSION}


def stored_fingerprint(run_path: Path) -> str | None:
    """The fingerprint a finished run folder was stored with (None: none, or unreadable)."""
    try:
        return str(json.loads((run_path / FINGERPRINT_FILE).read_text())["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ------------------------------------------------------------------------------------- marks


def run_health(run_path: Path) -> tuple[bool, str | None]:
    """``(collapsed, reason)`` from a run's ``summary.json["health"]`` (absent: not collapsed)."""
    try:
        summary = json.loads((run_path / "summary.json").read_text())
    except (OSError, ValueError):
        return False, None
    health = summary.get("health") if isinstance(summary, dict) else None
    if not isinstance(health, dict):
        return False, None
    collapsed = bool(health.get("collapsed", False))
    return collapsed, (str(health.get("reason")) if collapsed and health.get("reason") else None)


def proxy_mark(cohort: Cohort, arm: Arm, label: str, train_idx: np.ndarray) -> tuple[bool, str | None, dict]:
    """Is the arm's prior the probed label or a close proxy of it? ``(marked, reason, measures)``.

    The label itself: an attribute named like the label, or the supervised arm's label. A close
    proxy: |Pearson r| >= PROXY_CORRELATION for a scalar attribute, or CKA >= PROXY_CKA between the
    attribute's (or the whole prior's) kernel and the label's kernel, on the labelled training
    subjects. ``measures`` maps each attribute (and the combination) to its r / CKA.
    """
    if arm.method == "supervised":
        if arm.label == label:
            return True, f"trained on {label!r} itself", {}
        return False, None, {}
    if arm.method not in PRIOR_METHODS or not arm.attributes:
        return False, None, {}
    if label in arm.attributes:
        return True, f"prior attribute {label!r} is the probed label", {}
    from medcl.diagnostics import _alignment_test, label_features

    kind = cohort.manifest.label(label).type
    y_all = cohort.label(label)
    idx = train_idx[np.isfinite(y_all[train_idx])]
    if len(idx) < 3 or len(np.unique(y_all[idx])) < 2:
        return False, None, {}
    y = y_all[idx]
    feats = label_features(y, kind)
    measures: dict[str, dict[str, float]] = {}
    reasons: list[str] = []
    sets = [[a] for a in arm.attributes] + ([list(arm.attributes)] if len(arm.attributes) > 1 else [])
    for names in sets:
        key = "+".join(names)
        values, missing, _ = cohort.attribute_matrix(names)
        entry: dict[str, float] = {}
        scalar = len(names) == 1 and cohort.manifest.attribute(names[0]).type in ("continuous", "binary")
        if scalar and kind != "multiclass":
            ok = ~missing[idx, 0]
            a = values[idx, 0][ok].astype(np.float64)
            if ok.sum() > 2 and np.ptp(a) > 0:
                r = float(np.corrcoef(a, y[ok])[0, 1])
                entry["r"] = r
                if abs(r) >= PROXY_CORRELATION:
                    reasons.append(f"|r|({key}, {label}) = {abs(r):.2f} >= {PROXY_CORRELATION}")
        kernel = cohort.prior_kernel(names).fit(values[idx], missing[idx])
        k = kernel(values[idx], missing[idx])
        k = k.detach().cpu().double().numpy() if hasattr(k, "detach") else np.asarray(k, np.float64)
        cka, _ = _alignment_test(k, feats, 0, 0)
        if math.isfinite(cka):
            entry["cka"] = float(cka)
            if cka >= PROXY_CKA:
                reasons.append(f"CKA({key}, {label}) = {cka:.2f} >= {PROXY_CKA}")
        measures[key] = entry
    return bool(reasons), ("; ".join(reasons) + " on the training split") if reasons else None, measures


# ---------------------------------------------------------------------------------- statistics


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, low, high, df)`` of a t-interval; low/high NaN with fewer than two finite values."""
    from scipy import stats

    v = np.array([x for x in values if np.isfinite(x)], float)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan"), float("nan"), 0
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return mean, mean - half, mean + half, len(v) - 1


def corrected_fold_interval(diffs: Sequence[float], test_train_ratio: float,
                            confidence: float = 0.95) -> tuple[float, float, float, int]:
    """Corrected resampled t-interval over (seed, fold) differences (Nadeau & Bengio 2003).

    Var = (1/J + n_test/n_train) * s^2 with J differences; df = J - 1. Returns ``(mean, low, high, df)``.
    """
    from scipy import stats

    d = np.array([x for x in diffs if np.isfinite(x)], float)
    if len(d) < 2:
        return (float(d.mean()) if len(d) else float("nan")), float("nan"), float("nan"), 0
    j = len(d)
    half = float(stats.t.ppf(0.5 + confidence / 2, j - 1)) * math.sqrt((1 / j + test_train_ratio) * d.var(ddof=1))
    mean = float(d.mean())
    return mean, mean - half, mean + half, j - 1


def lower_is_better(metric: str) -> bool:
    """True for error metrics (MAE)."""
    return metric in _LOWER_IS_BETTER


# ------------------------------------------------------------------------------------ results


@dataclass
class Comparison:
    """Everything a comparison produced: per-run rows, the summary and where files went."""

    out: Path
    arms: list[Arm]
    settings: CompareSettings
    labels: dict[str, str] = field(default_factory=dict)  # label -> kind
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per arm x seed x label
    folds: dict[tuple[str, int, str], list[float]] = field(default_factory=dict)  # per-fold primary metric
    proxy: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (arm, label) -> mark
    held_out: int = 0
    fold_ratio: float = 0.25  # mean n_test / n_train of the probe folds
    fingerprints: dict[str, dict[str, str]] = field(default_factory=dict)  # arm -> seed -> fingerprint
    elapsed_s: float = 0.0

    def summary(self) -> list[dict[str, Any]]:
        """Per arm and label: mean/sd over seeds, paired difference to the baseline with CIs, marks."""
        out = []
        base = self.settings.baseline
        for label, kind in self.labels.items():
            metric = _PRIMARY[kind]
            lower = lower_is_better(metric)
            by = {(r["arm"], r["seed"]): r for r in self.rows if r["label"] == label}
            for arm in self.arms:
                seeds = sorted(s for (a, s) in by if a == arm.name)
                if not seeds:
                    continue
                vals = np.array([by[(arm.name, s)]["value"] for s in seeds], float)
                paired = [s for s in seeds if (base, s) in by]
                diffs = [by[(arm.name, s)]["value"] - by[(base, s)]["value"] for s in paired]
                fold_diffs = [a - b for s in paired
                              for a, b in zip(self.folds.get((arm.name, s, label), []),
                                              self.folds.get((base, s, label), []), strict=False)]
                mean_d, lo, hi, df = t_interval(diffs)
                _, flo, fhi, fdf = corrected_fold_interval(fold_diffs, self.fold_ratio)
                collapsed = [s for s in seeds if by[(arm.name, s)]["collapsed"]]
                mark = self.proxy.get((arm.name, label), {})
                out.append({
                    "arm": arm.name, "method": arm.method, "label": label, "kind": kind, "metric": metric,
                    "lower_is_better": lower, "seeds": len(seeds),
                    "mean": float(vals.mean()), "sd": float(vals.std(ddof=1)) if len(vals) > 1 else None,
                    "is_baseline": arm.name == base,
                    "diff": None if arm.name == base else {
                        "mean": mean_d, "sd": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None,
                        "ci_low": lo, "ci_high": hi, "df": df, "per_seed": diffs,
                        "wins": int(sum((d < 0) if lower else (d > 0) for d in diffs)),
                        "folds_ci_low": flo, "folds_ci_high": fhi, "folds_df": fdf,
                    },
                    "proxy": bool(mark.get("marked")), "proxy_reason": mark.get("reason"),
                    "proxy_measures": mark.get("measures", {}),
                    "collapsed": bool(collapsed), "collapsed_seeds": collapsed,
                    "collapse_reasons": sorted({by[(arm.name, s)]["collapse_reason"] for s in collapsed
                                                if by[(arm.name, s)]["collapse_reason"]}),
                })
        return out

    def table(self) -> str:
        """The comparison as plain text: one block per label, marks and a legend."""
        entries = self.summary()
        base = self.settings.baseline
        width = max([len("arm")] + [len(a.name) + 3 for a in self.arms])
        lines: list[str] = []
        for label, kind in self.labels.items():
            metric = _PRIMARY[kind]
            block = [e for e in entries if e["label"] == label]
            if not block:
                continue
            n_seeds = max(e["seeds"] for e in block)
            better = "lower" if lower_is_better(metric) else "higher"
            ci_name = "95% CI over seeds" if n_seeds > 1 else "95% CI over folds*"
            lines.append(f"{label} · {metric} ({better} is better) · {n_seeds} seed(s) · linear probe, "
                         f"{self.settings.folds}-fold patient-level CV{_repeats(self.settings)} on {self.held_out} "
                         "held-out subjects")
            lines.append(f"{'arm':<{width}}  {'mean':>7} {'± sd':>7}   {'Δ vs ' + base:>10}  {ci_name:<20} wins")
            for e in block:
                marks = ("†" if e["proxy"] else "") + ("!" if e["collapsed"] else "")
                name = f"{e['arm']} {marks}".rstrip()
                sd = f"± {e['sd']:.3f}" if e["sd"] is not None else " " * 7
                if e["diff"] is None:
                    tail = f"{'(baseline)':>10}"
                else:
                    d = e["diff"]
                    lo, hi = _interval(d, n_seeds)
                    ci = f"[{_signed(lo)}, {_signed(hi)}]" if np.isfinite(lo) else "—"
                    tail = f"{_signed(d['mean']):>10}  {ci:<20} {d['wins']}/{len(d['per_seed'])}"
                lines.append(f"{name:<{width}}  {e['mean']:>7.3f} {sd:>7}   {tail}")
            lines.append("")
        if any(e["proxy"] for e in entries):
            lines.append(f"† the arm's prior is the probed label or a close proxy (|r| >= {PROXY_CORRELATION} or "
                         f"CKA >= {PROXY_CKA} on the training split): not a fair test of that label")
        if any(e["collapsed"] for e in entries):
            lines.append("! training collapsed in at least one seed (summary.json: health)")
        if self.rows and max(r["seed"] for r in self.rows) == 0:
            lines.append("* one seed: the interval uses the folds (corrected resampled t); use --seeds 3 or more")
        return "\n".join(lines).rstrip()


def _repeats(settings: CompareSettings) -> str:
    return f" x {settings.repeats} draws" if settings.repeats > 1 else ""


def _interval(diff: dict[str, Any], n_seeds: int) -> tuple[float, float]:
    """The interval a table shows: over seeds, or over folds (corrected) with a single seed."""
    return (diff["ci_low"], diff["ci_high"]) if n_seeds > 1 else (diff["folds_ci_low"], diff["folds_ci_high"])


def _signed(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:+.{digits}f}"


# ------------------------------------------------------------------------------------- engine


@dataclass
class _Planned:
    arm: Arm
    seed: int
    config: Any  # resolved PretrainConfig (trained arms) or None
    fingerprint: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.arm.name} seed {self.seed}"


def _quiet_engine() -> None:
    """Lightning's info lines would drown the comparison's own progress lines."""
    import lightning.pytorch  # noqa: F401  (it sets its loggers' levels on import: override after)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", category=UserWarning, message=".*does not have many workers.*")


def arm_config(base: PretrainConfig, arm: Arm, seed: int) -> PretrainConfig:
    """The base config with only this arm's method/prior and the seed changed (not yet resolved)."""
    from medcl.train.config import parse_config

    data = base.model_dump(mode="json")
    data.update(arm.config_changes(base))
    data.update(seed=seed, progress_bar=False)
    return parse_config(data, source=f"arm {arm.name}", overrides=list(arm.overrides))


def plan(base: PretrainConfig, arms: Sequence[Arm], settings: CompareSettings) -> tuple[list[_Planned], Cohort]:
    """Check every arm, label and setting against the cohort and resolve each run's config.

    Raises MedclInputError (nothing written) for an unknown attribute or label, an attribute the
    method cannot use, a baseline that is not an arm, ...
    """
    from medcl.data.cohort import Cohort
    from medcl.train.pretrain import prepare

    _check_unique(arms)
    settings.check(arms)
    cohort = Cohort.from_manifest(base.manifest)
    for label in settings.labels:
        cohort.manifest.label(label)  # raises, listing the known labels
    for name in settings.colour_by:
        if name not in cohort.attribute_names:
            raise MedclInputError(f"colour_by: no attribute {name!r}; known: {cohort.attribute_names}")
    version = _version()
    planned: list[_Planned] = []
    resolved: dict[str, Any] = {}
    cohort_sha: dict[str, str] = {}
    for arm in arms:
        if arm.method == "supervised" and arm.label is None and base.label is None:
            raise MedclInputError(f"--methods: {arm.name!r} needs a label: write supervised:LABEL")
        if arm.trains:
            try:
                resolved[arm.name] = prepare(arm_config(base, arm, 0)).config
            except MedclInputError as err:
                raise MedclInputError(f"arm {arm.name!r}: {err}") from None
            cohort_sha[arm.name] = cohort_digest(cohort, resolved[arm.name].attributes or [])
        else:
            spec = base.encoder.resolved(cohort.manifest.image.spatial_dims, cohort.manifest.image.channels)
            resolved[arm.name] = {"method": RANDOM_INIT, "encoder": spec.model_dump(mode="json")}
            cohort_sha[arm.name] = cohort_digest(cohort, [])
    for seed in range(settings.seeds):
        for arm in arms:
            r = resolved[arm.name]
            if arm.trains:
                config = r.model_copy(update={"seed": seed})
                data = config.model_dump(mode="json")
            else:
                config, data = None, {**r, "seed": seed}
            planned.append(_Planned(arm, seed, config, run_fingerprint(data, cohort_sha[arm.name], version)))
    return planned, cohort


def _held_out(cohort: Cohort, run_path: Path | None) -> np.ndarray:
    """Cohort rows outside the pretraining split: the run's own split.csv when it has one (read as
    `medcl probe` reads it), else the cohort's split (random init)."""
    if run_path is None or not (run_path / "split.csv").is_file():
        return np.flatnonzero(np.asarray(cohort.split()) != "train")
    from medcl.train.run_dir import RunDir

    ids = np.asarray([str(i) for i in cohort.subject_ids], dtype=object)
    train_ids = RunDir(run_path).pretraining_subject_ids()
    if not train_ids <= set(ids):
        raise MedclInputError(f"{run_path}/split.csv does not list this cohort's subjects; delete the run")
    return np.flatnonzero(~np.isin(ids, list(train_ids)))


def _ensure_run(item: _Planned, run_path: Path) -> tuple[bool, float]:
    """Reuse the run at ``run_path`` when finished with the same fingerprint, else (re)train it.

    Returns ``(reused, seconds spent)``.
    """
    from medcl.train.run_dir import RunDir

    start = time.perf_counter()
    want = item.fingerprint["fingerprint"]
    run = RunDir(run_path)
    done = (run.is_finished() if item.arm.trains else (run_path / "config.yaml").is_file())
    if done and stored_fingerprint(run_path) == want:
        return True, time.perf_counter() - start
    if run_path.exists():
        shutil.rmtree(run_path)  # stale (other settings) or unfinished: never mixed in
    if item.arm.trains:
        from medcl.train.pretrain import pretrain

        pretrain(item.config, run_path)
    else:
        run_path.mkdir(parents=True, exist_ok=True)
        write_text(run_path / "config.yaml", f"method: {RANDOM_INIT}\nseed: {item.seed}\n")
    write_json(run_path / FINGERPRINT_FILE, item.fingerprint)
    return False, time.perf_counter() - start


def _encoder(item: _Planned, run_path: Path, base: PretrainConfig, cohort: Cohort):
    if item.arm.trains:
        from medcl.train.run_dir import RunDir

        return RunDir(run_path).load_encoder()
    import torch

    from medcl.models.encoders import build_encoder

    spec = base.encoder.resolved(cohort.manifest.image.spatial_dims, cohort.manifest.image.channels)
    torch.manual_seed(item.seed)
    return build_encoder(spec).eval()


def _expected(arm: Arm, spent: dict[str, list[float]], arms: Sequence[Arm]) -> float:
    """Seconds one more run of ``arm`` should take: its own mean so far, else that of the arms that
    train (or not) like it, else of every arm (for the ETA)."""
    if arm.name in spent:
        return float(np.mean(spent[arm.name]))
    alike = [t for a in arms if a.trains == arm.trains for t in spent.get(a.name, [])]
    every = [t for times in spent.values() for t in times]
    return float(np.mean(alike or every)) if (alike or every) else 0.0


def _clock(seconds: float) -> str:
    seconds = round(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def run_comparison(
    base: PretrainConfig,
    arms: Sequence[Arm],
    out: str | Path,
    settings: CompareSettings,
    *,
    on_line: Callable[[str], None] | None = None,
) -> Comparison:
    """Pretrain (or reuse) every arm x seed, probe held-out subjects, write the outputs into ``out``.

    ``on_line`` receives one plain progress line per finished arm x seed (with elapsed time and
    ETA) and a few status lines. Outputs: ``results.csv`` (one row per arm x seed x label),
    ``summary.json``, ``comparison.txt``, ``report.html`` and ``runs/<arm>/seed<k>/``.
    """
    from medcl.data.datasets import ImageDataset
    from medcl.train.features import encode_dataset
    from medcl.train.probe import MetricSummary, probe_features, write_probe_result

    arms = list(arms)
    say = on_line or (lambda _line: None)
    t0 = time.perf_counter()
    planned, cohort = plan(base, arms, settings)
    split = np.asarray(cohort.split())
    train_idx = np.flatnonzero(split == "train")
    held_out = np.flatnonzero(split != "train")
    if len(held_out) < 2 * settings.folds:
        raise MedclInputError(f"only {len(held_out)} subjects outside the training split: too few for "
                              f"{settings.folds}-fold probing (use --folds 2 or a larger cohort)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _quiet_engine()
    result = Comparison(out=out, arms=arms, settings=settings, held_out=len(held_out),
                        labels={lab: cohort.manifest.label(lab).type for lab in settings.labels})
    for arm in arms:
        for label in settings.labels:
            marked, reason, measures = proxy_mark(cohort, arm, label, train_idx)
            result.proxy[(arm.name, label)] = {"marked": marked, "reason": reason, "measures": measures}
    images = ImageDataset(cohort, held_out, cache="memory")
    patients = np.asarray(cohort.patient_ids, dtype=object)
    say(f"comparing {len(arms)} arm(s) x {settings.seeds} seed(s) on {len(train_idx)} training / "
        f"{len(held_out)} held-out subjects -> {out}")

    spent: dict[str, list[float]] = {}
    ratios: list[float] = []
    for n, item in enumerate(planned, 1):
        unit_start = time.perf_counter()
        run_path = out / "runs" / item.arm.dirname / f"seed{item.seed}"
        reused, seconds = _ensure_run(item, run_path)
        rows_held = _held_out(cohort, run_path if item.arm.trains else None)
        if not np.array_equal(rows_held, held_out):
            raise MedclInputError(f"{run_path}: its split differs from the cohort's; delete the run folder")
        encoder = _encoder(item, run_path, base, cohort)
        feats = encode_dataset(encoder, images, batch_size=settings.encode_batch_size, progress=False)
        collapsed, why = run_health(run_path) if item.arm.trains else (False, None)
        scores = []
        if (run_path / "probe").is_dir():
            shutil.rmtree(run_path / "probe")  # probes of an earlier comparison (other labels, folds)
        for label, kind in result.labels.items():
            y = cohort.label(label)[held_out]
            ok = np.isfinite(y)
            metric = _PRIMARY[kind]
            per_fold: list[float] = []
            second: list[float] = []
            for r in range(settings.repeats):  # repeat r draws its folds with seed + 1000 r
                probe = probe_features(feats[ok], y[ok], patients[held_out][ok], kind, n_folds=settings.folds,
                                       seed=item.seed + 1000 * r,
                                       train_sizes=settings.train_sizes if r == 0 else None)
                if r == 0:  # the run's probe/ folder (label-efficiency curve included): the first draw
                    write_probe_result(probe, run_path / "probe", label, encoder=item.arm.name, held_out=True)
                per_fold += list(probe.metric(metric).per_fold)
                second.append(probe.metric(_SECONDARY[kind]).mean)
            summary = MetricSummary.from_folds(per_fold)
            result.folds[(item.arm.name, item.seed, label)] = per_fold
            n_lab = int(ok.sum())
            n_train = float(next(r["n_train"] for r in probe.rows
                                 if r["probe"] == "linear" and r["train_size"] == "all"))
            ratios.append((n_lab - n_train) / max(n_train, 1.0))
            secondary = {m: None for m in sorted(set(_SECONDARY.values()))}
            secondary[_SECONDARY[kind]] = float(np.mean(second))
            result.rows.append({
                "arm": item.arm.name, "method": item.arm.method,
                "prior": "+".join(item.arm.attributes or ()) or (item.arm.label or ""),
                "seed": item.seed, "label": label, "kind": kind, "metric": metric,
                "value": summary.mean, "fold_sd": summary.std, **secondary,
                "subjects": probe.n_subjects, "patients": probe.n_patients, "folds": probe.n_folds,
                "proxy": result.proxy[(item.arm.name, label)]["marked"], "collapsed": collapsed,
                "collapse_reason": why, "reused": reused, "seconds": round(seconds, 1),
                "fingerprint": item.fingerprint["fingerprint"][:16],
            })
            scores.append(f"{label} {metric}={summary.mean:.3f}")
        _write_run_artefacts(run_path, item, cohort, held_out, feats, settings)
        result.fingerprints.setdefault(item.arm.name, {})[str(item.seed)] = item.fingerprint["fingerprint"]
        unit = time.perf_counter() - unit_start
        spent.setdefault(item.arm.name, []).append(unit)
        elapsed = time.perf_counter() - t0
        eta = sum(_expected(r.arm, spent, arms) for r in planned[n:])
        status = "reused" if reused else ("built" if not item.arm.trains else f"trained in {seconds:.0f} s")
        say(f"[{n}/{len(planned)}] {item.key}: {status}; {', '.join(scores)}"
            f"{' (collapsed!)' if collapsed else ''} | elapsed {_clock(elapsed)}, ETA {_clock(eta)}")

    result.fold_ratio = float(np.mean(ratios)) if ratios else 0.25
    result.elapsed_s = time.perf_counter() - t0
    _write_outputs(result)
    return result


def _write_run_artefacts(run_path: Path, item: _Planned, cohort: Cohort, held_out: np.ndarray,
                         feats: np.ndarray, settings: CompareSettings) -> None:
    """What the report plots: embeddings coloured by the labels (and ``colour_by``), a batch kernel."""
    from medcl.report import write_embeddings, write_kernel_batch
    from medcl.train.run_dir import RunDir

    colours = {label: cohort.label(label)[held_out] for label in settings.labels}
    for name in settings.colour_by:
        values, _, _ = cohort.attribute_matrix([name])
        colours.setdefault(name, values[held_out, 0])
    write_embeddings(run_path, feats, colours)
    if item.arm.method == "kernel_du":
        kernel = RunDir(run_path).kernel()
        if kernel is not None:
            names = [t.name for t in kernel.terms]
            values, missing, _ = cohort.attribute_matrix(names)
            idx = held_out[:64]
            write_kernel_batch(run_path, np.asarray(kernel(values[idx], missing[idx])))


def _write_outputs(result: Comparison) -> None:
    import pandas as pd

    from medcl.report import render_report

    out = result.out
    with atomic_path(out / "results.csv") as tmp:
        pd.DataFrame(result.rows).to_csv(tmp, index=False)
    s = result.settings
    write_json(out / "summary.json", json_safe({
        "settings": {"seeds": s.seeds, "labels": s.labels, "folds": s.folds, "repeats": s.repeats,
                     "baseline": s.baseline,
                     "train_sizes": s.train_sizes},
        "arms": [{"name": a.name, "method": a.method, "attributes": list(a.attributes or []) or None,
                  "label": a.label, "description": a.description} for a in result.arms],
        "labels": {lab: {"kind": kind, "metric": _PRIMARY[kind], "lower_is_better": lower_is_better(_PRIMARY[kind])}
                   for lab, kind in result.labels.items()},
        "held_out_subjects": result.held_out,
        "proxy_thresholds": {"abs_correlation": PROXY_CORRELATION, "cka": PROXY_CKA},
        "fold_test_train_ratio": result.fold_ratio,
        "elapsed_s": round(result.elapsed_s, 1),
        "summary": result.summary(),
        "fingerprints": result.fingerprints,
        "medcl_version": _version(),
    }))
    table = result.table()
    write_text(out / "comparison.txt", table + "\n")
    seed0 = [out / "runs" / a.dirname / "seed0" for a in result.arms]
    render_report(seed0, out / "report.html", title=s.title,
                  lead_sections=[("compare", "Methods comparison", comparison_html(result))])


def comparison_html(result: Comparison) -> str:
    """The comparison table as an HTML fragment (escaped; no subject or patient identifiers)."""
    e = html.escape
    base = result.settings.baseline
    parts = [f'<p class="help">Linear probes on the {result.held_out} subjects outside the pretraining split '
             f"({result.settings.folds}-fold patient-level CV{_repeats(result.settings)}); mean over seeds; "
             f"Δ = paired difference to {e(base)} per seed with its 95% t-interval over seeds. "
             f"† prior is the probed label or a close proxy (|r| ≥ {PROXY_CORRELATION} or CKA ≥ {PROXY_CKA} "
             "on the training split); ! training collapsed in some seed.</p>"]
    for label, kind in result.labels.items():
        metric = _PRIMARY[kind]
        rows = []
        for entry in (x for x in result.summary() if x["label"] == label):
            marks = ("†" if entry["proxy"] else "") + ("!" if entry["collapsed"] else "")
            d = entry["diff"]
            diff = "baseline" if d is None else f"{_signed(d['mean'])}"
            lo, hi = (None, None) if d is None else _interval(d, entry["seeds"])
            ci = "" if lo is None or not np.isfinite(lo) else f"[{_signed(lo)}, {_signed(hi)}]"
            sd = "" if entry["sd"] is None else f" ± {entry['sd']:.3f}"
            note = "; ".join(x for x in (entry["proxy_reason"], *entry["collapse_reasons"]) if x)
            rows.append(f"<tr><td>{e(entry['arm'])} {marks}</td><td class=\"num\">{entry['mean']:.3f}{sd}</td>"
                        f"<td class=\"num\">{diff}</td><td class=\"num\">{ci}</td><td>{e(note)}</td></tr>")
        better = "lower" if lower_is_better(metric) else "higher"
        parts.append(f"<h3>{e(label)} · {e(metric)} ({better} is better)</h3>"
                     '<div class="wide"><table><thead><tr><th>arm</th><th>mean ± sd over seeds</th>'
                     f"<th>Δ vs {e(base)}</th><th>95% CI</th><th>note</th></tr></thead><tbody>"
                     + "".join(rows) + "</tbody></table></div>")
    return "\n".join(parts)
