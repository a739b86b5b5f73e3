"""A comparison's results: rows per arm x seed x label, the summary and the plain-text table; the
fine-tuned label-efficiency results (:class:`LabelEfficiency`, made by :mod:`.label_efficiency`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medcl.evaluate.compare.arms import Arm, CompareSettings
from medcl.evaluate.compare.marks import PROXY_CKA, PROXY_CORRELATION
from medcl.evaluate.compare.statistics import PRIMARY_METRIC, corrected_fold_interval, lower_is_better, t_interval

SCRATCH = "scratch"  # the label-efficiency reference: the same architecture, randomly initialised
LABEL_EFFICIENCY_CSV = "label_efficiency.csv"

# ------------------------------------------------------------------------------------ results

RUN_SETTINGS = ("temperature", "temperature_key", "augmentation_strength")
"""Keys of a results row (and of the arm's summary entry) naming what the arm trained with."""
TAIL = 37  # width of the table's "Δ vs base, CI, wins" part


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
    diverged: dict[str, dict[int, str]] = field(default_factory=dict)  # arm -> seed -> error (no rows)
    elapsed_s: float = 0.0
    preprocessing_s: float = 0.0  # filling the shared cache of preprocessed images up front
    label_efficiency: LabelEfficiency | None = None  # fine-tuned arms vs scratch (``--finetune``)

    def summary(self) -> list[dict[str, Any]]:
        """Per arm and label: mean/sd over seeds, paired difference to the baseline with CIs, marks."""
        out = []
        base = self.settings.baseline
        for label, kind in self.labels.items():
            metric = PRIMARY_METRIC[kind]
            lower = lower_is_better(metric)
            by = {(r["arm"], r["seed"]): r for r in self.rows if r["label"] == label}
            for arm in self.arms:
                seeds = sorted(s for (a, s) in by if a == arm.name)
                diverged = sorted(self.diverged.get(arm.name, {}))
                if not seeds and len(diverged) < self.settings.seeds:
                    continue  # no run of this arm yet (an arm diverged on every seed is listed)
                vals = np.array([by[(arm.name, s)]["value"] for s in seeds], float)
                collapsed = [s for s in seeds if by[(arm.name, s)]["collapsed"]]
                mark = self.proxy.get((arm.name, label), {})
                out.append({
                    "arm": arm.name, "method": arm.method, "label": label, "kind": kind, "metric": metric,
                    "lower_is_better": lower, "seeds": len(seeds),
                    "mean": float(vals.mean()) if seeds else None,
                    "sd": float(vals.std(ddof=1)) if len(vals) > 1 else None,
                    "is_baseline": arm.name == base,
                    "diff": None if arm.name == base or not seeds else self._paired(arm.name, seeds, by, label, lower),
                    "proxy": bool(mark.get("marked")), "proxy_reason": mark.get("reason"),
                    "proxy_measures": mark.get("measures", {}),
                    "collapsed": bool(collapsed), "collapsed_seeds": collapsed,
                    "collapse_reasons": sorted({by[(arm.name, s)]["collapse_reason"] for s in collapsed
                                                if by[(arm.name, s)]["collapse_reason"]}),
                    "diverged_seeds": diverged,
                    **self._settings(arm.name, seeds, by),
                })
        return out

    @staticmethod
    def _settings(arm: str, seeds: list[int], by: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
        """The arm's resolved loss temperature (and its key) and augmentation strength, from its rows
        (every seed of an arm shares them; None where the arm has none, e.g. random init)."""
        row = by[(arm, seeds[0])] if seeds else {}
        return {key: row.get(key) for key in RUN_SETTINGS}

    def _paired(self, arm: str, seeds: list[int], by: dict[tuple[str, int], dict[str, Any]], label: str,
                lower: bool) -> dict[str, Any]:
        """The arm's paired difference to the baseline over the seeds both have, with its intervals."""
        base = self.settings.baseline
        paired = [s for s in seeds if (base, s) in by]
        diffs = [by[(arm, s)]["value"] - by[(base, s)]["value"] for s in paired]
        fold_diffs = [a - b for s in paired
                      for a, b in zip(self.folds.get((arm, s, label), []), self.folds.get((base, s, label), []),
                                      strict=False)]
        mean_d, lo, hi, df = t_interval(diffs)
        _, flo, fhi, fdf = corrected_fold_interval(fold_diffs, self.fold_ratio)
        return {
            "mean": mean_d, "sd": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None,
            "ci_low": lo, "ci_high": hi, "df": df, "per_seed": diffs,
            "wins": int(sum((d < 0) if lower else (d > 0) for d in diffs)),
            "folds_ci_low": flo, "folds_ci_high": fhi, "folds_df": fdf,
        }

    def table(self) -> str:
        """The comparison as plain text: one block per label, marks and a legend."""
        entries = self.summary()
        base = self.settings.baseline
        width = max([len("arm")] + [len(a.name) + 3 for a in self.arms])
        lines: list[str] = []
        for label, kind in self.labels.items():
            metric = PRIMARY_METRIC[kind]
            block = [e for e in entries if e["label"] == label]
            if not block:
                continue
            n_seeds = max(e["seeds"] for e in block) or 1
            better = "lower" if lower_is_better(metric) else "higher"
            ci_name = "95% CI over seeds" if n_seeds > 1 else "95% CI over folds*"
            lines.append(f"{label} · {metric} ({better} is better) · {n_seeds} seed(s) · linear probe, "
                         f"{self.settings.folds}-fold patient-level CV{repeats_phrase(self.settings)} "
                         f"on {self.held_out} held-out subjects")
            head = f"{'Δ vs ' + base:>10}  {ci_name:<20} wins"
            lines.append(f"{'arm':<{width}}  {'mean':>7} {'± sd':>7}   {head:<{TAIL}}  {'temp.':>7} {'aug.':>5}")
            for e in block:
                name = f"{e['arm']} {entry_marks(e)}".rstrip()
                if e["mean"] is None:
                    lines.append(f"{name:<{width}}  diverged on every seed: no result")
                    continue
                sd = f"± {e['sd']:.3f}" if e["sd"] is not None else " " * 7
                if e["diff"] is None:
                    tail = f"{'(baseline)':>10}"
                else:
                    d = e["diff"]
                    lo, hi = shown_interval(d, n_seeds)
                    ci = f"[{signed(lo)}, {signed(hi)}]" if np.isfinite(lo) else "—"
                    tail = f"{signed(d['mean']):>10}  {ci:<20} {d['wins']}/{len(d['per_seed'])}"
                lines.append(f"{name:<{width}}  {e['mean']:>7.3f} {sd:>7}   {tail:<{TAIL}}  {settings_cells(e)}")
            lines.append("")
        if any(e.get("temperature") is not None or e.get("augmentation_strength") is not None for e in entries):
            lines.append(SETTINGS_LEGEND)
        if any(e["proxy"] for e in entries):
            lines.append(f"† the arm's prior is the probed label or a close proxy (|r| >= {PROXY_CORRELATION} or "
                         f"CKA >= {PROXY_CKA} on the training split): not a fair test of that label")
        if any(e["collapsed"] for e in entries):
            lines.append("! training collapsed in at least one seed (summary.json: health)")
        if any(e["diverged_seeds"] for e in entries):
            seeds = "; ".join(f"{arm} seed {', '.join(map(str, sorted(s)))}" for arm, s in self.diverged.items())
            lines.append(f"✗ training diverged (non-finite loss; summary.json: diverged): {seeds}. Those seeds are "
                         "left out of the arm's mean and of the paired differences")
        if self.rows and max(r["seed"] for r in self.rows) == 0:
            lines.append("* one seed: the interval uses the folds (corrected resampled t); use --seeds 3 or more")
        trust = trust_line(entries)
        if trust:
            lines.append(trust)
        return "\n".join(lines).rstrip()


SETTINGS_LEGEND = ("temp.: the loss's resolved temperature (τ loss.temperature: InfoNCE-type logits are divided "
                   "by it; t loss.t: decoupled uniformity's distances are multiplied by it); aug.: "
                   "augmentation.strength")


def settings_values(entry: dict[str, Any]) -> tuple[str, str]:
    """A summary entry's resolved temperature (``τ 0.1``, ``t 2``) and augmentation strength, as
    the tables show them (``—`` where the arm has none)."""
    value, key = entry.get("temperature"), entry.get("temperature_key")
    temp = "—" if value is None else f"{'t' if key == 'loss.t' else 'τ'} {value:g}"
    strength = entry.get("augmentation_strength")
    return temp, "—" if strength is None else f"{strength:g}"


def settings_cells(entry: dict[str, Any]) -> str:
    """The text table's ``temp.`` and ``aug.`` cells of a summary entry."""
    temp, strength = settings_values(entry)
    return f"{temp:>7} {strength:>5}"


def trust_line(entries: list[dict[str, Any]]) -> str:
    """How much to trust the table, from its own spread: printed with every table.

    Training at small budgets is chaotic (a float-rounding change at the first step can move one
    run's AUC by 0.2), so the seed-to-seed sd is the noise any difference must clear, and another
    machine (another float path) draws other runs from the same distribution.
    """
    parts = []
    for label in dict.fromkeys(e["label"] for e in entries):
        sds = [e["sd"] for e in entries if e["label"] == label and e["sd"] is not None and e["seeds"] > 1]
        if sds:
            metric = next(e["metric"] for e in entries if e["label"] == label)
            parts.append(f"{label} {metric} sd {min(sds):.3f}–{max(sds):.3f}")
    if not parts:
        return ""
    return ("How much to trust this table: from seed to seed one arm moves by " + "; ".join(parts)
            + ". A Δ whose 95% CI includes 0 is within that noise; the intervals are over seeds on this cohort "
            "and budget, and another machine (another float path) gives other draws from the same spread: "
            "compare intervals, not ranks.")


def entry_marks(entry: dict[str, Any]) -> str:
    """The marks of a summary entry: † proxy prior, ! collapsed, ✗ diverged in some seed."""
    flags = (("†", entry["proxy"]), ("!", entry["collapsed"]), ("✗", entry["diverged_seeds"]))
    return "".join(mark for mark, on in flags if on)


def repeats_phrase(settings: CompareSettings) -> str:
    """`` x R draws`` when the probe CV is repeated (empty for one draw)."""
    return f" x {settings.repeats} draws" if settings.repeats > 1 else ""


def shown_interval(diff: dict[str, Any], n_seeds: int) -> tuple[float, float]:
    """The interval a table shows: over seeds, or over folds (corrected) with a single seed."""
    return (diff["ci_low"], diff["ci_high"]) if n_seeds > 1 else (diff["folds_ci_low"], diff["folds_ci_high"])


def signed(x: float | None, digits: int = 3) -> str:
    """A signed number for a table (``—`` for None or non-finite)."""
    return "—" if x is None or not np.isfinite(x) else f"{x:+.{digits}f}"


# ---------------------------------------------------------------------- label efficiency (fine-tuned)


@dataclass
class LabelEfficiency:
    """Fine-tuned test scores per arm x seed x size, and their paired statistics."""

    label: str
    kind: str
    baseline: str
    arms: list[str]  # "scratch" first, then the fine-tuned arms in comparison order
    sizes: list[str]
    options: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # arms not fine-tuned, with why
    test_patients: int = 0
    elapsed_s: float = 0.0

    @property
    def metric(self) -> str:
        return PRIMARY_METRIC[self.kind]

    def summary(self) -> list[dict[str, Any]]:
        """Per size and arm: mean, sd and 95 % t-interval over seeds, labelled training patients,
        and the paired differences (per seed) to scratch and to the baseline with 95 % t-intervals."""
        lower = lower_is_better(self.metric)
        by = {(r["arm"], r["train_size"], r["seed"]): r for r in self.rows}
        out = []
        for size in self.sizes:
            for arm in self.arms:
                seeds = sorted(s for (a, z, s) in by if a == arm and z == size)
                if not seeds:
                    continue
                vals = [float(by[(arm, size, s)]["value"]) for s in seeds]
                mean, low, high, _ = t_interval(vals)
                rows = [by[(arm, size, s)] for s in seeds]
                entry = {
                    "arm": arm, "train_size": size, "seeds": len(seeds), "metric": self.metric,
                    "train_patients": float(np.mean([r["train_patients"] for r in rows])),
                    "train_patients_per_class": rows[0].get("train_patients_per_class") or None,
                    "mean": mean, "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                    "ci_low": low, "ci_high": high, "proxy": bool(rows[0]["proxy"]),
                    "proxy_reason": rows[0]["proxy_reason"] or None,
                    "vs_scratch": None if arm == SCRATCH else self._paired(by, arm, SCRATCH, size, seeds, lower),
                    "vs_baseline": None if arm == self.baseline or self.baseline not in self.arms
                    else self._paired(by, arm, self.baseline, size, seeds, lower),
                }
                out.append(entry)
        return out

    @staticmethod
    def _paired(by: dict[tuple[str, str, int], dict[str, Any]], arm: str, ref: str, size: str,
                seeds: list[int], lower: bool) -> dict[str, Any] | None:
        paired = [s for s in seeds if (ref, size, s) in by]
        if not paired:
            return None
        diffs = [float(by[(arm, size, s)]["value"]) - float(by[(ref, size, s)]["value"]) for s in paired]
        mean, low, high, df = t_interval(diffs)
        return {"reference": ref, "mean": mean, "ci_low": low, "ci_high": high, "df": df, "per_seed": diffs,
                "seeds": paired, "wins": int(sum((d < 0) if lower else (d > 0) for d in diffs))}

    def table(self) -> str:
        """Plain-text table: one block per size, scratch first."""
        entries = self.summary()
        if not entries:
            return f"label efficiency · {self.label}: no fine-tune finished"
        better = "lower" if lower_is_better(self.metric) else "higher"
        n_seeds = max(e["seeds"] for e in entries)
        width = max(len("arm"), *(len(a) + 2 for a in self.arms))
        lines = [f"label efficiency · {self.label} · fine-tuned ({self.options.get('mode')}), test {self.metric} "
                 f"({better} is better) on {self.test_patients} test patients · {n_seeds} seed(s) · "
                 "Δ paired by seed, 95% CI over seeds",
                 f"{'size':<6} {'patients':>8}  {'arm':<{width}} {'mean':>7} {'± sd':>7}   "
                 f"{'Δ vs scratch':>12} {'95% CI':<18} {'Δ vs ' + self.baseline:>12} {'95% CI':<18}"]
        for size in self.sizes:
            block = [e for e in entries if e["train_size"] == size]
            for k, e in enumerate(block):
                head = f"{size:<6} {e['train_patients']:>8.0f}" if k == 0 else " " * 15
                name = e["arm"] + (" †" if e["proxy"] else "")
                sd = f"± {e['sd']:.3f}" if e["sd"] is not None else " " * 7
                cells = []
                for key in ("vs_scratch", "vs_baseline"):
                    d = e[key]
                    if d is None:
                        cells.append(f"{'—':>12} {'':<18}")
                        continue
                    ci = f"[{signed(d['ci_low'])}, {signed(d['ci_high'])}]" if np.isfinite(d["ci_low"]) else "—"
                    cells.append(f"{signed(d['mean']):>12} {ci:<18}")
                lines.append(f"{head}  {name:<{width}} {e['mean']:>7.3f} {sd:>7}   {cells[0]} {cells[1]}".rstrip())
        if any(e["proxy"] for e in entries):
            lines.append(f"† the arm's pretraining used {self.label!r} or a close proxy of it on every training "
                         "patient: " + "; ".join(sorted({f"{e['arm']}: {e['proxy_reason']}" for e in entries
                                                        if e["proxy"]}))
                         + " (not a few-label result for that arm)")
        lines += [f"note: {s}" for s in self.skipped]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The ``label_efficiency`` entry of ``summary.json``."""
        return {"label": self.label, "kind": self.kind, "metric": self.metric,
                "lower_is_better": lower_is_better(self.metric), "baseline": self.baseline,
                "reference": SCRATCH, "train_sizes": self.sizes, "arms": self.arms,
                "finetune_options": self.options, "test_patients": self.test_patients,
                "protocol": "fine-tuned on the labels of the manifest's training split (nested stratified patient "
                            "subsets per seed), early stopping and threshold on val, scored once on test; no test "
                            "subject in any run's pretraining split",
                "skipped": self.skipped, "elapsed_s": round(self.elapsed_s, 1), "summary": self.summary()}

    def write_csv(self, out: Path) -> Path:
        """``label_efficiency.csv`` (one row per arm x seed x size), atomically."""
        import pandas as pd

        from medcl.atomic import atomic_path

        path = Path(out) / LABEL_EFFICIENCY_CSV
        with atomic_path(path) as tmp:
            pd.DataFrame(self.rows).to_csv(tmp, index=False)
        return path
