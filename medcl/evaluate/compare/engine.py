"""The comparison engine: plan the arm x seed runs, pretrain or reuse them, probe, write outputs.

Writes ``results.csv``, ``summary.json``, ``comparison.txt`` and ``runs/<arm>/seed<k>/``; the
``report.html`` page is rendered by :func:`medcl.report.comparison.render_comparison` (called by
``medcl compare`` and ``medcl demo``), since evaluation does not import the report stage.
"""


from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medcl.atomic import atomic_path, json_safe, write_json, write_text
from medcl.errors import MedclInputError
from medcl.evaluate.compare.arms import RANDOM_INIT, Arm, CompareSettings, check_unique, reads_label, run_settings
from medcl.evaluate.compare.fingerprints import (
    cohort_digest,
    learned_settings,
    run_fingerprint,
)
from medcl.evaluate.compare.marks import PROXY_CKA, PROXY_CORRELATION, proxy_mark, run_health
from medcl.evaluate.compare.parallel import resolve_jobs, run_side_by_side, threads_per_job
from medcl.evaluate.compare.results import Comparison
from medcl.evaluate.compare.run_units import ensure_run_quietly, reusable, trains_on_gpu
from medcl.evaluate.compare.statistics import PRIMARY_METRIC, SECONDARY_METRIC, lower_is_better
from medcl.losses.registry import METHODS
from medcl.models.saved import medcl_version
from medcl.pretrain.progress import format_duration
from medcl.pretrain.run_dir import RunDir

if TYPE_CHECKING:
    from medcl.data.cohort import Cohort
    from medcl.evaluate.compare.label_efficiency import LabelEfficiencySettings
    from medcl.pretrain.config import PretrainConfig


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


def arm_config(base: PretrainConfig, arm: Arm, seed: int) -> PretrainConfig:
    """The base config with only this arm's method/prior and the seed changed (not yet resolved)."""
    from medcl.pretrain.config import parse_config

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
    from medcl.pretrain.loop import prepare

    check_unique(arms)
    settings.check(arms)
    cohort = Cohort.from_manifest(base.manifest)
    for label in settings.labels:
        cohort.manifest.label(label)  # raises, listing the known labels
    for name in settings.colour_by:
        if name not in cohort.attribute_names:
            raise MedclInputError(f"colour_by: no attribute {name!r}; known: {cohort.attribute_names}")
    version = medcl_version()
    planned: list[_Planned] = []
    resolved: dict[str, Any] = {}
    cohort_sha: dict[str, str] = {}
    for arm in arms:
        if reads_label(arm.method) and arm.label is None and base.label is None:
            raise MedclInputError(f"--methods: {arm.name!r} needs a label: write {arm.method}:LABEL")
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
                data = learned_settings(config)
            else:
                config, data = None, {**r, "seed": seed}
            planned.append(_Planned(arm, seed, config, run_fingerprint(data, cohort_sha[arm.name], version)))
    return planned, cohort


def _held_out(cohort: Cohort, run_path: Path | None) -> np.ndarray:
    """Cohort rows outside the pretraining split: the run's own split.csv when it has one (read as
    `medcl probe` reads it), else the cohort's split (random init)."""
    if run_path is None or not RunDir(run_path).split_path.is_file():
        return np.flatnonzero(np.asarray(cohort.split()) != "train")
    ids = np.asarray([str(i) for i in cohort.subject_ids], dtype=object)
    train_ids = RunDir(run_path).pretraining_subject_ids()
    if not train_ids <= set(ids):
        raise MedclInputError(f"{RunDir(run_path).split_path} does not list this cohort's subjects; delete the run")
    return np.flatnonzero(~np.isin(ids, list(train_ids)))


def _encoder(item: _Planned, run_path: Path, base: PretrainConfig, cohort: Cohort):
    if item.arm.trains:
        return RunDir(run_path).load_encoder()
    from medcl.models.saved import random_encoder

    spec = base.encoder.resolved(cohort.manifest.image.spatial_dims, cohort.manifest.image.channels)
    return random_encoder(spec, item.seed)


