"""The shared cache of preprocessed images: each scan is read and resampled once per preprocessing.

Every consumer of a cohort's images (pretraining and its online probe, ``medcl probe``, fine-tuning,
the comparison's held-out set, the VAE prior, the demo) goes through :class:`PreprocessedImages`,
which reads one folder per preprocessing, ``<cache root>/<kind>-<preprocessing fingerprint>/``, of
one file per image keyed by the image's path and *stamp* (size and modification time; for a DICOM
series folder, of every file in it). A rewritten scan therefore gets a fresh entry, a changed
preprocessing a fresh folder, and two cohorts that list the same files share their entries.

The cache root is ``cache_dir`` when given (config key ``cache_dir``), else ``$MEDCL_CACHE_DIR``,
else ``$XDG_CACHE_HOME/medcl/preprocessed`` (``~/.cache/medcl/preprocessed``), created private
(0700): it holds the pixels of every scan, on the machine that trains (see docs/privacy.md).

Modes: ``"disk"`` reads an entry per item (memory flat in cohort size); ``"memory"`` fills the same
disk cache and also keeps the subset in RAM (fastest epochs, grows with the cohort); ``"none"``
preprocesses at every read and writes nothing; ``"auto"`` is ``"disk"`` for 3D and ``"memory"``
for 2D subsets whose pixels fit in :data:`MEMORY_BUDGET_BYTES` (``"disk"`` above it).

Entries are written to a temporary sibling and renamed (``os.replace``), so concurrent writers (two
runs, DDP ranks, the workers of :func:`warm_cache`) never leave a torn file: the worst case is that
two of them compute the same entry. An entry that cannot be read back (truncated, corrupt) is named
in a warning and rebuilt. MONAI's ``PersistentDataset`` provides the item hashing and the transform
split; :class:`PersistentCache` replaces only its read/write step, whose temporary file lives in
``/tmp`` (a ``shutil.move`` across file systems is a copy, not atomic) and which re-raises most
unreadable entries.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import Dataset as MonaiDataset
from monai.data import PersistentDataset

from medcl.atomic import atomic_path
from medcl.data.transforms import preprocessing_fingerprint, preprocessing_transforms
from medcl.errors import InputProblems, MedclInputError

if TYPE_CHECKING:
    from medcl.data.cohort import Cohort
    from medcl.data.manifest import Manifest

__all__ = [
    "CACHE_MODES",
    "MEMORY_BUDGET_BYTES",
    "PersistentCache",
    "PreprocessedImages",
    "WarmReport",
    "cache_folder",
    "default_cache_dir",
    "resolve_cache_mode",
    "warm_cache",
]

CACHE_MODES = ("auto", "disk", "memory", "none")
#: ``cache="auto"`` keeps a 2D subset in RAM up to this many bytes of preprocessed pixels.
MEMORY_BUDGET_BYTES = 1 << 30

log = logging.getLogger("medcl.data")


def default_cache_dir() -> Path:
    """The cache root when no ``cache_dir`` is given: ``$MEDCL_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/medcl/preprocessed`` (default ``~/.cache/medcl/preprocessed``)."""
    env = os.environ.get("MEDCL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "medcl" / "preprocessed"


def cache_folder(manifest: Manifest, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of ``manifest``'s preprocessing under the cache root (not created)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"{manifest.image.kind}-{preprocessing_fingerprint(manifest)}"


def resolve_cache_mode(mode: str, manifest: Manifest, n_images: int) -> str:
    """``mode`` itself, or what ``"auto"`` means for ``n_images`` of this manifest (module docstring)."""
    if mode not in CACHE_MODES:
        raise MedclInputError(f"cache must be one of {list(CACHE_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    if manifest.image.spatial_dims == 3:
        return "disk"
    pixels = manifest.image.channels * int(np.prod(manifest.preprocessing.size))
    return "memory" if 4 * pixels * n_images <= MEMORY_BUDGET_BYTES else "disk"


def image_stamp(path: Path) -> str:
    """Size and modification time of an image file, or of every file in a DICOM series folder."""
    try:
        if path.is_dir():
            stats = sorted((str(p.relative_to(path)), p.stat()) for p in path.rglob("*") if p.is_file())
            return ";".join(f"{name}:{st.st_size}-{st.st_mtime_ns}" for name, st in stats)
        st = path.stat()
    except OSError as err:
        raise MedclInputError(f"image {path} cannot be read: {err}") from None
    return f"{st.st_size}-{st.st_mtime_ns}"


class PersistentCache(PersistentDataset):
    """MONAI's ``PersistentDataset`` with an atomic write next to the entry and a rebuild of any
    unreadable entry (see the module docstring)."""

    def entry(self, item: dict[str, Any]) -> Path:
        """The cache file of ``item`` (``{"image": path, "stamp": stamp}``)."""
        return self.cache_dir / f"{self.hash_func(item).decode('utf-8')}{self.transform_hash}.pt"

    def _cachecheck(self, item_transformed: dict[str, Any]) -> dict[str, Any]:
        hashfile = self.entry(item_transformed)
        if hashfile.is_file():
            try:
                return torch.load(hashfile, weights_only=True)
            except FileNotFoundError:
                pass  # replaced or removed by another process between the check and the read
            except Exception as err:  # any unreadable entry is rebuilt
                log.warning("cache entry %s (image %s) is unreadable (%s: %s); rebuilding it",
                            hashfile, item_transformed["image"], type(err).__name__, err)
                hashfile.unlink(missing_ok=True)
        out = self._pre_transform(deepcopy(item_transformed))
        with atomic_path(hashfile) as tmp:
            torch.save(out, tmp)
        return out


def _make_private(folder: Path) -> None:
    """Create ``folder`` and parents; the cache root (the first created level) gets mode 0700."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    for p in missing:
        try:
            p.chmod(0o700)
        except OSError:  # created by a concurrent process we do not own
            pass


