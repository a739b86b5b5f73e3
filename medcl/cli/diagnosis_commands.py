"""CLI commands of diagnosis models: ``medcl finetune`` (train and save one) and ``medcl predict``.

A diagnosis model is a fine-tuned encoder + linear head saved as a folder (``model.safetensors``,
``model.json``, ``metrics.json``); ``medcl report MODEL_DIR`` shows its test metrics and
``medcl export MODEL_DIR`` writes it in the encoder export formats.
"""

from __future__ import annotations

from pathlib import Path

import typer


def _interval(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    low, high = entry.get("low"), entry.get("high")
    ci = "" if low is None or high is None else f"  [{low:.3f}, {high:.3f}]"
    return f"{entry['value']:.3f}{ci}"


def finetune_command(
    run_dir: Path = typer.Argument(..., help="run directory of a finished pretraining (its encoder)"),
    manifest: Path = typer.Option(..., "--manifest", "-m", help="cohort manifest (YAML) with the label"),
    label: str = typer.Option(..., "--label", "-l", help="label to fine-tune on"),
    out: Path | None = typer.Option(None, "--out", "-o", help="model folder (default RUN_DIR/finetune/LABEL)"),
    mode: str = typer.Option("lp-ft", "--mode", help="linear (a logistic / ridge head on the frozen encoder, "
                             "fitted in closed form) | full | lp-ft (that head, then full fine-tuning)"),
    init: str = typer.Option("pretrained", "--init", help="pretrained | scratch (same architecture, random init)"),
    train_size: str | None = typer.Option(None, "--train-size", help="training patients: N or F% (stratified, "
                                          "nested: 10% of a seed is inside its 25%)"),
    epochs: int = typer.Option(20, "--epochs", min=1, help="maximum epochs of full fine-tuning (an epoch: at "
                               "least 10 steps)"),
    patience: int = typer.Option(5, "--patience", min=1, help="early stopping on the validation metric (epochs)"),
    lr: float = typer.Option(1e-3, "--lr", help="head learning rate (AdamW)"),
    encoder_lr_mult: float = typer.Option(1.0, "--encoder-lr-mult", help="encoder rate = lr x this"),
    class_balanced: bool = typer.Option(False, "--class-balanced", help="weight classes by inverse frequency"),
    augmentation: str = typer.Option("auto", "--augmentation", help="pretraining preset (auto, xray2d, mri3d, "
                                     "ct3d) or none"),
    augmentation_strength: float = typer.Option(0.5, "--augmentation-strength", help="milder than pretraining (1)"),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=10, help="patient-level bootstrap resamples"),
    device: str = typer.Option("auto", "--device", "--accelerator", help="cpu, cuda, cuda:1 or auto"),
) -> None:
    """Fine-tune the encoder + a linear head into a diagnosis model and save it.

    Uses the manifest's patient-level train / val / test split: trains on train (or part of its
    patients), stops early on the validation metric, chooses the binary decision threshold on
    validation (Youden's J) and scores the test split once, with patient-level bootstrap 95 %
    intervals. Writes MODEL_DIR/model.safetensors + model.json (label, classes, threshold,
    preprocessing, provenance; no subject ids) and metrics.json. Refuses (exit 2) when a test
    subject was in the run's pretraining split (RUN_DIR/split.csv).

    Example: `medcl finetune runs/du --manifest synth/manifest.yaml --label diagnosis --train-size 25% --out models/dx`
    """
    from medcl.evaluate.finetune import finetune_run

    result = finetune_run(
        run_dir, manifest, label, out=out, progress=True, mode=mode, init=init, train_size=train_size,
        epochs=epochs, patience=patience, lr=lr, encoder_lr_mult=encoder_lr_mult,
        class_balanced=class_balanced, augmentation=augmentation, augmentation_strength=augmentation_strength,
        batch_size=batch_size, seed=seed, n_boot=bootstrap, device=device,
    )
    sizes = result["sizes"]
    typer.echo(
        f"fine-tuned on {label!r} ({result['kind']}, {mode}, {init}): {sizes['train_patients']} of "
        f"{sizes['train_patients_available']} training patients, {sizes['val_scans']} val / "
        f"{sizes['test_scans']} test scans, {result['epochs_run']} epoch(s), best epoch {result['best_epoch']}"
    )
    if result.get("threshold"):
        typer.echo(f"  decision threshold (val, Youden J): {result['threshold']['value']:.4f}")
    typer.echo("  test metric            value  [95% CI, patient bootstrap]")
    for name, entry in result["test"].items():
        typer.echo(f"  {name:<20} {_interval(entry)}")
    for note in result.get("notes", []):
        typer.echo(f"note: {note}")
    typer.echo(f"model: {result['path']}")


def predict_command(
    model_dir: Path = typer.Argument(..., help="diagnosis model folder (medcl finetune --out)"),
    out: Path = typer.Option(..., "--out", "-o", help="predictions CSV to write"),
    manifest: Path | None = typer.Option(None, "--manifest", "-m", help="predict every scan of this manifest"),
    images: list[Path] = typer.Option([], "--images", help="image files or folders (repeatable)"),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:1 or auto"),
) -> None:
    """Run a saved diagnosis model on scans; write one CSV row per scan.

    Columns: subject_id (with --manifest only), image, the probability of each class (or the
    value of a continuous label) and the predicted class (binary: at the threshold chosen on
    validation). The model's own preprocessing is used. A scan that cannot be read is named on
    stderr and skipped; the other rows are written and the exit code is 2 (bad input).

    Example: `medcl predict models/dx --images new_scans/ --out predictions.csv`
    """
    from medcl.evaluate.predict import predict_scans

    result = predict_scans(model_dir, out, manifest=manifest, images=images or None, batch_size=batch_size,
                           device=device, progress=True,
                           on_failure=lambda path, why: typer.secho(f"error: cannot read {path}: {why}",
                                                                    fg="red", err=True))
    typer.echo(f"{result.n_written} prediction(s) written to {result.path}")
    if result.failed:
        typer.secho(f"error: {len(result.failed)} scan(s) could not be read (named above); they have no row",
                    fg="red", err=True)
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("finetune")(finetune_command)
    app.command("predict")(predict_command)
