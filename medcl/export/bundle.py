"""Format ``bundle``: a MONAI bundle folder (metadata, inference config, weights, README).

The bundle needs MONAI, not medcl: ``inference.json`` builds the encoder as the MONAI network it is
(``monai.networks.nets.ResNet`` / ``DenseNet`` with medcl's arguments, plus medcl's changes as
ConfigParser expressions) and the preprocessing from MONAI transforms; the weights are that
network's state dict (no ``backbone.`` prefix) in ``models/model.pt`` and ``models/model.safetensors``.

Why this size: the bundle is the one format with its own documents (MONAI metadata with the schema's
required keys, a ConfigParser inference config rebuilding the preprocessing, a README); they are
written and checked together here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcl.errors import MedclInputError
from medcl.export.format import ExportFormat

if TYPE_CHECKING:  # torch, numpy and medcl.models.saved load on use: `medcl --help` reads FORMAT
    import torch
    from torch import nn

METADATA_FILE = Path("configs", "metadata.json")  # marks a bundle folder
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


_PREFIX = "backbone."  # medcl's Encoder holds the MONAI network as .backbone


def sniff(path: Path) -> bool:
    """A folder with ``configs/metadata.json``."""
    return path.is_dir() and (path / METADATA_FILE).is_file()


def load(path: Path) -> nn.Module:
    from medcl.models.saved import DIAGNOSIS_FORMAT, check_document, read_safetensors, rebuild_encoder

    meta_file = path / METADATA_FILE
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MedclInputError(f"{meta_file}: unreadable bundle metadata ({err})") from None
    doc = check_document(meta.get("medcl") if isinstance(meta, dict) else None, meta_file)
    weights_file = path / "models" / "model.safetensors"
    if not weights_file.is_file():
        raise MedclInputError(f"{path}: bundle has no models/model.safetensors")
    weights, _ = read_safetensors(weights_file)
    is_encoder = doc.get("format") != DIAGNOSIS_FORMAT  # a diagnosis model keeps its own keys
    if is_encoder and not all(k.startswith(_PREFIX) for k in weights):  # new bundles: the MONAI network's keys
        weights = {_PREFIX + k: v for k, v in weights.items()}
    return rebuild_encoder(doc, weights, weights_file)


def _network_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The MONAI network's state dict: medcl's Encoder keys without their ``backbone.`` prefix."""
    from medcl.models.saved import state_dict_copy

    state = state_dict_copy(module)
    if state and all(k.startswith(_PREFIX) for k in state):
        state = {k.removeprefix(_PREFIX): v for k, v in state.items()}
    return state


#: PIL converters of medcl's PNG/JPEG reader (``medcl.data._monai_readers.PlanarReader``), as expressions
_GREY = ("$lambda image: image if image.mode in ('1', 'L', 'I', 'I;16', 'I;16B', 'I;16L', 'F') "
         "else image.convert('L')")
_RGB = "$lambda image: image if image.mode == 'RGB' else image.convert('RGB')"


def _network_definitions(spec: dict[str, Any], input_spec: dict[str, Any]) -> dict[str, Any]:
    """``network_def`` with MONAI alone: the MONAI network with medcl's arguments, then medcl's changes
    (:func:`medcl.models.encoders.network_changes`) as ConfigParser expressions."""
    from medcl.models.encoders import EncoderSpec, monai_network, network_changes, norm_args
    from medcl.models.saved import input_shape

    channels, *size = input_shape(input_spec)
    encoder_spec = EncoderSpec.model_validate(spec).resolved(len(size), channels)
    path, kwargs = monai_network(encoder_spec)
    changes = network_changes(encoder_spec)
    network = {"_target_": path, **kwargs}
    if not any(changes.values()):
        return {"network_def": network}
    dims, steps = encoder_spec.spatial_dims, []
    if changes["stem"]:
        k, stride = encoder_spec.first_kernel, encoder_spec.first_stride
        steps.append(
            f"setattr(@monai_network.features, 'conv0', Conv[Conv.CONV, {dims}]({encoder_spec.in_channels}, "
            f"{kwargs['init_features']}, kernel_size={k}, stride={stride}, padding={k // 2}, bias=False))"
        )
    if changes["features_only"]:
        steps.append("setattr(@monai_network.class_layers, 'out', torch.nn.Identity())")
    if changes["block_norm"]:
        steps.append(
            f"[setattr(m, name, get_norm_layer({norm_args(encoder_spec)!r}, {dims}, child.num_features)) "
            "for m in list(@monai_network.modules()) for name, child in list(m.named_children()) "
            "if isinstance(child, torch.nn.modules.batchnorm._BatchNorm)]"
        )
    return {"monai_network": network, "network_def": f"$([{', '.join(steps)}], @monai_network)[-1]"}


