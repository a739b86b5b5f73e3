"""Export a pretrained encoder and load it back, in any of five formats.

Formats (``fmt``):

* ``bundle``: a MONAI bundle folder: ``configs/metadata.json`` (MONAI's mandatory keys plus a
  ``medcl`` block: input spec, output size, method, attributes, training-cohort summary, never a
  subject or patient id), ``configs/inference.json`` (a ``ConfigParser`` config that rebuilds the
  network and its preprocessing), ``models/model.safetensors`` (+ ``models/model.pt``, the plain
  state dict MONAI's tools expect; load it with ``weights_only=True``) and ``docs/README.md``.
* ``safetensors``: ``NAME.safetensors`` (weights) + ``NAME.json`` (architecture and input spec).
* ``torch-export``: a ``torch.export`` program (``.pt2``), batch dimension dynamic.
* ``torchscript``: a traced TorchScript module (``.pt``).
* ``onnx``: an ONNX graph (``.onnx``, dynamo exporter), run with onnxruntime.

Every export is checked before it appears: the artifact is written to a temporary sibling, loaded
back with :func:`load_encoder` and its features compared with the in-memory encoder on a probe
input (``atol=1e-4``); only then is it renamed into place.

Trust: safetensors and bundles hold only tensors and JSON (the safe choice for sharing). medcl
never unpickles: ``torch.load`` is only called with ``weights_only=True`` and a ``.pt2`` archive
holding pickled payloads is refused. A TorchScript file, however, is *code* that
``torch.jit.load`` runs: only load TorchScript from a source you trust (TorchScript is also
deprecated in recent torch releases; prefer ``torch-export`` for a compiled graph).

Example (a diagnosis model in three lines)::

    encoder = medcl.load_encoder("exports/encoder_bundle")
    model = torch.nn.Sequential(encoder, torch.nn.Linear(encoder.out_features, 2))
    logits = model(images)  # images: (n, *encoder.input_spec shape)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from medcl.atomic import _default_permissions
from medcl.errors import MedclInputError

ExportFormat = Literal["bundle", "safetensors", "torch-export", "torchscript", "onnx"]
FORMATS: tuple[str, ...] = ("bundle", "safetensors", "torch-export", "torchscript", "onnx")
ENCODER_FORMAT = "medcl-encoder"  # the "format" key of every medcl encoder document
FORMAT_VERSION = 1
METADATA_KEY = "medcl.json"  # extra file / metadata entry holding the document
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
_SUFFIX = {"safetensors": ".safetensors", "torch-export": ".pt2", "torchscript": ".pt", "onnx": ".onnx"}
_TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".pth", ".jit", ".torchscript")


class ExportCheckError(MedclInputError):
    """The exported artifact does not reproduce the encoder's features (nothing was written)."""


# ---------------------------------------------------------------------------------------------
# The medcl encoder document (architecture + input spec), shared by every format
# ---------------------------------------------------------------------------------------------


def _medcl_version() -> str:
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
        "medcl_version": _medcl_version(),
        "spec": spec,
        "input": dict(input_spec),
        "out_features": None if out_features is None else int(out_features),
        "training": training or {},
    }


def _check_document(doc: Any, path: Path) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("format") != ENCODER_FORMAT:
        raise MedclInputError(f"{path}: not a medcl encoder (no '{ENCODER_FORMAT}' metadata)")
    if "input" not in doc:
        raise MedclInputError(f"{path}: medcl encoder metadata lacks the input spec")
    return doc


def _parse_document(text: str | bytes | None, path: Path) -> dict[str, Any]:
    if text is None or text == "" or text == b"":
        raise MedclInputError(f"{path}: not a medcl encoder (no '{METADATA_KEY}' metadata found)")
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MedclInputError(f"{path}: medcl metadata is not valid JSON ({err})") from None
    return _check_document(doc, path)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


class ExportedEncoder(nn.Module):
    """An exported encoder wrapped for inference: ``forward(x) -> (n, out_features)``.

    Attributes: ``input_spec`` (dict: channels, spatial dims, size, spacing, intensity),
    ``out_features`` (int) and ``metadata`` (the full medcl document).
    """

    def __init__(self, module: nn.Module, document: dict[str, Any], fmt: str):
        super().__init__()
        self.module = module
        self.metadata = document
        self.input_spec = dict(document["input"])
        self.out_features = document.get("out_features")
        self.format = fmt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def train(self, mode: bool = True) -> ExportedEncoder:
        # Traced / exported graphs are frozen in inference mode; keep the flag for callers.
        self.training = mode
        return self


