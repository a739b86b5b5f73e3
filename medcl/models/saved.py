"""medcl models on disk: safetensors weights plus one JSON document (architecture, input spec).

This module owns the encoder document: its format name and version key, the one writer of a
run's encoder (:func:`save_encoder`), the one loader (:func:`load_safetensors`) and the random-init
rebuild of an encoder spec (:func:`random_encoder`). A run directory stores its encoder this way
(``encoder.safetensors`` + ``encoder.json``) and so do the ``safetensors`` and ``bundle`` exports
(:mod:`medcl.export`); every other export format embeds the same document. Run documents written
before the version key was unified carry ``"version"`` and a top-level ``"method"``;
:func:`upgrade_document` reads them as today's.

A diagnosis model (``medcl finetune --out MODEL_DIR``: encoder + linear head) is the same document
with ``format`` :data:`DIAGNOSIS_FORMAT` and a ``diagnosis`` block (label, classes, decision
threshold, preprocessing, provenance), saved as ``MODEL_DIR/model.safetensors`` + ``model.json``.
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
VERSION_KEY = "format_version"  # the document's version (older run documents: LEGACY_VERSION_KEY)
LEGACY_VERSION_KEY = "version"
METADATA_KEY = "medcl.json"  # extra file / metadata entry holding the document
DIAGNOSIS_FORMAT = "medcl-diagnosis-model"  # the "format" key of a diagnosis model's document
MODEL_WEIGHTS = "model.safetensors"  # a diagnosis model folder: weights,
MODEL_DOCUMENT = "model.json"  # ... its document,
MODEL_METRICS = "metrics.json"  # ... and its test metrics (written by medcl.evaluate.finetune)


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
        VERSION_KEY: FORMAT_VERSION,
        "medcl_version": medcl_version(),
        "spec": spec,
        "input": dict(input_spec),
        "out_features": None if out_features is None else int(out_features),
        "training": training or {},
    }


def diagnosis_document(
    model: nn.Module,
    input_spec: dict[str, Any],
    diagnosis: dict[str, Any],
    *,
    spec: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The document of a :class:`medcl.models.heads.DiagnosisModel`: the encoder's plus ``diagnosis``.

    ``diagnosis`` must hold ``label`` (``name``, ``kind``, ``classes``, ``positive``), ``outputs``
    (one name per output column), ``threshold`` (binary; else None) and ``preprocessing``; it must
    hold no subject id or value.
    """
    encoder = getattr(model, "encoder", None)
    if encoder is None or "label" not in diagnosis or "outputs" not in diagnosis:
        raise MedclInputError("a diagnosis document needs a DiagnosisModel and a diagnosis block with label/outputs")
    if spec is None and hasattr(encoder, "spec") and hasattr(encoder.spec, "model_dump"):
        spec = encoder.spec.model_dump(mode="json")
    doc = encoder_document(model, input_spec, spec=spec, out_features=model.out_features, training=training)
    doc["format"] = DIAGNOSIS_FORMAT
    doc["encoder_features"] = int(encoder.out_features)
    doc["diagnosis"] = diagnosis
    return doc


def document_version(doc: dict[str, Any]) -> int:
    """The version of an encoder document (``format_version``, or an older run's ``version``; 1 if none)."""
    return int(doc.get(VERSION_KEY, doc.get(LEGACY_VERSION_KEY, 1)))