def _bundle_transforms(input_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """MONAI ConfigParser definitions of the preprocessing the encoder expects."""
    from medcl.models.saved import input_shape

    _, *size = input_shape(input_spec)
    spatial_dims = len(size)
    # MONAI's LoadImaged with the readers medcl trains with (the first that accepts a file reads it,
    # from the last listed): PNG/JPEG/BMP converted to the channels as in training, NIfTI, DICOM
    # files and series folders; channel first, float32
    channels = int(input_spec.get("channels", 1))
    readers = [{"_target_": "PydicomReader"}, {"_target_": "NibabelReader"},
               {"_target_": "PILReader", "converter": _GREY if channels == 1 else _RGB}]
    chain: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "reader": readers, "ensure_channel_first": True,
         "image_only": True, "dtype": "$np.float32"},
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
    """``configs/inference.json``: the encoder (a MONAI network) and its preprocessing (MONAI
    transforms) for ConfigParser, loadable where medcl is not installed. A diagnosis model (encoder
    + head) is rebuilt by medcl from its document, so its bundle needs medcl."""
    from medcl.models.saved import DIAGNOSIS_FORMAT

    config = {
        "imports": [
            "$import torch",
            "$import numpy as np",
            "$from monai.networks.layers.factories import Conv",
            "$from monai.networks.layers.utils import get_norm_layer",
        ],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "encoder_spec": doc["spec"],
        "input_spec": doc["input"],
        **_network_definitions(doc["spec"], doc["input"]),
        "network": "$@network_def.to(@device)",
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "load_weights": "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, weights_only=True))",
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
    import numpy as np
    import torch

    from medcl.models.saved import DIAGNOSIS_FORMAT, input_shape

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
        # MONAI, torch and numpy run the bundle; medcl (load_encoder) and safetensors are optional
        "optional_packages_version": {"medcl": doc.get("medcl_version", "unknown"), **optional},
        "required_packages_version": {"medcl": doc.get("medcl_version", "unknown")} if diagnosis else {},
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
        "With MONAI alone (the network is a MONAI network, the preprocessing MONAI transforms):",
        "",
        "```python",
        "from monai.bundle import ConfigParser",
        "parser = ConfigParser()",
        "parser.read_config('PATH/TO/THIS/FOLDER/configs/inference.json')",
        "parser['bundle_root'] = 'PATH/TO/THIS/FOLDER'",
        "network = parser.get_parsed_content('network')",
        "parser.get_parsed_content('load_weights')  # models/model.pt, torch.load(weights_only=True)",
        "image = parser.get_parsed_content('preprocessing')({'image': 'scan.nii.gz'})['image']",
        "features = network.eval()(image[None])",
        "```",
        "",
        "The preprocessing reads NIfTI, DICOM (files and series folders) and PNG/JPEG/BMP; for NRRD",
        "or MetaImage scans set the loader's `reader` to `ITKReader` (needs the `itk` package).",
        "",
        "With medcl (a trainable encoder with its input spec):",
        "",
        "```python",
        "import medcl, torch",
        "encoder = medcl.load_encoder('PATH/TO/THIS/FOLDER')",
        "model = torch.nn.Sequential(encoder, torch.nn.Linear(encoder.out_features, 2))",
        "```",
        "",
        "`models/model.safetensors` holds the same state dict as `models/model.pt`, with the medcl",
        "metadata.",
        "",
        "## Training",
        "",
        f"- method: {training.get('method', 'unknown')}",
        f"- weak attributes: {', '.join(map(str, training.get('attributes') or [])) or 'none'}",
        "",
        "The training cohort summary (counts rounded to 10, label balance, attribute quantiles pooled",
        "over 10 subjects) is in `configs/metadata.json` under `medcl.training`; it holds no subject",
        "or patient id and no subject's value.",
        "",
        "Intended use: research; not a medical device.",
        "",
    ]
    return "\n".join(lines)


def write(module: nn.Module, doc: dict[str, Any], out: Path, x: torch.Tensor | None = None) -> list[Path]:
    import torch
    from safetensors.torch import save_file

    from medcl.models.saved import METADATA_KEY

    if not doc.get("spec"):
        raise MedclInputError("a bundle needs the encoder's architecture spec (a medcl Encoder)")
    meta = bundle_metadata(doc)
    problems = check_bundle_metadata(meta)
    if problems:  # a bug in this module, not user input
        raise RuntimeError("bundle metadata misses MONAI keys: " + "; ".join(problems))
    out.mkdir()
    for sub in ("configs", "models", "docs"):
        (out / sub).mkdir()
    state = _network_state(module)
    save_file(state, str(out / "models" / "model.safetensors"), metadata={METADATA_KEY: json.dumps(doc)})
    torch.save(state, out / "models" / "model.pt")
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    (out / "configs" / "inference.json").write_text(json.dumps(bundle_inference_config(doc), indent=2) + "\n")
    (out / "docs" / "README.md").write_text(_bundle_readme(meta))
    return [out]


FORMAT = ExportFormat(
    name="bundle", summary="MONAI bundle folder; recommended", expected="a bundle folder", write=write, load=load,
    folder=True, sniff=sniff, title="MONAI bundle", marker=METADATA_FILE.as_posix(),
)