class OnnxEncoder(nn.Module):
    """Run an ONNX encoder with onnxruntime behind an ``nn.Module`` interface (inference only)."""

    def __init__(self, path: str | Path, providers: list[str] | None = None):
        super().__init__()
        import onnxruntime as ort

        self.path = str(path)
        self.session = ort.InferenceSession(self.path, providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)


def _rebuild(doc: dict[str, Any], weights: dict[str, torch.Tensor], path: Path) -> nn.Module:
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


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        return load_file(str(path)), header
    except (SafetensorError, OSError, ValueError) as err:
        raise MedclInputError(f"{path}: not a readable safetensors file ({err})") from None


def _load_safetensors(path: Path, sidecar: Path | None = None) -> nn.Module:
    weights, header = _read_safetensors(path)
    sidecar = sidecar or path.with_suffix(".json")
    if sidecar.is_file():
        doc = _parse_document(sidecar.read_text(errors="replace"), sidecar)
    else:
        doc = _parse_document(header.get(METADATA_KEY), path)
    return _rebuild(doc, weights, path)


def _load_bundle(path: Path) -> nn.Module:
    meta_file = path / "configs" / "metadata.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MedclInputError(f"{meta_file}: unreadable bundle metadata ({err})") from None
    doc = _check_document(meta.get("medcl") if isinstance(meta, dict) else None, meta_file)
    weights_file = path / "models" / "model.safetensors"
    if not weights_file.is_file():
        raise MedclInputError(f"{path}: bundle has no models/model.safetensors")
    weights, _ = _read_safetensors(weights_file)
    return _rebuild(doc, weights, weights_file)


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise MedclInputError(f"{path}: not a valid archive ({err})") from None


def _check_pt2_has_no_pickle(path: Path, names: list[str]) -> None:
    """Refuse ``.pt2`` archives whose weights or constants would be unpickled on load."""
    with zipfile.ZipFile(path) as z:
        for name in names:
            base = name.rsplit("/", 1)[-1]
            if base.endswith(".pt") and ("/data/weights/" in name or "/data/constants/" in name):
                raise MedclInputError(f"{path}: legacy pickled weights in the archive; medcl won't unpickle")
            if base.endswith("_config.json") and ("/data/weights/" in name or "/data/constants/" in name):
                config = json.loads(z.read(name)).get("config", {})
                for fqn, entry in config.items():
                    if entry.get("use_pickle") or str(entry.get("path_name", "")).startswith(
                        ("custom_obj", "opaque")
                    ):
                        raise MedclInputError(
                            f"{path}: entry {fqn!r} is a pickled object; medcl will not unpickle it"
                        )


