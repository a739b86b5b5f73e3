"""Export an encoder module and check the artefact reproduces its features before it appears.

The artefact is written to a temporary sibling folder, loaded back with
:func:`medcl.export.loader.load_encoder`, its features compared with the in-memory encoder on a probe input
(``atol``), and only then renamed into place. Nothing is written when any step fails.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medcl.atomic import default_permissions
from medcl.errors import MedclInputError
from medcl.export.loader import load_encoder
from medcl.export.registry import get_format, written_by
from medcl.models.saved import (
    check_document,
    encoder_document,
    input_shape,
)


class ExportCheckError(MedclInputError):
    """The exported artifact does not reproduce the encoder's features (nothing was written)."""


def _probe_input(shape: tuple[int, ...], batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *shape), generator=g)


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a.double() - b.double()).abs().max())


def export_module(
    module: nn.Module,
    input_spec: dict[str, Any],
    fmt: str,
    out: str | os.PathLike,
    *,
    spec: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    document: dict[str, Any] | None = None,
    overwrite: bool = False,
    atol: float = 1e-4,
) -> Path:
    """Export an encoder module and check the artifact reproduces its features.

    Args:
        module: the encoder, ``(n, C, *size) -> (n, F)``; a :class:`medcl.models.Encoder` carries
            its own architecture spec (``bundle`` and ``safetensors`` need one to rebuild it).
        input_spec: channels, spatial dims, size, spacing, intensity (as in ``encoder.json``).
        fmt: a format name of :mod:`medcl.export.registry` (``format_names()``).
        out: target path (a folder for a folder format; a file format's sidecars are written beside it).
        spec: architecture spec dict when ``module`` has no ``.spec``.
        training: method / attributes / cohort summary for the metadata (must hold no ids).
        document: the full medcl document to embed instead of building an encoder's (a diagnosis
            model's, from :func:`medcl.models.saved.diagnosis_document`); ``spec`` / ``training`` unused then.
        overwrite: replace an existing target.
        atol: tolerance of the round-trip check.

    Returns:
        The written path.

    Raises:
        MedclInputError: unknown format, existing target, a module the format cannot express;
            :class:`ExportCheckError` when the reloaded artifact's features differ. Nothing is
            written in either case.
    """
    record = get_format(fmt)
    out = with_format_suffix(Path(out), fmt)
    for target in record.targets(out):
        if target.exists() and not overwrite:
            raise MedclInputError(f"{target} exists; choose another --out or pass --overwrite")
        if target.is_dir() and not record.folder:
            raise MedclInputError(f"{target} is a folder; give a file path for format {fmt}")
    if document is not None:
        doc = check_document(copy.deepcopy(document), out)
    else:
        doc = encoder_document(module, input_spec, spec=spec, training=training)
    if any(p.device.type != "cpu" for p in module.parameters()):
        module = copy.deepcopy(module).cpu()  # artifacts are written (and checked) from CPU weights
    x = _probe_input(input_shape(input_spec))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        with _eval_mode(module), torch.no_grad():
            reference = module(x)
            if doc["out_features"] is None:
                doc["out_features"] = int(reference.shape[-1])
            tmp_out = tmp_dir / out.name
            try:
                written = record.write(module, doc, tmp_out, x)
            except MedclInputError as err:
                raise MedclInputError(_public_paths(str(err), tmp_dir, out.parent)) from err
            except Exception as err:
                first = _public_paths((str(err).strip().splitlines() or [""])[0], tmp_dir, out.parent)
                raise MedclInputError(
                    f"cannot export this encoder as {fmt} ({type(err).__name__}: {first}); "
                    "try --format safetensors or bundle"
                ) from err
            try:
                loaded = load_encoder(tmp_out)
            except MedclInputError as err:
                raise MedclInputError(_public_paths(str(err), tmp_dir, out.parent)) from err
            got = loaded(x)
        diff = _max_difference(reference, got)
        if not diff <= atol:
            raise ExportCheckError(
                f"the exported {fmt} encoder does not reproduce the features (max |difference| {diff:.3g} > "
                f"{atol:g}); nothing was written"
            )
        for path in written:  # all checks passed: move into place, with the usual permissions
            for item in (path, *path.rglob("*")) if path.is_dir() else (path,):
                default_permissions(item)  # some writers (safetensors) create 0600 files
            final = out.parent / path.name
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(path, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out


def with_format_suffix(out: Path, fmt: str) -> Path:
    """``out`` with the file extension of ``fmt`` appended when it has none (``enc`` -> ``enc.onnx``).

    A folder format keeps the name; any extension of the format is kept. Raises MedclInputError
    when ``out`` carries the extension another format writes (``enc.pt`` for onnx), which would be
    loaded as that format.
    """
    record = get_format(fmt)
    if record.folder:
        return out
    wanted, suffix = record.suffix, out.suffix.lower()
    if suffix in record.suffixes:
        return out
    other = getattr(written_by(suffix), "name", None)
    if other is not None:
        raise MedclInputError(
            f"--out {out}: the extension {suffix} is the {other} format's; use {out.with_suffix(wanted).name} "
            f"for --format {fmt}"
        )
    return out.with_name(out.name + wanted)


def _public_paths(message: str, tmp_dir: Path, target_dir: Path) -> str:
    """A message with the private temporary folder replaced by the target folder."""
    return message.replace(str(tmp_dir.resolve()), str(target_dir)).replace(str(tmp_dir), str(target_dir))


def default_export_path(run_dir: str | os.PathLike, fmt: str, *, stem: str = "encoder") -> Path:
    """Where ``medcl export`` writes when no ``--out`` is given: ``RUN_DIR/export/encoder[.ext]``
    (``MODEL_DIR/export/model[.ext]`` for a diagnosis model: ``stem="model"``)."""
    return Path(run_dir) / "export" / get_format(fmt).default_name(stem)
