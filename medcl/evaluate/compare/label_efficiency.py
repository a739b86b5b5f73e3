"""Label efficiency in a comparison: every arm's encoder fine-tuned on a few labels, against scratch.

``medcl compare ... --finetune LABEL --train-sizes 10%,25%,100%`` fine-tunes, for every seed and
training size, each pretrained arm's encoder plus ``scratch`` (the same architecture, randomly
initialised with that seed) into a diagnosis model (:func:`medcl.evaluate.finetune.finetune_run`,
its default lp-ft training unless told otherwise).

Protocol (the one of ``medcl finetune``): the manifest's patient-level split. Fine-tuning uses the
labels of the training split (part of its patients: stratified, nested, the same subset for every
arm at one seed, so the differences are paired); early stopping and the decision threshold use the
validation split; the test split is scored once. The encoders were pretrained on the training
split's *images*; an arm whose pretraining used the label or a close proxy of it (a supervised /
SupCon arm on it, a prior attribute that correlates with it:
:func:`~medcl.evaluate.compare.marks.proxy_mark`) saw label information on every training patient
and is marked ``†``. No test subject is in a run's pretraining split (checked against each run's
``split.csv``: a fine-tune whose test subject was pretrained on is refused).

Statistics per arm and size: mean test metric over seeds with a 95 % t-interval, and the paired
difference (same seed: same training patients, same test split) to ``scratch`` and to the
comparison's baseline arm, with 95 % t-intervals over seeds
(:func:`medcl.evaluate.compare.statistics.t_interval`).

Outputs in the comparison's folder: ``label_efficiency.csv`` (one row per arm x seed x size),
``summary.json`` entry ``label_efficiency``, and one model folder per fine-tune in
``finetune/LABEL/ARM/seed<k>/<size>/`` (a diagnosis model: ``medcl predict`` / ``export`` take it),
reused only when its fingerprint (the arm run's fingerprint or scratch's architecture, the label,
size, fine-tuning options, cohort content, medcl version and the loop's version) matches.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medcl.errors import MedclInputError
from medcl.evaluate.compare.arms import Arm, reads_label
from medcl.evaluate.compare.results import SCRATCH, LabelEfficiency
from medcl.evaluate.compare.statistics import PRIMARY_METRIC

if TYPE_CHECKING:
    from medcl.data.cohort import Cohort
    from medcl.pretrain.config import PretrainConfig

FINETUNE_DIR = "finetune"
FINETUNE_FINGERPRINT = "finetune_fingerprint.json"
DEFAULT_TRAIN_SIZES = ("10%", "25%", "100%")
#: bootstrap resamples of each fine-tune's own test interval (1000 cost ~3 s a fine-tune on 2 cores; the
#: comparison's intervals are over seeds)
DEFAULT_BOOTSTRAP = 200
_FINGERPRINT_FORMAT = 1
#: options the engine sets per fine-tune (not the user's to give)
_ENGINE_KEYS = ("seed", "train_size", "init")


# ------------------------------------------------------------------------------------- settings


def parse_train_sizes(text: str | Sequence[str], option: str = "--train-sizes") -> list[str]:
    """``"10%,25%,100%"`` (or a list) -> ``["10%", "25%", "100%"]``: each a patient count or a
    percentage as ``medcl finetune --train-size`` takes it; ``all`` means ``100%``.

    Raises MedclInputError naming ``option`` for an empty list, a bad value or a size given twice.
    """
    from medcl.evaluate.label_subsets import parse_train_size

    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    if not [p for p in parts if p]:
        raise MedclInputError(f"{option}: no size given (e.g. {option} {','.join(DEFAULT_TRAIN_SIZES)})")
    sizes: list[str] = []
    seen: dict[Any, str] = {}
    for part in parts:
        if not part:
            continue
        try:
            value = parse_train_size(part)
        except MedclInputError as err:
            why = str(err).split(": ", 1)[-1]
            raise MedclInputError(f"{option} {_as_text(text)!r}: {part!r}: {why}") from None
        tag = "100%" if value is None else part.replace(" ", "")
        if value in seen:
            raise MedclInputError(f"{option} {_as_text(text)!r}: {part!r} is the same size as {seen[value]!r}")
        seen[value] = part
        sizes.append(tag)
    return sizes


def _as_text(text: str | Sequence[str]) -> str:
    return text if isinstance(text, str) else ",".join(text)


def size_dirname(size: str) -> str:
    """Folder name of a size: ``10%`` -> ``10pct``, ``40`` -> ``40``."""
    return size.replace("%", "pct")


@dataclass
class LabelEfficiencySettings:
    """What ``--finetune LABEL --train-sizes ...`` asks for.

    ``options``: :class:`~medcl.evaluate.finetune_loop.FineTuneOptions` fields for every fine-tune
    (mode, epochs, lr, ...; seed, train size and init are set per fine-tune; ``n_boot`` defaults to
    :data:`DEFAULT_BOOTSTRAP`). ``cache``: how the
    fine-tunes load the images (as ``ImageDataset``'s ``cache``).
    """

    label: str
    train_sizes: list[str] = field(default_factory=lambda: list(DEFAULT_TRAIN_SIZES))
    options: dict[str, Any] = field(default_factory=dict)
    cache: str = "memory"

    def fine_tune_options(self, base: PretrainConfig | None = None) -> dict[str, Any]:
        """Every fine-tuning option with its default filled in, less those set per fine-tune. The
        base config's ``accelerator: cpu`` keeps the fine-tunes on the CPU too."""
        import dataclasses

        from medcl.evaluate.finetune_loop import FineTuneOptions

        options = {"n_boot": DEFAULT_BOOTSTRAP, **self.options}
        if "device" not in options and base is not None and base.accelerator == "cpu":
            options["device"] = "cpu"
        every = dataclasses.asdict(FineTuneOptions(**options))
        return {k: v for k, v in every.items() if k not in _ENGINE_KEYS}

    def check(self, cohort: Cohort, arms: Sequence[Arm]) -> None:
        """Raise MedclInputError (before anything is written) for an unknown label, a bad option,
        a size larger than the labelled training patients, or no arm with an encoder to fine-tune."""
        from medcl.evaluate.finetune_loop import FineTuneOptions
        from medcl.evaluate.label_subsets import parse_train_size

        spec = cohort.manifest.label(self.label)  # raises, listing the known labels
        bad = [k for k in self.options if k in _ENGINE_KEYS]
        if bad:
            raise MedclInputError(f"--finetune: {', '.join(bad)} are set per fine-tune by the comparison")
        try:
            FineTuneOptions(**self.options).check()
        except TypeError as err:
            raise MedclInputError(f"--finetune options: {err}") from None
        self.train_sizes = parse_train_sizes(self.train_sizes)
        if not any(a.trains for a in arms):
            raise MedclInputError("--finetune: no arm pretrains an encoder (random_init alone is the scratch "
                                  "reference); add an arm such as du")
        y = cohort.label(self.label)
        split = np.asarray(cohort.split())
        patients = np.asarray(cohort.patient_ids).astype(str)
        for part in ("train", "val", "test"):
            if not np.any((split == part) & np.isfinite(y)):
                raise MedclInputError(f"--finetune {self.label}: no labelled subject in the {part} split; fine-tuning "
                                      "needs train, val and test (set split.val_folds / split.test_folds)")
        available = len(np.unique(patients[(split == "train") & np.isfinite(y)]))
        for size in self.train_sizes:
            value = parse_train_size(size)
            if isinstance(value, int) and value > available:
                raise MedclInputError(f"--train-sizes: {size} patients, but the training split has only "
                                      f"{available} labelled patients for {self.label!r}")
        if spec.type != "continuous" and available and len(np.unique(y[(split == "train") & np.isfinite(y)])) < 2:
            raise MedclInputError(f"--finetune {self.label}: a single class in the training split")


# ------------------------------------------------------------------------------------- engine


@dataclass
class _Job:
    arm: str
    method: str
    prior: str
    seed: int
    size: str
    run_path: Path  # the run whose encoder (or, for scratch, whose architecture and image cache) is used
    encoder_key: dict[str, Any]  # what the encoder is: the arm run's fingerprint, or scratch's spec
    proxy: tuple[bool, str | None]  # the arm's pretraining used the label or a close proxy (and why)


def _fingerprint(job: _Job, label: str, options: dict[str, Any], cohort_sha: str, version: str) -> str:
    from medcl.evaluate.finetune_loop import LOOP_VERSION

    record = {"format": _FINGERPRINT_FORMAT, "encoder": job.encoder_key, "label": label, "train_size": job.size,
              "options": options, "cohort": cohort_sha, "medcl_version": version, "loop": LOOP_VERSION}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def _stored(model_dir: Path) -> str | None:
    try:
        return str(json.loads((model_dir / FINETUNE_FINGERPRINT).read_text())["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _proxy(cohort: Cohort, arm: Arm, label: str, train_idx: np.ndarray,
           base: PretrainConfig) -> tuple[bool, str | None]:
    """Did the arm's pretraining use ``label`` or a close proxy of it (on the training split)?"""
    from medcl.evaluate.compare.marks import proxy_mark

    if reads_label(arm.method) and (arm.label if arm.label is not None else base.label) == label:
        return True, f"trained on {label!r} itself"
    marked, reason, _ = proxy_mark(cohort, arm, label, train_idx)
    return bool(marked), reason


def _per_class(metrics: dict[str, Any]) -> str:
    counts = metrics["sizes"].get("train_patients_per_class") or {}
    return ";".join(f"{k}={v}" for k, v in counts.items())


def run_label_efficiency(
    base: PretrainConfig,
    arms: Sequence[Arm],
    seeds: int,
    out: str | Path,
    settings: LabelEfficiencySettings,
    *,
    baseline: str,
    fingerprints: dict[str, dict[str, str]],
    diverged: dict[str, dict[int, Any]] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> LabelEfficiency:
    """Fine-tune every pretrained arm's run (``out/runs/ARM/seed<k>``) and scratch at every size and
    seed; return the results and write ``label_efficiency.csv`` into ``out``.

    ``fingerprints``: arm -> seed -> the run fingerprint the comparison recorded (keys the cache);
    ``diverged``: arm -> seed -> error of runs left out. Raises MedclInputError as
    :func:`~medcl.evaluate.finetune.finetune_run` (e.g. a test subject in a run's pretraining split).
    """
    from medcl.data.cohort import Cohort
    from medcl.evaluate.compare.fingerprints import cohort_digest
    from medcl.evaluate.finetune import finetune_run
    from medcl.models.saved import medcl_version
    from medcl.pretrain.progress import format_duration
    from medcl.pretrain.run_dir import RunDir

    say = on_line or (lambda _line: None)
    t0 = time.perf_counter()
    out = Path(out)
    cohort = Cohort.from_manifest(base.manifest)
    settings.check(cohort, arms)
    kind = cohort.manifest.label(settings.label).type
    options = settings.fine_tune_options(base)
    diverged = diverged or {}
    trained = [a for a in arms if a.trains]
    skipped = [f"{a.name}: a randomly initialised encoder fine-tuned is the scratch reference"
               for a in arms if not a.trains]
    result = LabelEfficiency(label=settings.label, kind=kind, baseline=baseline,
                             arms=[SCRATCH, *(a.name for a in trained)], sizes=list(settings.train_sizes),
                             options=options, skipped=skipped)
    version, cohort_sha = medcl_version(), cohort_digest(cohort, [])
    train_idx = np.flatnonzero(np.asarray(cohort.split()) == "train")
    proxies = {a.name: _proxy(cohort, a, settings.label, train_idx, base) for a in trained}
    jobs: list[_Job] = []
    for seed in range(seeds):
        ready = [a for a in trained if seed not in diverged.get(a.name, {})
                 and RunDir(out / "runs" / a.dirname / f"seed{seed}").encoder_json.is_file()]
        for size in result.sizes:
            if ready:  # scratch: the architecture (and image cache settings) of this seed's first run
                run_path = out / "runs" / ready[0].dirname / f"seed{seed}"
                spec = RunDir(run_path).encoder_info()["spec"]
                jobs.append(_Job(SCRATCH, SCRATCH, "", seed, size, run_path, {"scratch": spec}, (False, None)))
            for arm in ready:
                jobs.append(_Job(arm.name, arm.method, "+".join(arm.attributes or ()) or (arm.label or ""), seed,
                                 size, out / "runs" / arm.dirname / f"seed{seed}",
                                 {"run": fingerprints.get(arm.name, {}).get(str(seed))}, proxies[arm.name]))
    root = out / FINETUNE_DIR / settings.label
    spent: list[float] = []
    for n, job in enumerate(jobs, 1):
        start = time.perf_counter()
        dirname = SCRATCH if job.arm == SCRATCH else next(a.dirname for a in trained if a.name == job.arm)
        model_dir = root / dirname / f"seed{job.seed}" / size_dirname(job.size)
        want = _fingerprint(job, settings.label, options, cohort_sha, version)
        reused = _stored(model_dir) == want and (model_dir / "metrics.json").is_file()
        if reused:
            metrics = json.loads((model_dir / "metrics.json").read_text())
        else:
            if model_dir.exists():
                shutil.rmtree(model_dir)  # other settings or unfinished: never mixed in
            metrics = finetune_run(job.run_path, base.manifest, settings.label, out=model_dir,
                                   cache=settings.cache, num_workers=0, progress=False,
                                   **options, seed=job.seed, train_size=job.size,
                                   init=SCRATCH if job.arm == SCRATCH else "pretrained")
            (model_dir / FINETUNE_FINGERPRINT).write_text(json.dumps({"fingerprint": want}) + "\n")
        seconds = time.perf_counter() - start
        metric = PRIMARY_METRIC[kind]
        test = metrics["test"][metric]
        sizes = metrics["sizes"]
        result.test_patients = int(sizes["test_patients"])
        result.rows.append({
            "label": settings.label, "arm": job.arm, "method": job.method, "prior": job.prior,
            "init": SCRATCH if job.arm == SCRATCH else "pretrained", "seed": job.seed, "train_size": job.size,
            "train_patients": int(sizes["train_patients"]), "train_scans": int(sizes["train_scans"]),
            "train_patients_per_class": _per_class(metrics), "train_patients_available":
            int(sizes["train_patients_available"]), "test_patients": int(sizes["test_patients"]),
            "metric": metric, "value": test["value"], "test_ci_low": test.get("low"), "test_ci_high": test.get("high"),
            "balanced_accuracy": (metrics["test"].get("balanced_accuracy") or {}).get("value"),
            "mode": metrics["settings"]["mode"], "epochs_run": metrics["epochs_run"],
            "best_epoch": metrics["best_epoch"], "proxy": job.proxy[0], "proxy_reason": job.proxy[1] or "",
            "reused": reused,
            "seconds": round(seconds, 1), "fingerprint": want[:16],
            "model": str(model_dir.relative_to(out)),
        })
        if not reused:
            spent.append(seconds)
        left = sum(1 for j in jobs[n:]) * (float(np.mean(spent)) if spent else 0.0)
        say(f"[finetune {n}/{len(jobs)}] {job.arm} seed {job.seed} at {job.size} "
            f"({sizes['train_patients']} patients): {'reused' if reused else f'trained in {seconds:.0f} s'}; "
            f"test {metric}={test['value']:.3f} | elapsed {format_duration(time.perf_counter() - t0)}, "
            f"ETA {format_duration(left)}")
    result.elapsed_s = time.perf_counter() - t0
    result.write_csv(out)
    return result