def _load_torch_export(path: Path) -> nn.Module:
    names = _zip_names(path)
    if not any(n.endswith("model_weights_config.json") for n in names):
        raise MedclInputError(f"{path}: not a torch.export (.pt2) archive")
    _check_pt2_has_no_pickle(path, names)
    extra = {METADATA_KEY: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as err:  # corrupted archive content: the loader raises many kinds
        raise MedclInputError(
            f"{path}: cannot load the torch.export program ({type(err).__name__}: {err})"
        ) from None
    doc = _parse_document(extra.get(METADATA_KEY), path)
    return ExportedEncoder(program.module(), doc, "torch-export")


@contextlib.contextmanager
def _no_deprecation_notes() -> Iterator[None]:
    """TorchScript still works in this torch but warns on every call; the module docs say so once."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is deprecated.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def _load_torchscript(path: Path) -> nn.Module:
    names = _zip_names(path)
    if not any("/code/" in n or n.startswith("code/") for n in names):
        raise MedclInputError(f"{path}: not a TorchScript archive")
    extra = {METADATA_KEY: ""}
    try:
        with _no_deprecation_notes():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as err:  # RuntimeError with a C++ trace for a corrupted archive
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MedclInputError(f"{path}: cannot load the TorchScript module ({first})") from None
    doc = _parse_document(extra.get(METADATA_KEY), path)
    return ExportedEncoder(module.eval(), doc, "torchscript")


def _load_onnx(path: Path) -> nn.Module:
    try:
        runner = OnnxEncoder(path)
    except Exception as err:  # onnxruntime raises its own exception types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MedclInputError(f"{path}: not a loadable ONNX model ({first})") from None
    meta = runner.session.get_modelmeta().custom_metadata_map
    doc = _parse_document(meta.get(METADATA_KEY), path)
    return ExportedEncoder(runner, doc, "onnx")


def _sniff(path: Path) -> str:
    """Guess a file's format from its content (for unknown suffixes)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK"):
        names = _zip_names(path)
        if any(n.endswith("model_weights_config.json") for n in names):
            return "torch-export"
        if any("/code/" in n for n in names):
            return "torchscript"
    if len(head) >= 8 and int.from_bytes(head[:8], "little") < 100_000_000 and head[8:9] == b"{":
        return "safetensors"
    raise MedclInputError(
        f"{path}: unknown encoder format; expected a bundle folder, .safetensors (+ .json), .pt2, "
        ".pt (TorchScript) or .onnx"
    )


def load_encoder(path: str | os.PathLike) -> nn.Module:
    """Load an encoder exported by medcl (any format) for inference or fine-tuning.

    Accepts a MONAI bundle folder, a run directory (its ``encoder.safetensors``), a
    ``.safetensors`` file (with its ``.json`` sidecar or embedded metadata), a ``torch.export``
    ``.pt2``, a TorchScript ``.pt`` / ``.ts`` or an ``.onnx`` file (run by onnxruntime).

    Returns:
        An ``nn.Module`` in eval mode mapping ``(n, C, *size)`` images to ``(n, out_features)``,
        with ``.input_spec`` (channels, spatial dims, size, spacing, intensity) and
        ``.out_features``. Bundle / safetensors give a trainable :class:`medcl.models.Encoder`;
        the other formats a frozen graph.

    Raises:
        MedclInputError: the path is missing, corrupted, or not a medcl encoder (names the file).

    Only load TorchScript from a trusted source: ``torch.jit.load`` executes the file's code.
    """
    path = Path(path)
    if not path.exists():
        raise MedclInputError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "configs" / "metadata.json").is_file():
            return _load_bundle(path)
        if (path / "encoder.safetensors").is_file():
            return _load_safetensors(path / "encoder.safetensors", path / "encoder.json")
        raise MedclInputError(
            f"{path}: a folder, but neither a MONAI bundle (configs/metadata.json) "
            "nor a run directory (encoder.safetensors)"
        )
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        fmt = "safetensors"
    elif suffix == ".pt2":
        fmt = "torch-export"
    elif suffix in _TORCHSCRIPT_SUFFIXES:
        fmt = "torchscript"
    elif suffix == ".onnx":
        fmt = "onnx"
    else:
        fmt = _sniff(path)
    loader = {
        "safetensors": _load_safetensors,
        "torch-export": _load_torch_export,
        "torchscript": _load_torchscript,
        "onnx": _load_onnx,
    }[fmt]
    return loader(path)


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


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


def _state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage: give every tensor its own contiguous copy
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def _write_safetensors(module: nn.Module, doc: dict[str, Any], out: Path) -> list[Path]:
    from safetensors.torch import save_file

    save_file(_state_dict(module), str(out), metadata={METADATA_KEY: json.dumps(doc)})
    sidecar = out.with_suffix(".json")
    sidecar.write_text(json.dumps(doc, indent=2) + "\n")
    return [out, sidecar]


def _write_torch_export(module: nn.Module, doc: dict[str, Any], out: Path, x: torch.Tensor) -> list[Path]:
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.export.export(module, (x,), dynamic_shapes=({0: batch},))
        doc["batch_size"] = "dynamic"
    except Exception:  # a model that specialises on the batch size: export it static
        program = torch.export.export(module, (x,))
        doc["batch_size"] = int(x.shape[0])
    torch.export.save(program, str(out), extra_files={METADATA_KEY: json.dumps(doc)})
    return [out]


def _write_torchscript(module: nn.Module, doc: dict[str, Any], out: Path, x: torch.Tensor) -> list[Path]:
    with _no_deprecation_notes():
        traced = torch.jit.trace(module, (x,), check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={METADATA_KEY: json.dumps(doc)})
    return [out]


