"""Baselines at full strength: sweep a baseline's temperature x augmentation strength on the demo cohort.

Each cell of the grid is one ``medcl compare`` (the command a user runs) on the embedded demo
cohort at the demo's budget, with ``--set loss.temperature=T --set augmentation.strength=A``, in
its own folder ``OUT/<method>/t<T>_s<A>``: finished runs are reused when their fingerprint matches,
so the sweep can be extended (more seeds, more cells) or rerun for its table without retraining.
The held-out linear probe of the diagnosis (ROC-AUC, mean and sd over seeds, and every seed's
value) is tabulated per cell, as markdown for docs/baselines.md, with the sweep's wall time.

``--method`` is an arm of ``medcl compare``: ``simclr``, ``dcl``, ``supcon:diagnosis``,
``y_aware:age`` (the prior attribute after the colon; sigma at its default) sweep
``loss.temperature``; ``align_uniform`` (and ``du``) have no InfoNCE temperature and sweep their
``loss.t`` instead (give ``--temperatures`` in its scale, e.g. 1,2,4).

    python bench/baselines.py --out /tmp/baselines --dims 2 --seeds 2 \\
        --method simclr --temperatures 0.1,0.2,0.5 --strengths 0.25,0.5,1.0 [--dry-run]

Run it with ``nice`` and ``OMP_NUM_THREADS=1`` on a shared machine. ``--dry-run`` prints the
commands (and, from the demo's measured time per run, an estimate) without training.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

SECONDS_PER_RUN = {(2, 1): 30, (2, 2): 25, (3, 1): 1800, (3, 2): 150}
"""Training + probe time of one demo-budget run on 2 idle CPU cores, by (dims, encoder.first_stride):
2D measured (25-30 s); 3D at first_stride 1 the middle of the 10-50 minutes docs/kernel_spectrum.md
measured for a 32^3 run, at first_stride 2 a SimCLR run took about 150 s (docs/baselines.md). Used by
``--dry-run``."""


def first_stride(overrides: list[str], config: Path) -> int:
    """``encoder.first_stride`` of the cells: the last ``--set`` of it, else the base config's (1 if unread)."""
    for override in reversed(overrides):
        key, _, value = override.partition("=")
        if key.strip() == "encoder.first_stride":
            return int(value)
    try:
        return int((yaml.safe_load(config.read_text()) or {}).get("encoder", {}).get("first_stride", 1))
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return 1


def prepare(out: Path, dims: int) -> tuple[Path, Path]:
    """The demo cohort and the demo's base config (YAML) under ``out`` (reused when present)."""
    from medcl.demo import DemoSettings, base_config, demo_cohort

    settings = DemoSettings(dims=dims)
    manifest = demo_cohort(out / "demo", settings)
    config = out / "demo" / "base_config.yaml"
    data = base_config(manifest, settings).model_dump(mode="json")
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return manifest, config


T_METHODS = ("align_uniform", "du", "kernel_du")
"""Methods whose temperature is ``loss.t`` (a factor on squared distances) rather than ``loss.temperature``."""


def temperature_key(method: str) -> str:
    """The config key a method's temperature is swept with (``method``: an arm spec, ``y_aware:age``)."""
    return "loss.t" if method.partition(":")[0] in T_METHODS else "loss.temperature"


def cell_folder(out: Path, method: str, temperature: float, strength: float) -> Path:
    """``OUT/<method>/t<T>_s<A>`` (``y_aware:age`` -> ``y_aware-age``)."""
    return out / method.replace(":", "-").replace("+", "_") / f"t{temperature:g}_s{strength:g}"


def cell_command(manifest: Path, config: Path, out: Path, method: str, temperature: float,
                 strength: float, seeds: int, extra: list[str]) -> list[str]:
    """The ``medcl compare`` command line of one grid cell (``extra``: more ``--set`` overrides)."""
    overrides = [f"{temperature_key(method)}={temperature}", f"augmentation.strength={strength}", *extra]
    return [sys.executable, "-m", "medcl", "compare", "--manifest", str(manifest), "--config", str(config),
            "--methods", method, "--baseline", method, "--label", "diagnosis", "--seeds", str(seeds),
            *[a for o in overrides for a in ("--set", o)], "--out", str(out)]