def upgrade_document(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` in today's layout: an older run's ``version`` becomes ``format_version`` and its
    top-level ``method`` moves into ``training`` (a copy; today's documents come back unchanged)."""
    if LEGACY_VERSION_KEY not in doc and "method" not in doc:
        return doc
    doc = dict(doc)
    doc[VERSION_KEY] = document_version(doc)
    doc.pop(LEGACY_VERSION_KEY, None)
    if "method" in doc:
        doc["training"] = {"method": doc.pop("method"), **(doc.get("training") or {})}
    return doc


def check_document(doc: Any, path: Path) -> dict[str, Any]:
    """``doc`` if it is a medcl encoder or diagnosis document (upgraded to today's layout), else
    MedclInputError naming ``path``."""
    if not isinstance(doc, dict) or doc.get("format") not in (ENCODER_FORMAT, DIAGNOSIS_FORMAT):
        raise MedclInputError(f"{path}: not a medcl encoder (no '{ENCODER_FORMAT}' metadata)")
    if doc["format"] == DIAGNOSIS_FORMAT and not isinstance(doc.get("diagnosis"), dict):
        raise MedclInputError(f"{path}: a medcl diagnosis model document without its 'diagnosis' block")
    if "input" not in doc:
        raise MedclInputError(f"{path}: medcl encoder metadata lacks the input spec")
    return upgrade_document(doc)


def parse_document(text: str | bytes | None, path: Path) -> dict[str, Any]:
    if text is None or text == "" or text == b"":
        raise MedclInputError(f"{path}: not a medcl encoder (no '{METADATA_KEY}' metadata found)")
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MedclInputError(f"{path}: medcl metadata is not valid JSON ({err})") from None
    return check_document(doc, path)


def build_network(doc: dict[str, Any], path: Path | str = "the medcl document") -> nn.Module:
    """The (untrained) network a document describes: an encoder, or a diagnosis model."""
    from medcl.models.encoders import EncoderSpec, build_encoder
    from medcl.models.heads import DiagnosisModel

    if not doc.get("spec"):
        raise MedclInputError(f"{path}: the metadata has no encoder 'spec' to rebuild the network from")
    try:
        encoder = build_encoder(EncoderSpec.model_validate(doc["spec"]))
        if doc.get("format") != DIAGNOSIS_FORMAT:
            return encoder
        label = doc["diagnosis"]["label"]
        return DiagnosisModel(encoder, label["kind"], n_classes=len(label.get("classes") or []) or 2)
    except Exception as err:  # pydantic ValidationError, ValueError / KeyError from the builders
        raise MedclInputError(f"{path}: invalid model spec ({type(err).__name__}: {err})") from None


def rebuild_encoder(doc: dict[str, Any], weights: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """The trainable network of ``doc`` (encoder or diagnosis model) with ``weights``, in eval mode."""
    encoder = build_network(doc, path)
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
    """The network stored in a ``.safetensors`` file, rebuilt from its document: ``sidecar`` (default:
    the same name with ``.json``) when it exists, else the one embedded in the header.

    The one loader of medcl's encoder files (run directories, safetensors / bundle exports,
    diagnosis models). Returns it in eval mode with ``.input_spec`` and ``.metadata``; raises
    MedclInputError naming the file.
    """
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


def save_encoder(module: nn.Module, doc: dict[str, Any], weights: Path, document: Path) -> None:
    """Write ``module``'s weights to ``weights`` (the document embedded in the header, so the file
    loads alone) and ``doc`` to ``document`` (JSON), each atomically. A run's end-of-training export."""
    from safetensors.torch import save_file

    from medcl.atomic import atomic_path, write_json

    check_document(doc, document)
    header = {"format": ENCODER_FORMAT, METADATA_KEY: json.dumps(doc)}
    with atomic_path(weights) as tmp:
        save_file(state_dict_copy(module), str(tmp), metadata=header)
    write_json(document, doc)


def random_encoder(spec: Any, seed: int, input_spec: dict[str, Any] | None = None) -> nn.Module:
    """An untrained encoder of ``spec`` (an EncoderSpec or its dict, as in a document's ``spec``),
    initialised after ``torch.manual_seed(seed)``, in eval mode: the random-init baseline of
    ``medcl probe --random-init`` and of ``medcl compare``'s random_init arm. ``input_spec`` is
    attached as ``.input_spec`` when given."""
    from medcl.models.encoders import EncoderSpec, build_encoder

    if not isinstance(spec, EncoderSpec):
        spec = EncoderSpec.model_validate(spec)
    torch.manual_seed(seed)
    encoder = build_encoder(spec)
    if input_spec is not None:
        encoder.input_spec = input_spec
    return encoder.eval()


def save_diagnosis_model(model: nn.Module, doc: dict[str, Any], folder: Path) -> None:
    """Write ``model.safetensors`` + ``model.json`` into ``folder`` (the caller makes it atomic)."""
    from safetensors.torch import save_file

    check_document(doc, folder)
    save_file(state_dict_copy(model), str(folder / MODEL_WEIGHTS), metadata={METADATA_KEY: json.dumps(doc)})
    (folder / MODEL_DOCUMENT).write_text(json.dumps(doc, indent=2) + "\n")


def load_diagnosis_model(path: str | Path) -> nn.Module:
    """Load a diagnosis model saved by ``medcl finetune --out MODEL_DIR`` (the folder or its weights).

    Returns a :class:`medcl.models.heads.DiagnosisModel` in eval mode mapping ``(n, C, *size)``
    images to class probabilities (binary: ``[1 - p, p]``) or values; ``.metadata`` is the document
    (``.metadata["diagnosis"]``: label, classes, threshold, preprocessing, provenance) and
    ``.input_spec`` the encoder's input. Exports of a diagnosis model load with
    :func:`medcl.load_encoder`. Raises MedclInputError (names the file) for anything else.
    """
    path = Path(path)
    weights = path / MODEL_WEIGHTS if path.is_dir() else path
    if not weights.is_file():
        raise MedclInputError(f"{path}: no diagnosis model here ({MODEL_WEIGHTS} missing)")
    sidecar = weights.with_name(MODEL_DOCUMENT) if weights.name == MODEL_WEIGHTS else None
    model = load_safetensors(weights, sidecar)
    if model.metadata.get("format") != DIAGNOSIS_FORMAT:
        raise MedclInputError(f"{weights}: a medcl encoder, not a diagnosis model (made by medcl finetune --out)")
    return model