def _write_onnx(module: nn.Module, doc: dict[str, Any], out: Path, x: torch.Tensor) -> list[Path]:
    import logging
    import warnings

    import onnx

    batch = torch.export.Dim("batch", min=1, max=4096)
    quiet = io.StringIO()
    # The dynamo exporter prints progress and warns about absent torchvision ops: keep it quiet.
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (x,),
                str(out),
                dynamo=True,
                dynamic_shapes=({0: batch},),
                input_names=["image"],
                output_names=["features"],
                verbose=False,
            )
    finally:
        onnx_logger.setLevel(level)
    model = onnx.load(str(out))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(doc)
    onnx.save(model, str(out))
    return [out]


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
    """``configs/inference.json``: rebuild the encoder and its preprocessing with ConfigParser."""
    return {
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


def bundle_metadata(doc: dict[str, Any], *, version: str = "0.1.0") -> dict[str, Any]:
    """``configs/metadata.json``: MONAI's mandatory keys plus the medcl document."""
    import monai

    channels, *size = input_shape(doc["input"])
    training = doc.get("training") or {}
    method = training.get("method", "unknown")
    attributes = training.get("attributes") or []
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
        "name": "medcl encoder",
        "task": "Image feature extraction (self-supervised encoder for downstream diagnosis models)",
        "description": (
            f"{len(size)}D image encoder pretrained with medcl (method: {method}"
            + (f"; weak attributes: {', '.join(map(str, attributes))}" if attributes else "")
            + f"). Maps a ({channels}, {', '.join(map(str, size))}) image to "
            + f"{doc.get('out_features')} features."
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
                    "type": "tuples",
                    "format": "latent",
                    "modality": "n/a",
                    "num_channels": int(doc.get("out_features") or 0),
                    "spatial_shape": [],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {},
                }
            },
        },
        "medcl": doc,
    }


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
        "# medcl encoder (MONAI bundle)",
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


def _write_bundle(module: nn.Module, doc: dict[str, Any], out: Path) -> list[Path]:
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
    state = _state_dict(module)
    save_file(state, str(out / "models" / "model.safetensors"), metadata={METADATA_KEY: json.dumps(doc)})
    torch.save(state, out / "models" / "model.pt")
    (out / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "configs" / "inference.json").write_text(json.dumps(bundle_inference_config(doc), indent=2) + "\n")
    (out / "docs" / "README.md").write_text(_bundle_readme(meta))
    return [out]


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a.double() - b.double()).abs().max())


