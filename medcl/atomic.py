"""Atomic file and folder writes: outputs appear complete or not at all."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``target``, on error remove it.

    Use for every output a user might read: a crash or a bad input never leaves a half-written
    file behind. ``is_dir=True`` yields an (empty, existing) temporary folder instead of a file.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        default_permissions(tmp)
        if is_dir and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def default_permissions(path: Path) -> None:
    """mkstemp/mkdtemp create private (0600/0700) paths; give them the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    if path.is_dir():
        os.chmod(path, 0o777 & ~umask)
    elif path.exists():
        os.chmod(path, 0o666 & ~umask)


def write_text(target: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_json(target: str | os.PathLike, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON."""
    return write_text(target, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python numbers, keys as strings and NaN/inf as None (valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