class PreprocessedImages:
    """The deterministic part, cached: ``[i] -> (C, *S)`` float32 tensor of cohort row ``indices[i]``.

    Args:
        cohort: the cohort.
        indices: cohort rows to serve.
        cache: ``"auto"``, ``"disk"``, ``"memory"`` or ``"none"`` (module docstring).
        cache_dir: cache root (default :func:`default_cache_dir`).
        cache_workers: processes that fill a ``"memory"`` subset's missing entries (default: up to 4).
    """

    def __init__(
        self,
        cohort: Cohort,
        indices: np.ndarray,
        cache: str = "auto",
        cache_dir: str | os.PathLike | None = None,
        cache_workers: int | None = None,
    ) -> None:
        manifest = cohort.manifest
        self.mode = resolve_cache_mode(cache, manifest, len(indices))
        paths = cohort.image_paths
        self.paths = [paths[i] for i in indices]
        transform = preprocessing_transforms(manifest)
        self.cache_dir: Path | None = None
        self._memory: list[torch.Tensor] | None = None
        if self.mode == "none":
            self.dataset: Any = MonaiDataset([{"image": str(p)} for p in self.paths], transform)
            return
        self.cache_dir = cache_folder(manifest, cache_dir)
        _make_private(self.cache_dir)
        data = [{"image": str(p), "stamp": image_stamp(p)} for p in self.paths]
        self.dataset = PersistentCache(data, transform, cache_dir=self.cache_dir)
        if self.mode == "memory":
            workers = cache_workers if cache_workers is not None else min(4, os.cpu_count() or 1)
            _fill(self, workers, progress=False)
            self._memory = [self._read(i) for i in range(len(self))]

    def __len__(self) -> int:
        return len(self.dataset)

    def entry(self, i: int) -> Path | None:
        """The cache file of item ``i`` (None without a disk cache)."""
        return None if self.cache_dir is None else self.dataset.entry(self.dataset.data[i])

    def _read(self, i: int) -> torch.Tensor:
        try:
            return self.dataset[i]["image"]
        except Exception as err:  # MONAI's message names the transform, not the file
            cause = err.__cause__ or err
            what = f"{type(cause).__name__}: {cause}"
            raise MedclInputError(f"image {self.paths[i]}: cannot be preprocessed ({what})") from err

    def __getitem__(self, i: int) -> torch.Tensor:
        return self._memory[i] if self._memory is not None else self._read(i)


@dataclass
class WarmReport:
    """What :func:`warm_cache` did: entries found, built, failed (one line each), time and folder."""

    folder: Path | None
    total: int
    cached: int = 0
    built: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for a terminal or a log."""
        rate = f", {self.built / self.seconds:.2f} scans/s" if self.built and self.seconds > 0 else ""
        failed = f", {len(self.problems)} failed" if self.problems else ""
        return (f"preprocessed {self.built} of {self.total} scan(s) ({self.cached} already cached{failed}) "
                f"in {self.seconds:.1f} s{rate} -> {self.folder}")


class _Fill(torch.utils.data.Dataset):
    """Items of a fill: build the entry if it is missing; return only a short status."""

    def __init__(self, images: PreprocessedImages, order: list[int]):
        self.images, self.order = images, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, k: int) -> tuple[str, str]:
        i = self.order[k]
        entry = self.images.entry(i)
        if entry is not None and entry.is_file():  # another process built it meanwhile
            return "cached", ""
        try:
            self.images._read(i)
        except MedclInputError as err:
            return "failed", str(err)
        return "built", ""


def _fill(images: PreprocessedImages, workers: int, *, progress: bool) -> WarmReport:
    start = time.perf_counter()
    missing = [i for i in range(len(images)) if not images.entry(i).is_file()]
    report = WarmReport(images.cache_dir, len(images), cached=len(images) - len(missing))
    # A random order per process: two fills of the same cohort at once rarely build the same entry.
    random.Random(os.getpid() ^ time.time_ns()).shuffle(missing)
    n_workers = min(workers, len(missing) // 4)  # a process per few scans at least: starting one costs
    loader = torch.utils.data.DataLoader(
        _Fill(images, missing), batch_size=None, num_workers=n_workers,
        multiprocessing_context="fork" if n_workers > 0 and hasattr(os, "fork") else None,
        worker_init_fn=_one_thread,
    )
    from tqdm import tqdm  # not tqdm.auto: its asyncio class iterates a DataLoader twice (workers start twice)

    bar = tqdm(loader, total=len(missing), desc="preprocessing", unit="scan", disable=not progress)
    # A DataLoader draws its base seed from torch's global generator: without the fork, a run whose
    # cache was cold would initialise its weights from another state than the same seed with a warm one.
    with torch.random.fork_rng(devices=[]):
        for status, problem in bar:
            if status == "failed":
                report.problems.append(problem)
            elif status == "built":
                report.built += 1
            else:
                report.cached += 1
    report.seconds = time.perf_counter() - start
    if report.problems:
        raise InputProblems(report.problems)
    return report


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)


def warm_cache(
    cohort: Cohort,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 0,
    progress: bool = True,
) -> WarmReport:
    """Build the disk-cache entries of ``indices`` (default: every subject) that are missing.

    ``workers`` processes preprocess in parallel (0: in this process). Safe to run while a
    training or another fill uses the same cache. Returns a :class:`WarmReport`.

    Raises:
        InputProblems: one line per image that cannot be preprocessed (the others are cached).
    """
    idx = np.arange(len(cohort)) if indices is None else np.asarray(indices)
    images = PreprocessedImages(cohort, idx, "disk", cache_dir)
    return _fill(images, workers, progress=progress)
