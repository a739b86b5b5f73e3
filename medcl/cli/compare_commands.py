"""``medcl compare``: every method on the user's own cohort, same encoder, budget and seeds."""

from __future__ import annotations

from pathlib import Path

import typer


def compare_command(
    config: Path = typer.Option(..., "--config", "-c", help="base pretraining config (YAML): encoder, budget"),
    methods: str = typer.Option(
        ..., "--methods",
        help="comma-separated arms: du, simclr, dcl, align_uniform, random_init, kernel_du:ATTR[+ATTR], "
        "y_aware:ATTR, supervised:LABEL",
    ),
    labels: list[str] = typer.Option(..., "--label", help="label to probe (repeat for several)"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for runs, results.csv, summary.json, report"),
    manifest: Path | None = typer.Option(None, "--manifest", "-m", help="cohort manifest (default: the config's)"),
    seeds: int = typer.Option(3, "--seeds", help="seeds per arm (0 .. S-1)"),
    folds: int = typer.Option(5, "--folds", help="outer folds of the held-out probe (patient-level)"),
    repeats: int = typer.Option(3, "--repeats", help="fold draws of the probe CV, averaged (less noise)"),
    baseline: str = typer.Option("du", "--baseline", help="arm the paired differences refer to"),
    overrides: list[str] = typer.Option(
        [], "--set", help="override a base config key, dotted, value as YAML: --set epochs=10"
    ),
) -> None:
    """Pretrain every arm with the base config (only the method / prior changes), probe the held-out
    subjects, print paired differences to the baseline with 95% CIs; write results.csv, summary.json
    and report.html. Finished runs in `--out` are reused only when their settings match.

    Example: `medcl compare --manifest synth/manifest.yaml --config pipelines/synthetic_2d.yaml
    --set epochs=10 --methods du,kernel_du:age,y_aware:age,supervised:diagnosis,random_init
    --label diagnosis --label age --seeds 3 --out cmp`
    """
    from medcl.evaluate.compare import CompareSettings, parse_arms, run_comparison
    from medcl.pretrain.config import load_config
    from medcl.report.comparison import render_comparison

    arms = parse_arms(methods)
    if manifest is not None:  # as an override, so a base config without a manifest line validates
        overrides = [*(overrides or []), f"manifest={manifest.expanduser().resolve()}"]
    base = load_config(config, overrides)
    settings = CompareSettings(labels=list(labels), seeds=seeds, folds=folds, repeats=repeats, baseline=baseline,
                               title=f"medcl compare: {Path(base.manifest).parent.name}")
    result = run_comparison(base, arms, out, settings, on_line=lambda line: typer.echo(line))
    render_comparison(result)
    typer.echo("\n" + result.table())
    typer.echo(
        f"\n{len(result.rows) // max(len(settings.labels), 1)} runs in {result.elapsed_s / 60:.1f} min.\n"
        f"  report:  {out / 'report.html'}\n  summary: {out / 'summary.json'}\n  per run: {out / 'results.csv'}"
    )


def register(app: typer.Typer) -> None:
    """Add ``compare`` to ``app``."""
    app.command("compare")(compare_command)
