"""CLI commands of the evaluate stage: ``medcl probe``, ``attributes`` and ``compare``.

What a diagnosis team does after pretraining: measure what the encoder learned (probes,
fine-tuning), check which clinical attributes carry label information, and compare methods on their
own cohort (same encoder, budget and seeds). ``medcl export`` is in :mod:`medcl.cli.export_commands`;
``medcl finetune`` and ``predict`` (diagnosis models) in :mod:`medcl.cli.diagnosis_commands`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medcl.kernels.vocabulary import DEFAULT_BANDWIDTH_RULE, DEFAULT_INSTANCE_WEIGHT  # torch-free: --help stays fast

METHODS_HELP = ("du, simclr, dcl, align_uniform, random_init, kernel_du:ATTR[+ATTR], y_aware:ATTR, "
                "supervised:LABEL (cross-entropy / regression), supcon:LABEL")
"""``medcl.evaluate.compare.methods_help()``, spelled out so that ``--help`` does not import torch (the
method records do); tests/losses/test_method_records.py fails when the two differ."""


def _parse_sizes(text: str | None) -> list[int | str] | None:
    from medcl.errors import MedclInputError

    if not text:
        return None
    sizes: list[int | str] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "all":
            sizes.append("all")
            continue
        try:
            value = int(part)
        except ValueError:
            raise MedclInputError(
                f"--train-sizes {text!r}: expected comma-separated positive integers or 'all'"
            ) from None
        if value < 1:
            raise MedclInputError(f"--train-sizes {text!r}: sizes must be positive")
        sizes.append(value)
    return sizes


def parse_jobs(text: str) -> int | str:
    """``--jobs``: a positive number or ``auto``."""
    from medcl.errors import MedclInputError

    text = text.strip().lower()
    if text == "auto":
        return text
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise MedclInputError(f"--jobs {text!r}: expected a positive number or auto")
    return jobs


def probe_command(
    run_dir: Path = typer.Argument(..., help="run directory of a finished pretraining"),
    manifest: Path = typer.Option(..., "--manifest", "-m", help="cohort manifest (YAML) with the label"),
    label: str = typer.Option(..., "--label", "-l", help="label to probe (a manifest label name)"),
    train_sizes: str | None = typer.Option(
        None, "--train-sizes", help="training patients per fold (label-efficiency curve), e.g. 50,100,all"
    ),
    folds: int | None = typer.Option(None, "--folds", min=2, help="outer folds (default: the manifest's)"),
    knn: bool = typer.Option(False, "--knn", help="also run a k-nearest-neighbour probe"),
    random_init: bool = typer.Option(
        False, "--random-init", help="probe a randomly initialised encoder of the same spec (lower bound)"
    ),
    seed: int | None = typer.Option(None, "--seed", help="folds / subsampling seed (default: manifest's)"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="encoding batch size"),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: GPU if any)"),
    subjects: str = typer.Option(
        "outside", "--subjects",
        help="outside: only subjects outside the run's pretraining split (RUN_DIR/split.csv); all: every subject",
    ),
) -> None:
    """Probe a pretrained encoder on a label: linear (and kNN) models, patient-level cross-validation.

    By default only the subjects outside the run's pretraining split are scored (read from
    RUN_DIR/split.csv): an encoder is never graded on the images (or, for a supervised run, the
    labels) it was trained on. `--subjects all` scores every subject, with a warning.

    Every subject is encoded once without augmentation; then a scaled logistic regression (class
    labels) or ridge regression (continuous labels), its strength chosen by inner CV, is scored on
    each outer fold. Writes RUN_DIR/probe/LABEL.json and .csv.

    Example: `medcl probe runs/s3d -m data/s3d/manifest.yaml --label diagnosis --train-sizes 10,20,all --knn`
    """
    from medcl.errors import MedclInputError
    from medcl.evaluate.probe_run import probe_run
    from medcl.pretrain.run_dir import RunDir

    if subjects not in ("outside", "all"):
        raise MedclInputError(f"--subjects {subjects!r}: choose outside or all")
    if subjects == "all":
        typer.echo("warning: --subjects all: subjects the encoder was pretrained on are scored too; "
                   "the results are optimistic (a supervised run has seen their labels)", err=True)
    result = probe_run(
        run_dir,
        manifest,
        label,
        train_sizes=_parse_sizes(train_sizes),
        n_folds=folds,
        knn=knn,
        random_init=random_init,
        seed=seed,
        batch_size=batch_size,
        device=device,
        subjects=subjects,
    )
    which = "random-init encoder" if random_init else "pretrained encoder"
    typer.echo(
        f"probe of {label!r} ({result.kind}) with the {which}: {result.n_subjects} subjects, "
        f"{result.n_patients} patients, {result.n_folds} patient-level folds"
    )
    typer.echo(result.table())
    for note in result.notes:
        typer.echo(f"note: {note}")
    folder = RunDir(run_dir).probe_results_dir(random_init)
    typer.echo(f"results: {folder / (label + '.json')} (+ .csv)")


def attributes_command(
    manifest: Path = typer.Option(..., "--manifest", "-m", help="cohort manifest (YAML)"),
    label: str = typer.Option(..., "--label", "-l", help="label to align the attributes with"),
    combos: list[str] = typer.Option(
        [], "--combo", help="a combination of attributes joined by '+', e.g. age+sex (repeatable)"
    ),
    permutations: int = typer.Option(1000, "--permutations", min=0, help="label permutations for p-values"),
    seed: int = typer.Option(0, "--seed"),
    max_subjects: int = typer.Option(3000, "--max-subjects", min=3, help="subsample larger cohorts"),
    split: str = typer.Option(
        "train", "--split", help="subjects to use: train (default: never looks at test subjects), val, test or all"
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=2, help="pretraining batch size (kernel spectrum)"),
    lam: str = typer.Option("0.01", "--lam", help="kernel ridge lam (kernel spectrum): a number or inv_sqrt_batch"),
    instance_weight: float = typer.Option(
        DEFAULT_INSTANCE_WEIGHT, "--instance-weight", min=0.0, max=1.0,
        help="instance term w of the prior (kernel spectrum column 'retained (w=...)')",
    ),
    bandwidth_rule: str = typer.Option(
        DEFAULT_BANDWIDTH_RULE, "--bandwidth-rule",
        help="per_attribute or joint: a product kernel's median heuristic per attribute or on the joint vector",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="also write the tables as JSON"),
) -> None:
    """How well does each weak attribute's kernel align with a label, and how much of a batch does it keep?

    For every attribute (and each --combo) the centered kernel alignment between its prior kernel
    (fitted on the labelled training subjects) and the label's kernel (delta for classes, RBF for
    continuous), with a permutation p-value. High CKA and small p: the attribute carries label
    information and is a promising prior.

    Kernel spectrum: on training batches of --batch-size subjects, how many of the batch's
    directions the kernel-ridge smoother of kernel DU keeps (eigenvalues of K above lam) and the
    retained fraction mean e/(e+lam) (DU: ~1). A kernel on one or two scalar attributes keeps a
    handful of directions: kernel DU then barely sees individual scans unless an instance term
    (prior.instance_weight) or more attributes are added.

    Example: `medcl attributes --manifest data/s3d/manifest.yaml --label diagnosis --combo age+sex`
    """
    import numpy as np

    from medcl.atomic import write_json
    from medcl.data.cohort import Cohort
    from medcl.data.kernel_spectra import cohort_spectra
    from medcl.evaluate.attributes import attribute_alignment
    from medcl.kernels.spectrum import spectrum_table
    from medcl.pretrain.config import resolve_lam

    cohort = Cohort.from_manifest(manifest, check_files=False)
    report = attribute_alignment(
        cohort, label, combos=combos, permutations=permutations, seed=seed, max_subjects=max_subjects,
        split=None if split == "all" else split,
    )
    typer.echo(report.table())
    lam_value = resolve_lam(lam if lam == "inv_sqrt_batch" else _parse_lam(lam), batch_size)
    train = np.flatnonzero(np.asarray(cohort.split()) == "train")
    kernels = {n: [n] for n in cohort.attribute_names}
    kernels.update({c: c.split("+") for c in combos})
    options = {"batch_size": batch_size, "lam": lam_value, "seed": seed, "bandwidth_rule": bandwidth_rule}
    spectra = cohort_spectra(cohort, train, kernels, **options)
    remedied = cohort_spectra(cohort, train, kernels, instance_weight=instance_weight, **options) \
        if instance_weight > 0 else None
    typer.echo(f"\nkernel spectrum on training batches ({len(train)} training subjects)")
    typer.echo(spectrum_table(spectra, remedied))
    if out is not None:
        data = report.to_dict()
        data["spectrum"] = [r.to_dict() for r in spectra]
        data["spectrum_with_instance_term"] = [r.to_dict() for r in remedied] if remedied else None
        write_json(out, data)
        typer.echo(f"written: {out}")


def _parse_lam(text: str) -> float:
    from medcl.errors import MedclInputError

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise MedclInputError(f"--lam {text!r}: expected a number > 0 or inv_sqrt_batch")
    return value


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("probe")(probe_command)
    app.command("attributes")(attributes_command)


def compare_command(
    config: Path = typer.Option(..., "--config", "-c", help="base pretraining config (YAML): encoder, budget"),
    methods: str = typer.Option(
        ..., "--methods",
        help=f"comma-separated arms: {METHODS_HELP}",
    ),
    labels: list[str] = typer.Option(..., "--label", help="label to probe (repeat for several)"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for runs, results.csv, summary.json, report"),
    manifest: Path | None = typer.Option(None, "--manifest", "-m", help="cohort manifest (default: the config's)"),
    seeds: int = typer.Option(3, "--seeds", help="seeds per arm (0 .. S-1)"),
    folds: int = typer.Option(5, "--folds", help="outer folds of the held-out probe (patient-level)"),
    repeats: int = typer.Option(3, "--repeats", help="fold draws of the probe CV, averaged (less noise)"),
    baseline: str = typer.Option("du", "--baseline", help="arm the paired differences refer to"),
    jobs: str = typer.Option(
        "1", "--jobs", "-j",
        help="runs pretrained side by side, the CPU cores split between them; auto: one per core on a CPU "
        "(two small runs on one thread each beat one run on two), 1 on a GPU",
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="override a base config key, dotted, value as YAML: --set epochs=10"
    ),
    finetune: str | None = typer.Option(
        None, "--finetune", metavar="LABEL",
        help="label efficiency: also fine-tune every arm's encoder and a scratch one on LABEL at each --train-sizes",
    ),
    train_sizes: str | None = typer.Option(
        None, "--train-sizes",
        help="with --finetune: labelled training patients, N or F% (nested per seed); default 10%,25%,100%",
    ),
    finetune_mode: str = typer.Option("lp-ft", "--finetune-mode", help="with --finetune: linear | full | lp-ft"),
    finetune_epochs: int | None = typer.Option(
        None, "--finetune-epochs", min=1,
        help="with --finetune: maximum epochs of full fine-tuning (default 20; an epoch: at least 10 steps)",
    ),
) -> None:
    """Pretrain every arm with the base config (only the method / prior changes), probe the held-out
    subjects, print paired differences to the baseline with 95% CIs; write results.csv, summary.json
    and report.html. Finished runs in `--out` are reused only when their settings match.

    With `--finetune LABEL`: label efficiency. Every arm's encoder and a `scratch` one (same
    architecture, random init) are fine-tuned as `medcl finetune` does (manifest split: a nested,
    stratified part of the training patients' labels; early stopping on val; scored on test, which
    no run pretrained on) at each `--train-sizes` and seed; test AUC with paired differences to
    scratch and to the baseline (95% CIs over seeds) in label_efficiency.csv, summary.json, the
    table and report.html. Finished fine-tunes in `--out` are reused likewise.

    Example: `medcl compare --manifest synth/manifest.yaml --config pipelines/synthetic_2d.yaml
    --set epochs=10 --methods du,kernel_du:age,y_aware:age,supervised:diagnosis,supcon:diagnosis,random_init
    --label diagnosis --label age --seeds 3 --out cmp`
    (add `--finetune diagnosis --train-sizes 10%,25%,100%` for label efficiency)
    """
    from medcl.errors import MedclInputError
    from medcl.evaluate.compare import CompareSettings, parse_arms, run_comparison
    from medcl.evaluate.compare.label_efficiency import (
        DEFAULT_TRAIN_SIZES,
        LabelEfficiencySettings,
        parse_train_sizes,
    )
    from medcl.pretrain.config import load_config
    from medcl.report.comparison import render_comparison

    if finetune is None and (train_sizes is not None or finetune_epochs is not None or finetune_mode != "lp-ft"):
        raise MedclInputError("--train-sizes / --finetune-mode / --finetune-epochs need --finetune LABEL "
                              "(the label to fine-tune on)")
    finetuning = None
    if finetune is not None:
        from medcl.evaluate.finetune_loop import MODES

        if finetune_mode not in MODES:
            raise MedclInputError(f"--finetune-mode {finetune_mode!r}: choose one of {', '.join(MODES)}")
        options: dict[str, object] = {"mode": finetune_mode}
        if finetune_epochs is not None:
            options.update(epochs=finetune_epochs)
        finetuning = LabelEfficiencySettings(
            label=finetune, options=options,
            train_sizes=parse_train_sizes(train_sizes if train_sizes is not None else list(DEFAULT_TRAIN_SIZES)))
    arms = parse_arms(methods)
    if manifest is not None:  # as an override, so a base config without a manifest line validates
        overrides = [*(overrides or []), f"manifest={manifest.expanduser().resolve()}"]
    base = load_config(config, overrides)
    settings = CompareSettings(labels=list(labels), seeds=seeds, folds=folds, repeats=repeats, baseline=baseline,
                               jobs=parse_jobs(jobs), title=f"medcl compare: {Path(base.manifest).parent.name}")
    result = run_comparison(base, arms, out, settings, on_line=lambda line: typer.echo(line), finetune=finetuning)
    render_comparison(result)
    typer.echo("\n" + result.table())
    if result.label_efficiency is not None:
        typer.echo("\n" + result.label_efficiency.table())
    typer.echo(
        f"\n{len(result.rows) // max(len(settings.labels), 1)} runs in {result.elapsed_s / 60:.1f} min.\n"
        f"  report:  {out / 'report.html'}\n  summary: {out / 'summary.json'}\n  per run: {out / 'results.csv'}"
    )
    if result.label_efficiency is not None:
        typer.echo(f"  label efficiency: {out / 'label_efficiency.csv'} (models in {out / 'finetune'})")


def register_compare(app: typer.Typer) -> None:
    """Add ``compare`` to ``app``."""
    app.command("compare")(compare_command)
