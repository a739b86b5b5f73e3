"""The medcl encoder on disk: safetensors weights plus one JSON document (architecture, input spec).

A run directory stores its encoder this way (``encoder.safetensors`` + ``encoder.json``) and so do the
``safetensors`` and ``bundle`` exports (:mod:`medcl.export`); every other export format embeds the same
document. This module writes the document and rebuilds a trainable :class:`medcl.models.Encoder` from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medcl.errors import MedclInputError

ENCODER_FORMAT = "medcl-encoder"  # the "format" key of every medcl encoder document
FORMAT_VERSION = 1
METADATA_KEY = "medcl.json"  # extra file / metadata entry holding the document


def medcl_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medcl")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def input_shape(input_spec: dict[str, Any]) -> tuple[int, ...]:
    """``(C, *size)`` of one image from an input spec (``channels`` and ``size`` keys)."""
    try:
        channels = int(input_spec.get("channels", input_spec.get("in_channels")))
        size = [int(s) for s in input_spec.get("size", input_spec.get("spatial_size"))]
    except (TypeError, ValueError, AttributeError):
        raise MedclInputError(
            f"input spec must give 'channels' and 'size' (spatial size), got {input_spec!r}"
        ) from None
    if channels < 1 or not size or any(s < 1 for s in size):
        raise MedclInputError(f"input spec has invalid channels/size: {input_spec!r}")
    return (channels, *size)


def encoder_document(
    module: nn.Module,
    input_spec: dict[str, Any],
    *,
    spec: dict[str, Any] | None = None,
    out_features: int | None = None,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document stored with every export (same layout as a run's ``encoder.json``)."""
    if spec is None and hasattr(module, "spec") and hasattr(module.spec, "model_dump"):
        spec = module.spec.model_dump(mode="json")
    if out_features is None:
        out_features = getattr(module, "out_features", None)
    input_shape(input_spec)  # validates
    return {
        "format": ENCODER_FORMAT,
        "format_version": FORMAT_VERSION,
        "medcl_version": medcl_version(),
        "spec": spec,
        "input": dict(input_spec),
        "out_features": None if out_features is None else int(out_features),
        "training": training or {},
    }


def check_document(doc: Any, path: Path) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("format") != ENCODER_FORMAT:
        raise MedclInputError(f"{path}: not a medcl encoder (no '{ENCODER_FORMAT}' metadata)")
    if "input" not in doc:
        raise MedclInputError(f"{path}: medcl encoder metadata lacks the input spec")
    return doc


def parse_document(text: str | bytes | None, path: Path) -> dict[str, Any]:
    if text is None or text == "" or text == b"":
        raise MedclInputError(f"{path}: not a medcl encoder (no '{METADATA_KEY}' metadata found)")
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MedclInputError(f"{path}: medcl metadata is not valid JSON ({err})") from None
    return check_document(doc, path)


def rebuild_encoder(doc: dict[str, Any], weights: dict[str, torch.Tensor], path: Path) -> nn.Module:
    from medcl.models.encoders import EncoderSpec, build_encoder

    if not doc.get("spec"):
        raise MedclInputError(f"{path}: the metadata has no encoder 'spec' to rebuild the network from")
    try:
        encoder = build_encoder(EncoderSpec.model_validate(doc["spec"]))
    except Exception as err:  # pydantic ValidationError, ValueError from the builder
        raise MedclInputError(f"{path}: invalid encoder spec ({err})") from None
    try:
        encoder.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise MedclInputError(f"{path}: weights do not match the encoder spec ({first})") from None
    encoder.input_spec = dict(doc["input"])
    encoder.metadata = doc
    return encoder.eval()


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        return load_file(str(path)), header
    except (SafetensorError, OSError, ValueError) as err:
        raise MedclInputError(f"{path}: not a readable safetensors file ({err})") from None


def load_safetensors(path: Path, sidecar: Path | None = None) -> nn.Module:
    weights, header = read_safetensors(path)
    sidecar = sidecar or path.with_suffix(".json")
    if sidecar.is_file():
        doc = parse_document(sidecar.read_text(errors="replace"), sidecar)
    else:
        doc = parse_document(header.get(METADATA_KEY), path)
    return rebuild_encoder(doc, weights, path)


def state_dict_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage: give every tensor its own contiguous copy
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
