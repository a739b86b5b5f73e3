"""Format ``bundle``: a MONAI bundle folder (metadata, inference config, safetensors weights, README).

Why this size: the bundle is the one format with its own documents (MONAI metadata with the schema's
required keys, a ConfigParser inference config rebuilding the preprocessing, a README); they are
written and checked together here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medcl.errors import MedclInputError
from medcl.models.saved import (
    DIAGNOSIS_FORMAT,
    METADATA_KEY,
    check_document,
    input_shape,
    read_safetensors,
    rebuild_encoder,
    state_dict_copy,
)

SUFFIX = ""  # a folder
MONAI_SCHEMA_URL = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
)
#: Keys MONAI's bundle metadata schema (meta_schema_20220324) requires.
MONAI_REQUIRED_METADATA = (
    "version",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "optional_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)
MONAI_TENSOR_KEYS = (
    "type",
    "format",
    "modality",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range",
    "is_patch_data",
    "channel_def",
)


def load(path: Path) -> nn.Module:
    meta_file = path / "configs" / "metadata.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MedclInputError(f"{meta_file}: unreadable bundle metadata ({err})") from None
    doc = check_document(meta.get("medcl") if isinstance(meta, dict) else None, meta_file)
    weights_file = path / "models" / "model.safetensors"
    if not weights_file.is_file():
        raise MedclInputError(f"{path}: bundle has no models/model.safetensors")
    weights, _ = read_safetensors(weights_file)
    return rebuild_encoder(doc, weights, weights_file)


def _bundle_transforms(input_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """MONAI ConfigParser definitions of the preprocessing the encoder expects."""
    _, *size = input_shape(input_spec)
    spatial_dims = len(size)
    # medcl's own loader (a MONAI LoadImaged with medcl's readers): colour PNG -> grey, DICOM
    # series folders, NRRD, channel first, float32, exactly as in training
    chain: list[dict[str, Any]] = [
        {"_target_": "medcl.data.readers.load_image_transform", "keys": "image",
         "channels": int(input_spec.get("channels", 1)), "dtype": "$np.float32"},
    ]
    orientation = input_spec.get("orientation")
    if spatial_dims == 3 and orientation:
        chain.append({"_target_": "Orientationd", "keys": "image", "axcodes": orientation, "labels": None})
    if input_spec.get("spacing"):
        chain.append(
            {"_target_": "Spacingd", "keys": "image", "pixdim": input_spec["spacing"], "mode": "bilinear"}
        )
    intensity = input_spec.get("intensity") or {}
    method = intensity.get("method", "none") if isinstance(intensity, dict) else str(intensity)
    if method == "zscore":
        chain.append(
            {"_target_": "NormalizeIntensityd", "keys": "image", "channel_wise": True,
             "nonzero": bool(intensity.get("nonzero", False))}
        )
    elif method == "minmax":
        chain.append(
            {"_target_": "ScaleIntensityd", "keys": "image", "minv": 0.0, "maxv": 1.0, "channel_wise": True}
        )
    elif method == "percentile":
        chain.append(
            {"_target_": "ScaleIntensityRangePercentilesd", "keys": "image",
             "lower": intensity.get("lower", 0.5), "upper": intensity.get("upper", 99.5),
             "b_min": 0.0, "b_max": 1.0, "clip": True, "channel_wise": True}
        )
    chain.append({"_target_": "ResizeWithPadOrCropd", "keys": "image", "spatial_size": list(size)})
    chain.append({"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32", "track_meta": False})
    return chain


def bundle_inference_config(doc: dict[str, Any]) -> dict[str, Any]:
    """``configs/inference.json``: rebuild the encoder (or diagnosis model) and its preprocessing."""
    config = {
        "imports": [
            "$import torch",
            "$import numpy as np",
            "$import safetensors.torch as safetensors_torch",
            "$import medcl.models.encoders as medcl_encoders",
        ],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "encoder_spec": doc["spec"],
        "input_spec": doc["input"],
        "network_def": "$medcl_encoders.build_encoder("
        "medcl_encoders.EncoderSpec.model_validate(@encoder_spec))",
        "network": "$@network_def.to(@device)",
        "checkpoint": "$@bundle_root + '/models/model.safetensors'",
        "load_weights": "$@network.load_state_dict(safetensors_torch.load_file(@checkpoint))",
        "preprocessing": {"_target_": "Compose", "transforms": _bundle_transforms(doc["input"])},
        "features": "$lambda image: @network(image.to(@device))",
    }
    if doc.get("format") == DIAGNOSIS_FORMAT:  # encoder + head: the network is rebuilt from the document
        config["imports"].append("$import medcl.models.saved as medcl_saved")
        config["medcl_document"] = doc
        config["network_def"] = "$medcl_saved.build_network(@medcl_document)"
        config["predict"] = config.pop("features")
    return config


def bundle_metadata(doc: dict[str, Any], *, version: str = "0.1.0") -> dict[str, Any]:
    """``configs/metadata.json``: MONAI's mandatory keys plus the medcl document."""
    import monai

    channels, *size = input_shape(doc["input"])
    training = doc.get("training") or {}
    method = training.get("method", "unknown")
    attributes = training.get("attributes") or []
    diagnosis = doc.get("diagnosis") if doc.get("format") == DIAGNOSIS_FORMAT else None
    try:
        import safetensors

        optional = {"safetensors": safetensors.__version__}
    except ImportError:  # pragma: no cover - safetensors is a dependency
        optional = {}
    return {
        "schema": MONAI_SCHEMA_URL,
        "version": version,
        "changelog": {version: "exported by medcl"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "optional_packages_version": {"medcl": doc.get("medcl_version", "unknown"), **optional},
        "required_packages_version": {"medcl": doc.get("medcl_version", "unknown")},
        "name": "medcl diagnosis model" if diagnosis else "medcl encoder",
        "task": _task(diagnosis),
        "description": (
            f"{len(size)}D image encoder pretrained with medcl (method: {method}"
            + (f"; weak attributes: {', '.join(map(str, attributes))}" if attributes else "")
            + f"). Maps a ({channels}, {', '.join(map(str, size))}) image to "
            + (f"{', '.join(diagnosis['outputs'])}." if diagnosis else f"{doc.get('out_features')} features.")
        ),
        "authors": "medcl user",
        "copyright": "Copyright (c) the model's authors",
        "intended_use": "Research use; features for training diagnosis models. Not a medical device.",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": str(doc["input"].get("modality", "n/a")),
                    "num_channels": channels,
                    "spatial_shape": list(size),
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {str(c): f"channel {c}" for c in range(channels)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "probabilities" if diagnosis and diagnosis["label"]["kind"] != "continuous" else "tuples",
                    "format": "classification" if diagnosis else "latent",
                    "modality": "n/a",
                    "num_channels": int(doc.get("out_features") or 0),
                    "spatial_shape": [],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {str(k): n for k, n in enumerate(diagnosis["outputs"])} if diagnosis else {},
                }
            },
        },
        "medcl": doc,
    }


