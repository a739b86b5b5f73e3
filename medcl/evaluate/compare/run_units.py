"""One arm x seed run of a comparison: reuse it when finished with the same fingerprint, else train it.

Separate from the engine so that the worker processes of :mod:`medcl.evaluate.compare.parallel`
import only what a run needs (:func:`ensure_run_quietly` is the function they are handed).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from medcl.atomic import write_json, write_text
from medcl.evaluate.compare.arms import RANDOM_INIT
from medcl.evaluate.compare.fingerprints import stored_fingerprint
from medcl.pretrain.run_dir import RunDir

if TYPE_CHECKING:
    from medcl.evaluate.compare.engine import _Planned
    from medcl.pretrain.config import PretrainConfig


def reusable(item: _Planned, run_path: Path) -> bool:
    """True when ``run_path`` holds this run finished (or diverged) with the same fingerprint."""
    want = item.fingerprint["fingerprint"]
    if _stored_divergence(run_path, want) is not None:
        return True
    run = RunDir(run_path)
    done = (run.is_finished() if item.arm.trains else run.config_path.is_file())
    return done and stored_fingerprint(run_path) == want


def ensure_run(item: _Planned, run_path: Path) -> tuple[bool, float, str | None]:
    """Reuse the run at ``run_path`` when finished with the same fingerprint, else (re)train it.

    Returns ``(reused, seconds spent, why it diverged or None)``. A run whose loss became
    non-finite is kept with ``diverged.json`` (its fingerprint and the error) and reported as
    diverged, also when reused: training is deterministic, so retraining would diverge again.
    """
    from medcl.pretrain.module import NonFiniteLossError

    start = time.perf_counter()
    want = item.fingerprint["fingerprint"]
    run = RunDir(run_path)
    if reusable(item, run_path):
        return True, time.perf_counter() - start, _stored_divergence(run_path, want)
    if run_path.exists():
        shutil.rmtree(run_path)  # stale (other settings) or unfinished: never mixed in
    if item.arm.trains:
        from medcl.pretrain.loop import pretrain

        try:
            pretrain(item.config, run_path)
        except NonFiniteLossError as err:
            write_json(run.diverged_path, {"fingerprint": want, "error": str(err)})
            return False, time.perf_counter() - start, str(err)
    else:
        run_path.mkdir(parents=True, exist_ok=True)
        write_text(run.config_path, f"method: {RANDOM_INIT}\nseed: {item.seed}\n")
    write_json(run.fingerprint_path, item.fingerprint)
    return False, time.perf_counter() - start, None


def ensure_run_quietly(unit: tuple[_Planned, Path]) -> tuple[bool, float, str | None]:
    """:func:`ensure_run` in a worker process of :func:`~medcl.evaluate.compare.parallel.run_side_by_side`
    (Lightning's info lines hidden there too)."""
    from medcl.pretrain.quiet import quiet_lightning

    with quiet_lightning(info=False):
        return ensure_run(*unit)


def trains_on_gpu(base: PretrainConfig) -> bool:
    """Whether the runs would train on a GPU (``accelerator`` gpu/cuda, or auto with one visible)."""
    if base.accelerator in ("gpu", "cuda"):
        return True
    if base.accelerator != "auto":
        return False
    import torch

    return torch.cuda.is_available()


def _stored_divergence(run_path: Path, fingerprint: str) -> str | None:
    """The error of a run that diverged with this fingerprint (None: it did not, or other settings)."""
    try:
        record = json.loads(RunDir(run_path).diverged_path.read_text())
    except (OSError, ValueError):
        return None
    return str(record.get("error", "non-finite loss")) if record.get("fingerprint") == fingerprint else None