def cell_result(out: Path, method: str) -> dict | None:
    """Mean and sd over seeds of the held-out diagnosis AUC of a finished cell, with every seed's
    value under ``per_seed`` (None: not run yet)."""
    path = out / "summary.json"
    if not path.is_file():
        return None
    rows = [r for r in json.loads(path.read_text())["summary"] if r["arm"] == method and r["label"] == "diagnosis"]
    if not rows:
        return None
    import pandas as pd

    runs = pd.read_csv(out / "results.csv")
    runs = runs[(runs["arm"] == method) & (runs["label"] == "diagnosis")].sort_values("seed")
    return {**rows[0], "per_seed": [float(v) for v in runs["value"]]}


def table(results: dict[tuple[float, float], dict | None], temperatures: list[float],
          strengths: list[float]) -> str:
    """Markdown: one row per temperature, one column per strength, ``mean ± sd (seed 0 / seed 1 / ...)``."""
    def cell(r: dict | None) -> str:
        if r is None or r["mean"] is None:
            return "–"
        sd = f" ± {r['sd']:.3f}" if r["sd"] is not None else ""
        seeds = " / ".join(f"{v:.3f}".lstrip("0") for v in r.get("per_seed", []))
        return f"{r['mean']:.3f}{sd} ({seeds or r['seeds']})" + (" !" if r["collapsed"] else "")

    head = "| temperature | " + " | ".join(f"strength {s:g}" for s in strengths) + " |"
    rule = "|---|" + "---|" * len(strengths)
    rows = [f"| {t:g} | " + " | ".join(cell(results[(t, s)]) for s in strengths) + " |" for t in temperatures]
    return "\n".join([head, rule, *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dims", type=int, choices=(2, 3), default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--method", default="simclr", help="an arm with a temperature: simclr, dcl, y_aware:age, "
                        "supcon:diagnosis; align_uniform sweeps loss.t")
    parser.add_argument("--temperatures", default="0.1,0.2,0.5")
    parser.add_argument("--strengths", default="0.25,0.5,1.0")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="another base-config override for every cell, e.g. encoder.first_stride=2")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and an estimated time")
    args = parser.parse_args(argv)
    temperatures = [float(t) for t in args.temperatures.split(",")]
    strengths = [float(s) for s in args.strengths.split(",")]
    cells = [(t, s) for t in temperatures for s in strengths]
    out = args.out / f"{args.dims}d"
    if args.dry_run:
        manifest, config = out / "demo" / "cohort" / "manifest.yaml", out / "demo" / "base_config.yaml"
    else:
        out.mkdir(parents=True, exist_ok=True)
        manifest, config = prepare(out, args.dims)
    results = {}
    start = time.perf_counter()
    for t, s in cells:
        folder = cell_folder(out, args.method, t, s)
        command = cell_command(manifest, config, folder, args.method, t, s, args.seeds, args.overrides)
        if args.dry_run:
            print(" ".join(command))
            results[(t, s)] = None
            continue
        print(f"== {args.method} temperature {t:g}, strength {s:g}", flush=True)
        subprocess.run(command, check=True)
        results[(t, s)] = cell_result(folder, args.method)
    if args.dry_run:
        stride = first_stride(args.overrides, config)
        minutes = len(cells) * args.seeds * SECONDS_PER_RUN[(args.dims, min(stride, 2))] / 60
        print(f"# {len(cells)} cells x {args.seeds} seeds: about {minutes:.0f} min on 2 idle CPU cores")
        return 0
    print(f"\n{args.method}, {args.dims}D demo cohort, rows {temperature_key(args.method)}, held-out diagnosis "
          f"ROC-AUC (mean ± sd over seeds; per seed):\n")
    print(table(results, temperatures, strengths))
    print(f"\n{len(cells)} cells x {args.seeds} seeds in {(time.perf_counter() - start) / 60:.1f} min "
          "(finished runs reused)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
