"""Hospital scale: preprocessing a realistic 3D cohort once, reading it back, and a comparison's cost.

Writes (once, kept in ``--out``) a cohort of 1 mm brain-MRI-like volumes of 182x218x182 as int16
``.nii.gz`` with the usual header variety (orientations RAS / LAS / LPS / PIR / RPI, some
0.9x0.9x1.2 mm voxels), made by upsampling :func:`medcl.data.synthetic.generate_cohort`'s images
(so the labels and attributes still mean something), preprocessed to 2 mm and 96^3. Prints:

1. first-pass preprocessing rate (scans/s) with 1 and 2 worker processes (``medcl cache``'s path);
2. cached-read rate (scans/s, one thread) against the model's appetite: scans/s of one training
   step of the comparison's encoder at 96^3 on this CPU (2 views per scan), and their ratio;
3. peak resident memory of one pass over the disk cache at 1x and 10x cohort size (fresh processes;
   the 10x cohort lists hard links of the same scans, its cache entries are hard links too);
4. ``medcl compare`` (3 arms x 2 seeds x 1 epoch) wall time split into preprocessing and the rest,
   and how many scans it preprocessed: before (the code at ``--before``, via ``git archive``: each
   run builds its own cache) and after (shared cache, cold then warm).

Usage: ``nice -n 10 python bench/scale.py [--subjects 100] [--out DIR] [--before 80a2dcd]``
(``--skip-compare`` for 1-3 only). Counting and timing of preprocessing wrap the manifest's
deterministic chain (:func:`medcl.data.transforms.preprocessing_transforms`) in every process,
forked workers included (each call appends a line to a file).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from monai.transforms import Transform

SHAPE = (182, 218, 182)
ORIENTATIONS = ("RAS", "LAS", "LPS", "PIR", "RPI")
ARMS = "du,simclr,kernel_du:age"
HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------ the cohort


def write_cohort(out: Path, subjects: int) -> Path:
    """The big cohort in ``out/cohort`` (reused when it has ``subjects`` rows); returns its manifest."""
    import nibabel as nib
    import numpy as np
    import torch
    import yaml
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

    from medcl.data.synthetic import generate_cohort

    folder = out / "cohort"
    manifest = folder / "manifest.yaml"
    if manifest.is_file() and yaml.safe_load(manifest.read_text()).get("name") == f"scale-{subjects}":
        return manifest
    shutil.rmtree(folder, ignore_errors=True)
    small = generate_cohort(out / "small", dims=3, subjects=subjects, size=32, seed=0, overwrite=True)
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for k, src in enumerate(sorted((small.parent / "images").glob("*.nii.gz"))):
        vol = torch.from_numpy(np.asarray(nib.load(src).dataobj, dtype=np.float32))[None, None]
        big = torch.nn.functional.interpolate(vol, size=SHAPE, mode="trilinear", align_corners=False)[0, 0].numpy()
        big = big / max(float(big.max()), 1e-6) * 1000 + rng.normal(0, 5, SHAPE).astype(np.float32)
        data = np.clip(big, 0, 32767).astype(np.int16)
        spacing = (0.9, 0.9, 1.2) if k % 5 == 4 else (1.0, 1.0, 1.0)
        affine = np.diag([*spacing, 1.0])
        affine[:3, 3] = -np.asarray(SHAPE) * spacing / 2
        code = ORIENTATIONS[k % len(ORIENTATIONS)]
        change = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(code))
        data = apply_orientation(data, change)
        affine = affine @ inv_ornt_aff(change, SHAPE)
        nib.save(nib.Nifti1Image(data, affine), folder / "images" / src.name)
    shutil.copy(small.parent / "participants.csv", folder / "participants.csv")
    spec = yaml.safe_load(small.read_text())
    spec["name"] = f"scale-{subjects}"
    spec["preprocessing"].update(spacing=[2.0, 2.0, 2.0], size=[96, 96, 96])
    manifest.write_text(yaml.safe_dump(spec, sort_keys=False))
    print(f"wrote {subjects} volumes of {SHAPE} (int16 .nii.gz, orientations {'/'.join(ORIENTATIONS)}) "
          f"in {time.perf_counter() - t0:.0f} s, {sum(p.stat().st_size for p in folder.rglob('*.gz')) / 2**20:.0f} MiB")
    return manifest


def ten_times(manifest: Path, cache: Path) -> Path:
    """A cohort listing every scan 10 times (hard links, new ids) whose cache entries are hard links."""
    import pandas as pd

    from medcl.data.cohort import Cohort
    from medcl.data.preprocessed import PreprocessedImages, image_stamp

    folder = manifest.parent.parent / "cohort_x10"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "images").mkdir(parents=True)
    table = pd.read_csv(manifest.parent / "participants.csv")
    cohort = Cohort.from_manifest(manifest)
    images = PreprocessedImages(cohort, range(len(cohort)), "disk", cache)
    rows = []
    for r in range(10):
        for i, row in table.iterrows():
            path = folder / "images" / f"r{r}_{Path(row['image']).name}"
            os.link(cohort.image_paths[i], path)
            link = images.dataset.entry({"image": str(path), "stamp": image_stamp(path)})
            if not link.exists():
                os.link(images.entry(i), link)
            rows.append({**row, "subject_id": f"r{r}{row['subject_id']}", "patient_id": f"r{r}{row['patient_id']}",
                         "image": f"images/{path.name}"})
    pd.DataFrame(rows).to_csv(folder / "participants.csv", index=False)
    shutil.copy(manifest, folder / "manifest.yaml")
    return folder / "manifest.yaml"


# ------------------------------------------------------------------------------- measurements


def first_pass(manifest: Path, out: Path, workers: int) -> float:
    from medcl.data.cohort import Cohort
    from medcl.data.preprocessed import warm_cache

    cache = out / f"cache-first-w{workers}"
    shutil.rmtree(cache, ignore_errors=True)
    report = warm_cache(Cohort.from_manifest(manifest), cache_dir=cache, workers=workers, progress=False)
    return report.built / report.seconds


def cached_read(manifest: Path, cache: Path) -> float:
    from medcl.data.datasets import ImageDataset

    images = ImageDataset(manifest, cache="disk", cache_dir=cache)
    for i in range(len(images)):  # into the page cache, as in any epoch after the first
        images[i]
    t0 = time.perf_counter()
    for i in range(len(images)):
        images[i]
    return len(images) / (time.perf_counter() - t0)


def model_rate(widths: list[int] | tuple[int, ...], batch: int) -> float:
    """Scans/s one training step of the encoder + projector consumes at 96^3 (2 views per scan)."""
    import torch

    from medcl.losses import decoupled_uniformity
    from medcl.models.encoders import EncoderSpec, ProjectionHead, build_encoder

    spec = EncoderSpec(arch="resnet18", spatial_dims=3, in_channels=1, widths=list(widths), first_stride=2)
    enc = build_encoder(spec)
    head = ProjectionHead(enc.out_features, hidden=4 * widths[-1], out=2 * widths[-1])
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=1e-4)
    x = torch.randn(batch * 2, 1, 96, 96, 96)

    def step() -> None:
        z = head(enc(x)).view(batch, 2, -1)
        loss = decoupled_uniformity(z)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(2):
        step()
    return 2 * batch / (time.perf_counter() - t0)


def peak_mib() -> float:
    """This process's peak resident memory (Linux ``VmHWM``: reset at exec, unlike ``ru_maxrss``,
    which a child started by a big parent inherits)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(manifest: str, cache: str) -> None:
    """Fresh process: one pass over the disk cache through a loader; peak RSS (MiB) as JSON."""
    import torch  # noqa: F401  (imports count in the baseline, not in the growth)

    from medcl.data.datasets import ImageDataset, make_loader

    base = peak_mib()
    images = ImageDataset(manifest, cache="disk", cache_dir=cache)
    n = sum(len(b["index"]) for b in make_loader(images, 8, shuffle=True))
    print(json.dumps({"n": n, "base_mib": base, "peak_mib": peak_mib()}))


