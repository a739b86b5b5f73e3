"""The README's commands work as written: every `medcl` line parses, and the quickstart runs.

What runs and what is only parsed (the choice, and why):
- Every `medcl ...` line of the README's bash blocks (also under `torchrun -m medcl` and `srun`)
  is parsed by the CLI itself (typer's click context): an unknown or missing option fails here.
- The lines that need a GPU (`--set accelerator=gpu`) are not run: their `--set` overrides are
  resolved and validated with `medcl config show`, which needs no device.
- `make demo` / `make test` are not run (they build a 3.6 GB environment; `make demo` is the
  demo's own test in tests/demo).
- The quickstart runs end to end (marked slow, ~1-3 minutes on 2 CPU cores) in a fresh folder, on a
  small BIDS dataset and a DICOM folder made from the synthetic cohort, in README order, each
  line as written plus tiny-size options appended (`TINY`): 16^3 images, one epoch, one seed.
  Between the builder and training the test shrinks the guessed preprocessing (as a user edits
  the generated manifest). The Python snippet that loads the export runs too.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest
import typer.main
import yaml

from medcl.cli import app, main
from medcl.data.synthetic import generate_cohort

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: Options appended to each quickstart command so that it runs in seconds on a CPU.
TINY_SETS = ["--set", "accelerator=cpu", "--set", "precision=32", "--set", "epochs=1", "--set", "batch_size=8",
             "--set", "num_workers=0", "--set", "encoder.arch=resnet10", "--set", "encoder.widths=[4,8,8,16]",
             "--set", "projection.hidden=16", "--set", "projection.dim=8", "--set", "cache=memory",
             "--set", "probe.every_n_epochs=0", "--set", "progress_bar=false"]
TINY = {
    "attributes": ["--permutations", "20"],
    "pretrain": TINY_SETS,
    "compare": [*TINY_SETS, "--repeats", "1", "--folds", "3"],
    "finetune": ["--epochs", "1", "--accelerator", "cpu"],
    "probe": ["--device", "cpu"],
}


def readme_commands(text: str | None = None) -> list[list[str]]:
    """Every command of the README's ```bash blocks as argv (continuations joined, comments dropped)."""
    text = README.read_text() if text is None else text
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


def medcl_args(argv: list[str]) -> list[str] | None:
    """The arguments after ``medcl`` (``medcl x``, ``torchrun ... -m medcl x``, ``srun ... medcl x``); None if none."""
    return argv[argv.index("medcl") + 1:] if "medcl" in argv else None


def parse(args: list[str]) -> tuple[str, dict]:
    """Parse ``medcl ARGS`` with the CLI's own parser: (sub-command path, its parameters). Raises on bad usage."""
    command, name, ctx, path = typer.main.get_command(app), "medcl", None, []
    args = list(args)
    while True:
        ctx = command.make_context(name, args, parent=ctx)
        if not hasattr(command, "resolve_command"):
            return " ".join(path), ctx.params
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, command, args = command.resolve_command(ctx, rest)
        path.append(name)