def export_module(
    module: nn.Module,
    input_spec: dict[str, Any],
    fmt: ExportFormat,
    out: str | os.PathLike,
    *,
    spec: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    overwrite: bool = False,
    atol: float = 1e-4,
) -> Path:
    """Export an encoder module and check the artifact reproduces its features.

    Args:
        module: the encoder, ``(n, C, *size) -> (n, F)``; a :class:`medcl.models.Encoder` carries
            its own architecture spec (``bundle`` and ``safetensors`` need one to rebuild it).
        input_spec: channels, spatial dims, size, spacing, intensity (as in ``encoder.json``).
        fmt: one of :data:`FORMATS`.
        out: target path (a folder for ``bundle``; for ``safetensors`` also writes ``.json``).
        spec: architecture spec dict when ``module`` has no ``.spec``.
        training: method / attributes / cohort summary for the metadata (must hold no ids).
        overwrite: replace an existing target.
        atol: tolerance of the round-trip check.

    Returns:
        The written path.

    Raises:
        MedclInputError: unknown format, existing target, a module the format cannot express;
            :class:`ExportCheckError` when the reloaded artifact's features differ. Nothing is
            written in either case.
    """
    if fmt not in FORMATS:
        raise MedclInputError(f"unknown export format {fmt!r}; choose one of {list(FORMATS)}")
    out = with_format_suffix(Path(out), fmt)
    targets = [out, out.with_suffix(".json")] if fmt == "safetensors" else [out]
    for target in targets:
        if target.exists() and not overwrite:
            raise MedclInputError(f"{target} exists; choose another --out or pass --overwrite")
        if target.is_dir() and fmt != "bundle":
            raise MedclInputError(f"{target} is a folder; give a file path for format {fmt}")
    doc = encoder_document(module, input_spec, spec=spec, training=training)
    if any(p.device.type != "cpu" for p in module.parameters()):
        import copy

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
                if fmt == "bundle":
                    written = _write_bundle(module, doc, tmp_out)
                elif fmt == "safetensors":
                    written = _write_safetensors(module, doc, tmp_out)
                elif fmt == "torch-export":
                    written = _write_torch_export(module, doc, tmp_out, x)
                elif fmt == "torchscript":
                    written = _write_torchscript(module, doc, tmp_out, x)
                else:
                    written = _write_onnx(module, doc, tmp_out, x)
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
                _default_permissions(item)  # some writers (safetensors) create 0600 files
            final = out.parent / path.name
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(path, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out


def with_format_suffix(out: Path, fmt: str) -> Path:
    """``out`` with the file extension of ``fmt`` appended when it has none (``enc`` -> ``enc.onnx``).

    A bundle is a folder and keeps its name. Raises MedclInputError when ``out`` carries another
    export format's extension (``enc.pt`` for onnx), which would be loaded as that format.
    """
    if fmt == "bundle":
        return out
    wanted, suffix = _SUFFIX[fmt], out.suffix.lower()
    if suffix == wanted or (fmt == "torchscript" and suffix in _TORCHSCRIPT_SUFFIXES):
        return out
    other = {v: k for k, v in _SUFFIX.items()}.get(suffix)
    if other is not None:
        raise MedclInputError(
            f"--out {out}: the extension {suffix} is the {other} format's; use {out.with_suffix(wanted).name} "
            f"for --format {fmt}"
        )
    return out.with_name(out.name + wanted)


def _public_paths(message: str, tmp_dir: Path, target_dir: Path) -> str:
    """A message with the private temporary folder replaced by the target folder."""
    return message.replace(str(tmp_dir.resolve()), str(target_dir)).replace(str(tmp_dir), str(target_dir))


def default_export_path(run_dir: str | os.PathLike, fmt: str) -> Path:
    """Where ``medcl export`` writes when no ``--out`` is given: ``RUN_DIR/export/encoder[.ext]``."""
    suffix = "" if fmt == "bundle" else _SUFFIX[fmt]
    name = "encoder_bundle" if fmt == "bundle" else f"encoder{suffix}"
    return Path(run_dir) / "export" / name


# ---------------------------------------------------------------------------------------------
# From a run directory
# ---------------------------------------------------------------------------------------------


def _redact(obj: Any, ids: set[str]) -> Any:
    """Replace any string (value or key) equal to a subject / patient id by "<redacted>"."""
    if isinstance(obj, dict):
        return {("<redacted>" if str(k) in ids else k): _redact(v, ids) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_redact(v, ids) for v in obj]
    if isinstance(obj, str) and obj in ids:
        return "<redacted>"
    return obj


def _run_ids(run) -> set[str]:
    import pandas as pd

    if not run.split_path.is_file():
        return set()
    table = pd.read_csv(run.split_path, dtype=str, keep_default_na=False)
    cols = [c for c in table.columns if c != "split"]
    return {v for c in cols for v in table[c].tolist() if v}


def run_training_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Method, attributes, kernel terms and training-cohort summary of a run (no ids)."""
    from medcl.train.run_dir import RunDir

    run = RunDir(run_dir)
    info: dict[str, Any] = {}
    try:
        config = run.config()
    except (OSError, MedclInputError):
        return info
    info["method"] = config.method
    kernel = config.kernel or {}
    terms = kernel.get("terms") if isinstance(kernel, dict) else None
    if config.uses_attributes:
        info["attributes"] = list(config.attributes or [t.get("name") for t in terms or []])
    if terms:  # names, kinds, bandwidths, weights: the imputation reference stays in the run
        from medcl.report.collect import public_kernel

        kernel_info = public_kernel(kernel)
        for term in kernel_info["terms"]:
            term.pop("imputation_reference", None)
        info["kernel"] = {"combine": kernel_info["combine"], "terms": kernel_info["terms"]}
    info["encoder"] = config.encoder.model_dump(mode="json")
    info["epochs"] = config.epochs
    try:
        from medcl.data.cohort import Cohort

        cohort = Cohort.from_manifest(config.manifest, check_files=False)
        info["cohort"] = cohort.summary()
    except (OSError, MedclInputError):
        info["cohort"] = "unavailable (manifest not readable at export time)"
    return _redact(info, _run_ids(run))


def export_encoder(
    run_dir: str | os.PathLike,
    fmt: ExportFormat,
    out: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    atol: float = 1e-4,
) -> Path:
    """Export a run's encoder (``encoder.safetensors`` + ``encoder.json``) in format ``fmt``.

    ``out`` defaults to :func:`default_export_path`. Metadata carries the input spec, method,
    attributes and a training-cohort summary, and never a subject or patient id.

    Raises:
        MedclInputError: not a run directory, no encoder weights yet, existing target, or an
            export that fails its round-trip check (nothing written then).
    """
    from medcl.train.run_dir import RunDir

    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise MedclInputError(f"{run.path}: no such run directory")
    if not run.encoder_weights.is_file() or not run.encoder_json.is_file():
        missing = run.encoder_weights if not run.encoder_weights.is_file() else run.encoder_json
        raise MedclInputError(
            f"{run.path}: no encoder to export ({missing.name} missing); finish pretraining first "
            "(medcl pretrain ... or --resume the run)"
        )
    encoder = _load_safetensors(run.encoder_weights, run.encoder_json)
    doc = encoder.metadata
    training = run_training_info(run.path)
    out = Path(out) if out is not None else default_export_path(run.path, fmt)
    return export_module(
        encoder, doc["input"], fmt, out,
        spec=doc.get("spec"), training=training, overwrite=overwrite, atol=atol,
    )
