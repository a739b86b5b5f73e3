"""``medcl pretrain``, ``medcl config show`` and ``medcl prior vae``."""

from __future__ import annotations

from pathlib import Path

import typer

config_app = typer.Typer(
    help="See and check a pretraining config without starting a run.",
    no_args_is_help=True,
)
prior_app = typer.Typer(
    help="Build prior embeddings of a cohort (e.g. a VAE latent) to use as a kernel attribute.",
    no_args_is_help=True,
)


def pretrain_command(
    config: Path | None = typer.Option(None, "--config", "-c", help="pretraining config (YAML)"),
    overrides: list[str] = typer.Option(
        [], "--set", help="override a config key, dotted, value as YAML: --set optimizer.lr=0.01"
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o",
        help="new run directory (default runs/CONFIG-METHOD-TIME, from the config file's name; required under "
        "torchrun / srun)"
    ),
    resume: Path | None = typer.Option(None, "--resume", help="continue the run in this directory"),
) -> None:
    """Pretrain an encoder (kernel decoupled uniformity or a baseline) and write a run directory.

    Example: `medcl pretrain --config pipelines/synthetic_3d.yaml --set epochs=5 --out runs/s3d`
    ; continue it later with `medcl pretrain --resume runs/s3d`.
    """
    from medcl.errors import MedclInputError

    if resume is None and config is None:
        raise MedclInputError("give --config FILE for a new run, or --resume RUN_DIR to continue one")
    if resume is not None and (config is not None or out is not None):
        raise MedclInputError("--resume continues a run with its own config: do not combine it with --config/--out")

    from medcl.pretrain.loop import pretrain
    from medcl.pretrain.loop import resume as resume_run
    from medcl.pretrain.module import NonFiniteLossError

    try:
        if resume is not None:
            run = resume_run(resume, overrides)
        else:
            from medcl.pretrain.config import load_config

            cfg = load_config(config, overrides)
            if out is None:
                import os

                from medcl.pretrain.launcher import RUN_DIR_VARIABLE, default_run_dir

                out = default_run_dir(config.stem, cfg.method)
                if cfg.num_nodes > 1 or str(cfg.devices) != "1":  # Lightning's device processes reuse it
                    os.environ[RUN_DIR_VARIABLE] = str(out)
            run = pretrain(cfg, out)
    except NonFiniteLossError as err:
        typer.secho(f"error: training diverged: {err}", fg="red", err=True)
        raise typer.Exit(1) from None
    if not run.summary_path.is_file():  # a non-zero DDP rank: rank 0 reports
        return
    s = run.summary()
    loss = s.get("final_loss")
    typer.echo(
        f"pretrained {s['encoder']['arch']} with {s['method']}: {s['epochs']} epochs, {s['steps']} steps, "
        f"final loss {loss if loss is None else round(loss, 4)}, {s['wall_time_s']} s\n"
        f"run directory: {run.path}\n"
        f"  encoder:    {run.encoder_weights}  (+ encoder.json)\n"
        f"  checkpoint: {run.last_checkpoint}\n"
        f"  metrics:    {run.metrics_path}  (TensorBoard: tensorboard --logdir {run.tb_dir})\n"
        f"  loss curve: {run.loss_plot}"
    )
    health = s.get("health") or {}
    if health.get("collapsed"):
        typer.secho(f"training health: COLLAPSED: {health.get('reason')}; see the warning above", fg="red",
                    err=True)
    elif health:
        typer.echo(f"training health: ok (spread {health.get('spread')}, "
                   f"effective rank {health.get('effective_rank')})")


@config_app.command("show")
def config_show_command(
    config: Path = typer.Option(..., "--config", "-c", help="pretraining config (YAML)"),
    overrides: list[str] = typer.Option(
        [], "--set", help="override a config key, dotted, value as YAML: --set optimizer.lr=0.01"
    ),
) -> None:
    """Print the resolved, validated config (every default filled) as YAML, and exit.

    The same parsing and `--set` handling as `medcl pretrain`: a bad key or value exits with code 2
    naming it. When the config's manifest exists, its attribute and label names are checked too.
    Every key is explained in docs/config.md.

    Example: `medcl config show --config pipelines/brain_mri_template.yaml --set manifest=cohort/manifest.yaml`
    """
    from medcl.data.manifest import load_manifest
    from medcl.errors import InputProblems
    from medcl.pretrain.config import load_config

    cfg = load_config(config, overrides)
    manifest = Path(cfg.manifest)
    problems = cfg.manifest_problems(load_manifest(manifest)) if manifest.is_file() else []
    if problems:
        raise InputProblems(problems, header=f"config {config} does not fit its manifest {manifest}")
    typer.echo(cfg.to_yaml(), nl=False)
    if not manifest.is_file():
        typer.secho(f"note: manifest {manifest} not found; its attribute and label names were not checked",
                    fg="yellow", err=True)


@prior_app.command("vae")
def prior_vae_command(
    manifest: Path = typer.Option(..., "--manifest", "-m", help="cohort manifest (YAML)"),
    out: Path = typer.Option(..., "--out", "-o", help="features file to write (.csv, .tsv or .parquet)"),
    epochs: int = typer.Option(20, "--epochs", min=1),
    latent_dim: int = typer.Option(16, "--latent-dim", min=1),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train a variational auto-encoder on the cohort's images; write per-subject latent means.

    Declare the file in the manifest as an embedding attribute to use it in the prior kernel:
    `{name: vae, type: embedding, features: vae.csv}`.

    Example: `medcl prior vae --manifest data/manifest.yaml --out data/vae.csv --epochs 30`
    """
    from medcl.data.vae_prior import VAEOptions, fit_vae_prior

    path = fit_vae_prior(manifest, out, VAEOptions(epochs=epochs, latent_dim=latent_dim,
                                                   batch_size=batch_size, lr=lr, seed=seed))
    typer.echo(f"wrote {latent_dim}-d VAE latent means per subject to {path}\n"
               f"use it in the manifest: {{name: vae, type: embedding, features: {path.name}}}")


def register(app: typer.Typer) -> None:
    """Add ``pretrain`` and the ``config`` and ``prior`` groups to ``app``."""
    app.command("pretrain")(pretrain_command)
    app.add_typer(config_app, name="config")
    app.add_typer(prior_app, name="prior")