def _overrides(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--set"]


def _needs_gpu(args: list[str]) -> bool:
    return any(o.replace(" ", "") in ("accelerator=gpu", "accelerator=cuda") for o in _overrides(args))


def test_readme_commands_are_found() -> None:
    commands = readme_commands()
    assert ["make", "demo"] in commands and len(commands) > 15
    # continuation lines are joined and quoted values kept whole
    pretrain = next(c for c in commands if c[:2] == ["medcl", "pretrain"] and "attributes=[age, sex]" in c)
    assert pretrain[-2:] == ["--out", "runs/kdu"]
    assert readme_commands("```bash\nmedcl a \\\n  --b 'c d'  # note\n# only a comment\n```\n") == [
        ["medcl", "a", "--b", "c d"]]


@pytest.mark.parametrize("argv", [c for c in readme_commands() if medcl_args(c) is not None], ids=" ".join)
def test_every_readme_medcl_line_parses(argv: list[str]) -> None:
    name, params = parse(medcl_args(argv))
    assert name and params


def test_readme_covers_the_pipeline() -> None:
    names = {parse(args)[0] for c in readme_commands() if (args := medcl_args(c)) is not None}
    assert {"templates copy", "manifest from-bids", "manifest from-dicom", "validate", "attributes",
            "config show", "pretrain", "probe", "finetune", "predict", "report", "compare", "export"} <= names


@pytest.mark.parametrize("argv", [c for c in readme_commands() if _needs_gpu(medcl_args(c) or [])], ids=" ".join)
def test_gpu_lines_overrides_validate(argv: list[str], capsys) -> None:
    sets = [x for o in _overrides(medcl_args(argv)) for x in ("--set", o)]
    config = ROOT / "pipelines" / "brain_mri_template.yaml"
    assert main(["config", "show", "--config", str(config), *sets]) == 0, capsys.readouterr().err
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["accelerator"] == "gpu" and str(shown["devices"]) in " ".join(argv)


def _bids_from_synthetic(folder: Path) -> Path:
    """A BIDS dataset (participants.tsv + sub-*/ses-*/anat/*_T1w.nii.gz) from a tiny synthetic 3D cohort."""
    manifest = generate_cohort(folder / "synthetic", dims=3, subjects=60, size=16, seed=1)
    table = pd.read_csv(manifest.parent / "participants.csv")
    bids = folder / "bids"
    for row in table.itertuples():
        anat = bids / f"sub-{row.patient_id}" / f"ses-{row.session}" / "anat"
        anat.mkdir(parents=True)
        shutil.copy(manifest.parent / row.image, anat / f"sub-{row.patient_id}_ses-{row.session}_T1w.nii.gz")
    participants = table.drop_duplicates("patient_id")[["patient_id", "age", "sex", "site", "diagnosis"]]
    participants.rename(columns={"patient_id": "participant_id"}).assign(
        participant_id=lambda d: "sub-" + d["participant_id"]).to_csv(bids / "participants.tsv", sep="\t", index=False)
    return bids


def _shrink_preprocessing(manifest: Path) -> None:
    data = yaml.safe_load(manifest.read_text())
    data["preprocessing"].update({"spacing": None, "size": [16, 16, 16]})
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.slow
def test_quickstart_runs_as_written_on_a_small_cohort(tmp_path: Path, monkeypatch, capsys) -> None:
    data = tmp_path / "data"
    bids = _bids_from_synthetic(data)
    dicom = generate_cohort(data / "dicom", dims=2, subjects=6, size=16, seed=0, image_format="dicom").parent
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    text = README.read_text()
    quickstart = text[text.index("## Quickstart"):text.index("## GPUs")]
    ran = []
    for argv in readme_commands(quickstart):
        args = medcl_args(argv)
        assert args is not None, argv
        name = parse(args)[0]
        if name == "manifest from-bids":
            args = [str(bids) if a == "/data/my_bids" else a for a in args]
        elif name == "manifest from-dicom":  # the README's alternative to from-bids: its own folder here
            args = [str(dicom) if a == "/data/dicom_export" else "cohort_dicom/" if a == "cohort/" else a
                    for a in args]
        elif name == "compare":
            args = ["1" if a == "3" and args[i - 1] == "--seeds" else a for i, a in enumerate(args)]
            if "--finetune" in args:  # label efficiency: two sizes, one epoch per phase
                args = ["50%,100%" if args[i - 1] == "--train-sizes" else a for i, a in enumerate(args)]
                args += ["--finetune-epochs", "1"]
        elif name == "predict":  # new scans: two of the cohort's images; the other cohort: the same one
            scans = work / "new_scans"
            if not scans.is_dir():
                scans.mkdir()
                for image in sorted(bids.rglob("*_T1w.nii.gz"))[:2]:
                    shutil.copy(image, scans / image.name)
            args = ["cohort/manifest.yaml" if a == "other_cohort/manifest.yaml" else a for a in args]
        code = main([*args, *TINY.get(name, [])])
        assert code == 0, f"medcl {' '.join(args)} -> {code}\n{capsys.readouterr().err}"
        if name == "manifest from-bids":
            _shrink_preprocessing(work / "cohort" / "manifest.yaml")
        ran.append(name)
    assert ran[0] == "templates copy" and ran[-2:] == ["export", "compare"] and "finetune" in ran
    assert (work / "runs" / "kdu" / "report.html").is_file()
    assert (work / "runs" / "compare" / "results.csv").is_file()
    assert (work / "runs" / "compare" / "label_efficiency.csv").is_file()
    assert (work / "runs" / "kdu" / "finetune" / "diagnosis" / "model.json").is_file()
    assert (work / "models" / "dx" / "model.json").is_file() and (work / "predictions.csv").is_file()

    # the Python snippet right after the quickstart, as written
    snippet = re.search(r"```python\n(.*?)```", text[text.index("## Quickstart"):], re.DOTALL).group(1)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    import torch

    out = scope["model"](torch.randn(2, 1, 16, 16, 16))
    assert out.shape == (2, 2)