def _expected(arm: Arm, spent: dict[str, list[float]], arms: Sequence[Arm]) -> float:
    """Seconds one more run of ``arm`` should take: its own mean so far, else that of the arms that
    train (or not) like it, else of every arm (for the ETA)."""
    if arm.name in spent:
        return float(np.mean(spent[arm.name]))
    alike = [t for a in arms if a.trains == arm.trains for t in spent.get(a.name, [])]
    every = [t for times in spent.values() for t in times]
    return float(np.mean(alike or every)) if (alike or every) else 0.0


def run_comparison(
    base: PretrainConfig,
    arms: Sequence[Arm],
    out: str | Path,
    settings: CompareSettings,
    *,
    on_line: Callable[[str], None] | None = None,
    finetune: LabelEfficiencySettings | None = None,
) -> Comparison:
    """Pretrain (or reuse) every arm x seed, probe held-out subjects, write the outputs into ``out``.

    ``on_line`` receives one plain progress line per finished arm x seed (with elapsed time and
    ETA) and a few status lines. Outputs: ``results.csv`` (one row per arm x seed x label),
    ``summary.json``, ``comparison.txt`` and ``runs/<arm>/seed<k>/``; the caller renders ``report.html``
    with :func:`medcl.report.comparison.render_comparison` (``medcl compare`` and ``medcl demo`` do).
    Lightning's info lines are hidden meanwhile (they would drown the comparison's own lines).
    ``finetune``: also fine-tune every arm and scratch at a few label sizes
    (:mod:`medcl.evaluate.compare.label_efficiency`: ``label_efficiency.csv``, ``finetune/``).
    """
    from medcl.pretrain.quiet import quiet_lightning

    with quiet_lightning(info=False):
        return _compare(base, arms, out, settings, on_line, finetune)