# ----------------------------------------------------------------------------------- compare


class _Counted(Transform):
    """The manifest's deterministic chain, appending its duration to ``counter`` at every call (a
    MONAI ``Transform``, so caches treat it as the deterministic part, as they treat the chain)."""

    def __init__(self, chain: Any, counter: str):
        self.chain, self.counter = chain, counter

    def __call__(self, data: Any) -> Any:
        t = time.perf_counter()
        result = self.chain(data)
        with open(self.counter, "a") as fh:  # append: safe from forked workers
            fh.write(f"{time.perf_counter() - t:.4f}\n")
        return result


def _compare_child(code: str, manifest: str, out: str, cache: str, counter: str, widths: str) -> None:
    """Fresh process running ``medcl compare`` from the code in ``code``; counts preprocessing."""
    sys.path.insert(0, code)
    import medcl.data.transforms as transforms

    make = transforms.preprocessing_transforms

    def counted(manifest_: Any) -> _Counted:
        return _Counted(make(manifest_), counter)

    transforms.preprocessing_transforms = counted
    from medcl.evaluate.compare import CompareSettings, parse_arms, run_comparison
    from medcl.pretrain.config import parse_config

    w = [int(v) for v in widths.split(",")]
    config = {
        "manifest": manifest, "method": "du", "attributes": [], "views": 2,
        "encoder": {"arch": "resnet18", "widths": w, "first_stride": 2},
        "projection": {"hidden": 4 * w[-1], "dim": 2 * w[-1]}, "epochs": 1, "batch_size": 8,
        "num_workers": 2, "seed": 0, "progress_bar": False, "checkpoint": {"every_n_epochs": 0},
        "accelerator": "cpu",
    }
    if cache:
        os.environ["MEDCL_CACHE_DIR"] = cache
    t0 = time.perf_counter()
    result = run_comparison(parse_config(config, source="bench"), parse_arms(ARMS), out,
                            CompareSettings(labels=["diagnosis"], seeds=2, folds=3, repeats=1, baseline="du"))
    wall = time.perf_counter() - t0
    times = [float(v) for v in Path(counter).read_text().split()] if Path(counter).is_file() else []
    print(json.dumps({"wall_s": wall, "preprocessed": len(times), "preprocess_cpu_s": sum(times),
                      "warm_s": getattr(result, "preprocessing_s", 0.0),
                      "peak_mib": peak_mib()}))