def _task(diagnosis: dict[str, Any] | None) -> str:
    if diagnosis is None:
        return "Image feature extraction (self-supervised encoder for downstream diagnosis models)"
    label = diagnosis["label"]
    return f"Image {label['kind']} prediction of {label['name']!r} (fine-tuned medcl encoder + linear head)"


def check_bundle_metadata(meta: dict[str, Any]) -> list[str]:
    """Problems with bundle metadata against the keys MONAI's schema requires (empty = fine)."""
    problems = [f"missing key {k!r}" for k in MONAI_REQUIRED_METADATA if k not in meta]
    fmt = meta.get("network_data_format", {})
    for side in ("inputs", "outputs"):
        tensors = fmt.get(side)
        if not isinstance(tensors, dict) or not tensors:
            problems.append(f"network_data_format.{side} must be a non-empty mapping")
            continue
        for name, spec in tensors.items():
            where = f"network_data_format.{side}.{name}"
            problems += [f"{where}: missing key {k!r}" for k in MONAI_TENSOR_KEYS if k not in spec]
    return problems


def _bundle_readme(meta: dict[str, Any]) -> str:
    doc = meta["medcl"]
    inp = doc["input"]
    training = doc.get("training") or {}
    lines = [
        f"# {meta['name']} (MONAI bundle)",
        "",
        meta["description"],
        "",
        "## Input",
        "",
        f"- channels: {inp.get('channels')}",
        f"- spatial dims: {inp.get('spatial_dims', len(inp.get('size', [])))}",
        f"- size: {inp.get('size')}",
        f"- spacing: {inp.get('spacing')}",
        f"- intensity: {json.dumps(inp.get('intensity'))}",
        "",
        f"Output: {doc.get('out_features')} features per image.",
        "",
        "## Use",
        "",
        "```python",
        "import medcl, torch",
        "encoder = medcl.load_encoder('PATH/TO/THIS/FOLDER')",
        "model = torch.nn.Sequential(encoder, torch.nn.Linear(encoder.out_features, 2))",
        "```",
        "",
        "With MONAI's ConfigParser: read `configs/inference.json`, set `bundle_root`, then get",
        "`network` and evaluate `load_weights`. `models/model.pt` holds the same state dict for",
        "MONAI tools; load it with `torch.load(..., weights_only=True)`.",
        "",
        "## Training",
        "",
        f"- method: {training.get('method', 'unknown')}",
        f"- weak attributes: {', '.join(map(str, training.get('attributes') or [])) or 'none'}",
        "",
        "The training cohort summary (counts, label balance, attribute ranges) is in",
        "`configs/metadata.json` under `medcl.training`; it holds no subject or patient id.",
        "",
        "Intended use: research; not a medical device.",
        "",
    ]
    return "\n".join(lines)


def write(module: nn.Module, doc: dict[str, Any], out: Path, x: torch.Tensor | None = None) -> list[Path]:
    from safetensors.torch import save_file

    if not doc.get("spec"):
        raise MedclInputError("a bundle needs the encoder's architecture spec (a medcl Encoder)")
    meta = bundle_metadata(doc)
    problems = check_bundle_metadata(meta)
    if problems:  # a bug in this module, not user input
        raise RuntimeError("bundle metadata misses MONAI keys: " + "; ".join(problems))
    out.mkdir()
    for sub in ("configs", "models", "docs"):
        (out / sub).mkdir()
    state = state_dict_copy(module)
    save_file(state, str(out / "models" / "model.safetensors"), metadata={METADATA_KEY: json.dumps(doc)})
    torch.save(state, out / "models" / "model.pt")
    (out / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "configs" / "inference.json").write_text(json.dumps(bundle_inference_config(doc), indent=2) + "\n")
    (out / "docs" / "README.md").write_text(_bundle_readme(meta))
    return [out]