def _compare(base: PretrainConfig, arms: Sequence[Arm], out: str | Path, settings: CompareSettings,
             on_line: Callable[[str], None] | None, finetune: LabelEfficiencySettings | None) -> Comparison:
    from medcl.data.datasets import ImageDataset
    from medcl.data.preprocessed import warm_cache
    from medcl.evaluate.features import encode_dataset
    from medcl.evaluate.metrics import MetricSummary, write_probe_result
    from medcl.evaluate.probe import probe_features

    arms = list(arms)
    say = on_line or (lambda _line: None)
    t0 = time.perf_counter()
    planned, cohort = plan(base, arms, settings)
    if finetune is not None:
        finetune.check(cohort, arms)
    split = np.asarray(cohort.split())
    train_idx = np.flatnonzero(split == "train")
    held_out = np.flatnonzero(split != "train")
    if len(held_out) < 2 * settings.folds:
        raise MedclInputError(f"only {len(held_out)} subjects outside the training split: too few for "
                              f"{settings.folds}-fold probing (use --folds 2 or a larger cohort)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = Comparison(out=out, arms=arms, settings=settings, held_out=len(held_out),
                        labels={lab: cohort.manifest.label(lab).type for lab in settings.labels})
    for arm in arms:
        for label in settings.labels:
            marked, reason, measures = proxy_mark(cohort, arm, label, train_idx)
            result.proxy[(arm.name, label)] = {"marked": marked, "reason": reason, "measures": measures}
    if base.cache != "none":  # each scan preprocessed once, in parallel, before any arm trains
        warmed = warm_cache(cohort, cache_dir=base.cache_dir, workers=base.num_workers, progress=False)
        result.preprocessing_s = warmed.seconds
        say(warmed.line())
    images = ImageDataset(cohort, held_out, cache=base.cache, cache_dir=base.cache_dir)
    patients = np.asarray(cohort.patient_ids, dtype=object)
    say(f"comparing {len(arms)} arm(s) x {settings.seeds} seed(s) on {len(train_idx)} training / "
        f"{len(held_out)} held-out subjects -> {out}")

    spent: dict[str, list[float]] = {}
    ratios: list[float] = []
    units = [(item, out / "runs" / item.arm.dirname / f"seed{item.seed}") for item in planned]
    left = {item.key: item for item in planned}
    jobs = resolve_jobs(settings.jobs, runs=sum(not reusable(*u) for u in units if u[0].arm.trains),
                        gpu=trains_on_gpu(base))
    if jobs > 1:
        say(f"training {jobs} runs side by side, {threads_per_job(jobs)} thread(s) each")

    def finished(n: int, item: _Planned, seconds: float, status: str) -> None:
        """Record the run's fingerprint and time; one progress line with elapsed time and ETA."""
        result.fingerprints.setdefault(item.arm.name, {})[str(item.seed)] = item.fingerprint["fingerprint"]
        spent.setdefault(item.arm.name, []).append(seconds)
        del left[item.key]
        eta = sum(_expected(r.arm, spent, arms) for r in left.values()) / min(jobs, max(len(left), 1))
        say(f"[{n}/{len(planned)}] {item.key}: {status} | elapsed {format_duration(time.perf_counter() - t0)}, "
            f"ETA {format_duration(eta)}")

    ready = run_side_by_side(units, ensure_run_quietly, jobs=jobs,
                             local=lambda unit: not unit[0].arm.trains or reusable(*unit))
    for n, ((item, run_path), (reused, seconds, diverged)) in enumerate(ready, 1):
        unit_start = time.perf_counter() - seconds
        if diverged is not None:  # marked and left out of the statistics; the comparison goes on
            result.diverged.setdefault(item.arm.name, {})[item.seed] = diverged
            finished(n, item, time.perf_counter() - unit_start, f"DIVERGED ({diverged}); left out of the statistics")
            continue
        rows_held = _held_out(cohort, run_path if item.arm.trains else None)
        if not np.array_equal(rows_held, held_out):
            raise MedclInputError(f"{run_path}: its split differs from the cohort's; delete the run folder")
        encoder = _encoder(item, run_path, base, cohort)
        feats = encode_dataset(encoder, images, batch_size=settings.encode_batch_size, progress=False)
        collapsed, why = run_health(run_path) if item.arm.trains else (False, None)
        scores = []
        probe_dir = RunDir(run_path).probe_dir
        if probe_dir.is_dir():
            shutil.rmtree(probe_dir)  # probes of an earlier comparison (other labels, folds)
        for label, kind in result.labels.items():
            y = cohort.label(label)[held_out]
            ok = np.isfinite(y)
            metric = PRIMARY_METRIC[kind]
            per_fold: list[float] = []
            second: list[float] = []
            for r in range(settings.repeats):  # repeat r draws its folds with seed + 1000 r
                probe = probe_features(feats[ok], y[ok], patients[held_out][ok], kind, n_folds=settings.folds,
                                       seed=item.seed + 1000 * r,
                                       train_sizes=settings.train_sizes if r == 0 else None)
                if r == 0:  # the run's probe/ folder (label-efficiency curve included): the first draw
                    write_probe_result(probe, probe_dir, label, encoder=item.arm.name, held_out=True)
                per_fold += list(probe.metric(metric).per_fold)
                second.append(probe.metric(SECONDARY_METRIC[kind]).mean)
            summary = MetricSummary.from_folds(per_fold)
            result.folds[(item.arm.name, item.seed, label)] = per_fold
            n_lab = int(ok.sum())
            n_train = float(next(r["n_train"] for r in probe.rows
                                 if r["probe"] == "linear" and r["train_size"] == "all"))
            ratios.append((n_lab - n_train) / max(n_train, 1.0))
            secondary = {m: None for m in sorted(set(SECONDARY_METRIC.values()))}
            secondary[SECONDARY_METRIC[kind]] = float(np.mean(second))
            result.rows.append({
                "arm": item.arm.name, "method": item.arm.method,
                "prior": "+".join(item.arm.attributes or ()) or (item.arm.label or ""),
                "seed": item.seed, "label": label, "kind": kind, "metric": metric,
                "value": summary.mean, "fold_sd": summary.std, **secondary,
                "subjects": probe.n_subjects, "patients": probe.n_patients, "folds": probe.n_folds,
                "proxy": result.proxy[(item.arm.name, label)]["marked"], "collapsed": collapsed,
                "collapse_reason": why, "reused": reused, "seconds": round(seconds, 1),
                "fingerprint": item.fingerprint["fingerprint"][:16],
                **run_settings(item.config),
            })
            scores.append(f"{label} {metric}={summary.mean:.3f}")
        _write_run_artefacts(run_path, item, cohort, held_out, feats, settings)
        status = "reused" if reused else ("built" if not item.arm.trains else f"trained in {seconds:.0f} s")
        finished(n, item, time.perf_counter() - unit_start,
                 f"{status}; {', '.join(scores)}{' (collapsed!)' if collapsed else ''}")
    _in_plan_order(result, planned)

    if finetune is not None:
        from medcl.evaluate.compare.label_efficiency import run_label_efficiency

        result.label_efficiency = run_label_efficiency(
            base, arms, settings.seeds, out, finetune, baseline=settings.baseline,
            fingerprints=result.fingerprints, diverged=result.diverged, on_line=say)
    result.fold_ratio = float(np.mean(ratios)) if ratios else 0.25
    result.elapsed_s = time.perf_counter() - t0
    _write_outputs(result)
    return result