def _child(args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    run = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if run.returncode:
        raise RuntimeError(f"child {args[:2]} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def compare(manifest: Path, out: Path, before: str | None, widths: str) -> None:
    code_now = str(HERE.parent)
    runs = []
    if before:
        old = out / f"code-{before}"
        if not old.is_dir():
            old.mkdir(parents=True)
            archive = subprocess.run(["git", "-C", code_now, "archive", before], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        runs.append((f"before ({before}: a cache per run)", str(old), out / "cache-before"))
    shared = out / "cache-compare"
    shutil.rmtree(shared, ignore_errors=True)
    runs += [("after, cold shared cache", code_now, shared), ("after, warm shared cache", code_now, shared)]
    n = len(_read_rows(manifest))
    print(f"\nmedcl compare, arms {ARMS} x 2 seeds x 1 epoch, resnet18 widths {widths}, batch 8, "
          f"2 loader workers, {n} subjects:")
    for k, (name, code, cache) in enumerate(runs):
        shutil.rmtree(out / f"compare{k}", ignore_errors=True)
        counter = out / f"counter{k}.txt"
        counter.unlink(missing_ok=True)
        r = _child(["--compare-child", code, str(manifest), str(out / f"compare{k}"), str(cache), str(counter), widths])
        share = r["preprocess_cpu_s"] / r["wall_s"]
        print(f"  {name:34s} wall {r['wall_s']:7.1f} s  scans preprocessed {r['preprocessed']:5d} "
              f"({r['preprocessed'] / n:.1f} per scan)  preprocessing {r['preprocess_cpu_s']:7.1f} CPU-s "
              f"= {100 * share:5.1f} % of wall (up-front fill {r['warm_s']:.1f} s)  peak RSS {r['peak_mib']:.0f} MiB")


def _read_rows(manifest: Path) -> list[str]:
    return (manifest.parent / "participants.csv").read_text().splitlines()[1:]


# -------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None, help="kept between runs (default: a temporary folder)")
    parser.add_argument("--before", default="80a2dcd", help="git revision of the 'before' code ('' to skip)")
    parser.add_argument("--widths", default="16,32,64,128", help="the compare's ResNet-18 widths")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--only-compare", action="store_true", help="skip the measurements 1-3")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--compare-child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return _memory_child(*args.memory_child)
    if args.compare_child:
        return _compare_child(*args.compare_child)

    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="medcl-scale-")
    out = args.out or Path(tmp.name)
    out.mkdir(parents=True, exist_ok=True)
    manifest = write_cohort(out, args.subjects)
    print(f"cohort: {manifest} ({args.subjects} scans), preprocessing to 2 mm, 96^3, z-score")
    if not args.only_compare:
        measure(manifest, out, args.widths)
    if not args.skip_compare:
        compare(manifest, out, args.before or None, args.widths)
    if tmp is not None:
        tmp.cleanup()


def measure(manifest: Path, out: Path, widths_arg: str) -> None:
    """Items 1-3 of the module docstring."""

    rates = {w: first_pass(manifest, out, w) for w in (0, 2)}
    print(f"first pass: {rates[0]:.2f} scans/s in 1 process, {rates[2]:.2f} scans/s with 2 workers "
          f"(peak RSS {peak_mib():.0f} MiB in this process)")
    cache = out / "cache-first-w2"
    read = cached_read(manifest, cache)
    widths = [int(v) for v in widths_arg.split(",")]
    model = {tuple(w): model_rate(w, 4) for w in ([64, 128, 256, 512], widths)}
    for w, rate in model.items():
        print(f"cached read {read:.1f} scans/s (one thread) vs a training step of resnet18 {w} at 96^3, "
              f"batch 4 x 2 views: {rate:.2f} scans/s -> ratio {read / rate:.0f}x")

    x10 = ten_times(manifest, cache)
    peaks = [_child(["--memory-child", str(m), str(cache)]) for m in (manifest, x10)]
    for label, p in zip(("1x", "10x"), peaks, strict=True):
        print(f"one pass over the disk cache, {label:3s} n={p['n']:5d}: peak RSS {p['peak_mib']:.0f} MiB "
              f"(after imports {p['base_mib']:.0f})")
    print(f"peak growth 10x/1x: {peaks[1]['peak_mib'] / peaks[0]['peak_mib']:.3f}x (goal <= 1.2x)")


if __name__ == "__main__":
    main()
