"""Fingerprints that decide whether a finished arm x seed run can be reused.

The SHA-256 of the fully resolved config (less what the run's method never reads), the cohort's
content and the medcl version; see :mod:`medcl.evaluate.compare`.
"""


from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcl.models.saved import medcl_version
from medcl.pretrain.run_dir import RunDir

if TYPE_CHECKING:
    from medcl.data.cohort import Cohort
    from medcl.pretrain.config import PretrainConfig


FINGERPRINT_FILE = RunDir.FINGERPRINT
FINGERPRINT_VERSION = 1
# config keys that change nothing learned (display, where preprocessed images are kept): left out of fingerprints
_DISPLAY_KEYS = ("progress_bar", "cache", "cache_dir")


# ---------------------------------------------------------------------------------- fingerprints


def cohort_digest(cohort: Cohort, attributes: Sequence[str] | None = None) -> str:
    """SHA-256 of the cohort's content: manifest, table, each image's path and size, and the feature
    files of ``attributes`` (embedding attributes; None: every one the manifest declares).

    Image bytes are not read (a stat per image); regenerating a cohort changes its table or sizes.
    A run's fingerprint takes the feature files of the attributes it uses only, so refitting a VAE
    prior retrains the arms that use it and no other.
    """
    manifest = cohort.manifest
    h = hashlib.sha256()
    if manifest.path is not None and Path(manifest.path).is_file():
        h.update(Path(manifest.path).read_bytes())
    else:
        h.update(manifest.to_yaml().encode())
    h.update((manifest.base_dir / manifest.table).read_bytes())
    for spec in manifest.attributes:
        if spec.features and (attributes is None or spec.name in attributes):
            h.update(b"\0features\0" + spec.name.encode())
            h.update((manifest.base_dir / spec.features).read_bytes())
    for path in cohort.image_paths:
        p = Path(path)
        size = p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        h.update(f"\0{p.name}:{size}".encode())
    return h.hexdigest()


def learned_settings(config: PretrainConfig) -> dict[str, Any]:
    """The resolved config as a JSON-ready dict, less the options its method never reads.

    ``loss`` becomes the options the method's loss is built with (resolved: a default temperature
    and an explicit one are the same run) and ``prior`` is dropped when the run has no prior
    kernel, so a DU or SimCLR baseline is reused across ``--set prior.*`` or ``loss.sigma`` sweeps
    instead of being retrained (and, training being chaotic, scoring differently) for each. The
    manifest's path is dropped too: the cohort's content is hashed separately
    (:func:`cohort_digest`), so a cohort folder that was moved or copied keeps its runs.
    """
    from medcl.atomic import json_safe
    from medcl.pretrain.module import loss_options

    data = config.model_dump(mode="json")
    options = loss_options(config, kernel=None)
    options.pop("kernel", None)
    data["loss"] = json_safe(options)
    if config.kernel is None:
        data.pop("prior", None)
    data.pop("manifest", None)
    return data


def run_fingerprint(resolved: dict[str, Any], cohort_sha: str, version: str | None = None) -> dict[str, Any]:
    """The fingerprint record of one arm x seed run: hashes of its parts and of the whole.

    ``resolved``: the fully resolved config as a JSON-ready dict (display keys are dropped).
    """
    config = {k: v for k, v in resolved.items() if k not in _DISPLAY_KEYS}
    config_sha = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    version = medcl_version() if version is None else version
    whole = hashlib.sha256(f"{FINGERPRINT_VERSION}|{config_sha}|{cohort_sha}|{version}".encode()).hexdigest()
    return {"fingerprint": whole, "config_sha256": config_sha, "cohort_sha256": cohort_sha,
            "medcl_version": version, "format": FINGERPRINT_VERSION}


def stored_fingerprint(run_path: Path) -> str | None:
    """The fingerprint a finished run folder was stored with (None: none, or unreadable)."""
    try:
        return str(json.loads(RunDir(run_path).fingerprint_path.read_text())["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