def _in_plan_order(result: Comparison, planned: Sequence[_Planned]) -> None:
    """Rows, fingerprints and divergences in the plan's order (seed-major), whatever order the
    runs finished in: the outputs do not depend on ``jobs``."""
    order = {(item.arm.name, item.seed): n for n, item in enumerate(planned)}
    result.rows.sort(key=lambda row: order[(row["arm"], row["seed"])])  # stable: labels keep their order
    result.fingerprints = {arm.name: {str(s): result.fingerprints[arm.name][str(s)]
                                      for s in range(result.settings.seeds) if str(s) in result.fingerprints[arm.name]}
                           for arm in result.arms if arm.name in result.fingerprints}
    result.diverged = {arm.name: dict(sorted(result.diverged[arm.name].items()))
                       for arm in result.arms if arm.name in result.diverged}


def _write_run_artefacts(run_path: Path, item: _Planned, cohort: Cohort, held_out: np.ndarray,
                         feats: np.ndarray, settings: CompareSettings) -> None:
    """What the report plots: embeddings coloured by the labels (and ``colour_by``), the prior
    kernel on a synthetic batch (no subject's attributes)."""
    from medcl.evaluate.artefacts import write_embeddings, write_kernel_batch

    colours = {label: cohort.label(label)[held_out] for label in settings.labels}
    for name in settings.colour_by:
        values, _, _ = cohort.attribute_matrix([name])
        colours.setdefault(name, values[held_out, 0])
    write_embeddings(run_path, feats, colours)
    if item.arm.trains and METHODS[item.arm.method].prior_kernel:
        kernel = RunDir(run_path).kernel()
        if kernel is not None:  # on a made-up batch from the kernel's de-identified reference
            from medcl.kernels.public import synthetic_batch

            values, missing = synthetic_batch(kernel.to_dict(), n=64, seed=0)
            write_kernel_batch(run_path, np.asarray(kernel(values, missing)))


def _write_outputs(result: Comparison) -> None:
    import pandas as pd

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
        "labels": {lab: {"kind": kind, "metric": PRIMARY_METRIC[kind],
                         "lower_is_better": lower_is_better(PRIMARY_METRIC[kind])}
                   for lab, kind in result.labels.items()},
        "held_out_subjects": result.held_out,
        "proxy_thresholds": {"abs_correlation": PROXY_CORRELATION, "cka": PROXY_CKA},
        "fold_test_train_ratio": result.fold_ratio,
        "elapsed_s": round(result.elapsed_s, 1),
        "preprocessing_s": round(result.preprocessing_s, 1),
        "summary": result.summary(),
        "diverged": {arm: {str(seed): why for seed, why in seeds.items()} for arm, seeds in result.diverged.items()},
        "fingerprints": result.fingerprints,
        "medcl_version": medcl_version(),
        **({"label_efficiency": result.label_efficiency.to_json()} if result.label_efficiency is not None else {}),
    }))
    table = result.table()
    if result.label_efficiency is not None:
        table += "\n\n" + result.label_efficiency.table()
    write_text(out / "comparison.txt", table + "\n")
