"""Image encoders (MONAI networks, 2D or 3D) and the projection head used during pretraining.

The encoder maps ``(n, C, *spatial)`` images to ``(n, F)`` features; that representation (before
the projection head) is what probes, fine-tuning and export use. Pretrained weights are never
downloaded: every network starts from a random initialisation.

Example::

    spec = EncoderSpec(arch="resnet18", spatial_dims=3, in_channels=1, widths=[8, 16, 32, 64])
    encoder = build_encoder(spec)          # encoder(x).shape == (n, encoder.out_features)
    head = ProjectionHead(encoder.out_features, hidden=256, out=128)
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

Arch = Literal["resnet10", "resnet18", "resnet34", "resnet50", "densenet121"]

# MONAI ResNet depths and block types (basic block for 10/18/34, bottleneck for 50).
_RESNET_LAYERS: dict[str, tuple[str, list[int]]] = {
    "resnet10": ("basic", [1, 1, 1, 1]),
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
}
_DEFAULT_RESNET_WIDTHS = [64, 128, 256, 512]


class EncoderSpec(BaseModel):
    """Architecture of an encoder; enough to rebuild it (saved next to exported weights).

    ``spatial_dims`` and ``in_channels`` may be left out in a training config: they are then
    taken from the cohort's manifest (see :meth:`resolved`).
    """

    model_config = ConfigDict(extra="forbid")

    arch: Arch = Field("resnet18", description="MONAI network: resnet10/18/34/50 or densenet121")
    spatial_dims: Literal[2, 3] | None = Field(None, description="2 or 3; default: from the manifest")
    in_channels: int | None = Field(None, ge=1, description="input channels; default: from the manifest")
    widths: list[int] | None = Field(
        None,
        description="ResNet: channels of the 4 stages (default [64,128,256,512]); "
        "DenseNet: [init_features, growth_rate] (default [64, 32])",
    )
    first_kernel: int = Field(7, ge=1, description="kernel size of the first convolution")
    first_stride: int = Field(2, ge=1, description="stride of the first convolution (MONAI's default is 1)")
    max_pool: bool = Field(True, description="ResNet: max-pool after the first convolution")
    norm: Literal["batch", "instance", "group"] = Field(
        "batch", description="normalisation layers of the encoder (instance / group: independent of the batch)"
    )
    channels_last: bool = Field(
        True,
        description="run the convolutions on channels-last tensors: the same network; on CPU (oneDNN) a training "
        "step is 1.3-1.4x (2D) and 1.7x (3D) faster on one thread, 0.95-1.05x (2D) and 1.13x (3D) on two "
        "(bench/layout.py); false keeps PyTorch's default layout",
    )

    @model_validator(mode="after")
    def _check(self) -> EncoderSpec:
        if self.widths is not None:
            want = 2 if self.arch == "densenet121" else 4
            if len(self.widths) != want or any(w < 1 for w in self.widths):
                what = "[init_features, growth_rate]" if want == 2 else "4 stage widths"
                raise ValueError(f"encoder.widths for {self.arch} must be {what} (positive), got {self.widths}")
        return self

    def resolved(self, spatial_dims: int, in_channels: int) -> EncoderSpec:
        """Fill ``spatial_dims`` / ``in_channels`` from the data; refuse a contradiction."""
        from medcl.errors import MedclInputError

        for key, given, data in (("spatial_dims", self.spatial_dims, spatial_dims),
                                 ("in_channels", self.in_channels, in_channels)):
            if given is not None and given != data:
                raise MedclInputError(f"encoder.{key} is {given} but the manifest's images have {data}")
        return self.model_copy(update={"spatial_dims": spatial_dims, "in_channels": in_channels})


class Encoder(nn.Module):
    """A backbone returning ``(n, out_features)`` pooled features; keeps its :class:`EncoderSpec`.

    With ``spec.channels_last`` the convolution weights and every input are channels-last
    (``memory_format``; the values and the state dict's keys and shapes are unchanged).
    """

    def __init__(self, backbone: nn.Module, spec: EncoderSpec, out_features: int):
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.out_features = out_features
        self.memory_format = _channels_last(spec)
        if self.memory_format is not None:
            self.backbone.to(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (n, C, *spatial) -> (n, out_features)."""
        if self.memory_format is not None and x.dim() == self.spec.spatial_dims + 2:
            x = x.contiguous(memory_format=self.memory_format)
        return self.backbone(x)


def _channels_last(spec: EncoderSpec) -> torch.memory_format | None:
    """The channels-last memory format of ``spec``'s dimension, or None to keep the default layout."""
    if not spec.channels_last or spec.spatial_dims is None:
        return None
    return torch.channels_last if spec.spatial_dims == 2 else torch.channels_last_3d


def norm_args(spec: EncoderSpec) -> str | tuple:
    """MONAI norm argument of ``spec.norm`` (a name, or a (name, options) pair)."""
    if spec.norm == "group":
        return ("group", {"num_groups": 1})  # layer-norm-like, valid for any channel count
    if spec.norm == "instance":
        return ("instance", {"affine": True})  # MONAI's ResNet init needs a weight
    return spec.norm


def monai_network(spec: EncoderSpec) -> tuple[str, dict[str, Any]]:
    """The MONAI network (import path) and its JSON-able arguments that :func:`build_encoder` starts from.

    :func:`network_changes` says what build_encoder then changes. An exported bundle builds the
    network from these, with MONAI alone (:mod:`medcl.export.bundle`).
    Raises ``ValueError`` if ``spec.spatial_dims`` or ``spec.in_channels`` is unset.
    """
    if spec.spatial_dims is None or spec.in_channels is None:
        raise ValueError("EncoderSpec needs spatial_dims and in_channels; call spec.resolved(...) first")
    norm = norm_args(spec)
    norm = list(norm) if isinstance(norm, tuple) else norm
    if spec.arch == "densenet121":
        init_features, growth_rate = spec.widths or [64, 32]
        return "monai.networks.nets.DenseNet", {
            "spatial_dims": spec.spatial_dims, "in_channels": spec.in_channels, "out_channels": 1,
            "init_features": init_features, "growth_rate": growth_rate, "block_config": [6, 12, 24, 16],
            "norm": norm,
        }
    block, layers = _RESNET_LAYERS[spec.arch]
    return "monai.networks.nets.ResNet", {
        "block": block, "layers": list(layers), "block_inplanes": list(spec.widths or _DEFAULT_RESNET_WIDTHS),
        "spatial_dims": spec.spatial_dims, "n_input_channels": spec.in_channels,
        "conv1_t_size": spec.first_kernel, "conv1_t_stride": spec.first_stride, "no_max_pool": not spec.max_pool,
        "feed_forward": False, "norm": norm,
    }


def network_changes(spec: EncoderSpec) -> dict[str, bool]:
    """What :func:`build_encoder` changes on the MONAI network of :func:`monai_network`.

    ``features_only``: DenseNet's classification layer becomes an identity (features out);
    ``stem``: DenseNet's first convolution is replaced (MONAI fixes kernel 7 / stride 2);
    ``block_norm``: every BatchNorm becomes ``spec.norm`` (MONAI's ResNet normalises only its stem
    with ``norm``, its blocks keep BatchNorm).
    """
    dense = spec.arch == "densenet121"
    return {
        "features_only": dense,
        "stem": dense and (spec.first_kernel != 7 or spec.first_stride != 2),
        "block_norm": not dense and spec.norm != "batch",
    }


def build_encoder(spec: EncoderSpec) -> Encoder:
    """Build the encoder described by ``spec`` (random init, no download).

    Raises ``ValueError`` if ``spec.spatial_dims`` or ``spec.in_channels`` is unset.
    """
    from importlib import import_module

    path, kwargs = monai_network(spec)
    module, name = path.rsplit(".", 1)
    net = getattr(import_module(module), name)(**kwargs)
    changes = network_changes(spec)
    if changes["stem"]:
        from monai.networks.layers.factories import Conv

        conv = Conv[Conv.CONV, spec.spatial_dims]
        net.features.conv0 = conv(
            spec.in_channels, kwargs["init_features"], kernel_size=spec.first_kernel,
            stride=spec.first_stride, padding=spec.first_kernel // 2, bias=False,
        )
    if changes["features_only"]:
        out_features = net.class_layers.out.in_features
        net.class_layers.out = nn.Identity()
        return Encoder(net, spec, out_features)
    if changes["block_norm"]:
        _replace_batch_norm(net, spec)
    expansion = 4 if kwargs["block"] == "bottleneck" else 1
    return Encoder(net, spec, kwargs["block_inplanes"][-1] * expansion)


def _replace_batch_norm(module: nn.Module, spec: EncoderSpec) -> None:
    """Swap every BatchNorm for ``spec.norm``: MONAI's ResNet (1.6) applies ``norm`` to its stem
    only, its residual blocks keep BatchNorm."""
    from monai.networks.layers.utils import get_norm_layer

    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, get_norm_layer(norm_args(spec), spec.spatial_dims, child.num_features))
        else:
            _replace_batch_norm(child, spec)


class ProjectionHead(nn.Sequential):
    """Two-layer MLP ``F -> hidden -> out`` (Linear, BatchNorm, ReLU, Linear), as in SimCLR.

    Its output is the space the contrastive loss works in; it is dropped after pretraining.
    ``batch_norm=False`` makes each sample's projection independent of the rest of the batch.
    """

    def __init__(self, in_features: int, hidden: int = 512, out: int = 128, batch_norm: bool = True):
        super().__init__(
            nn.Linear(in_features, hidden, bias=not batch_norm),
            nn.BatchNorm1d(hidden) if batch_norm else nn.Identity(),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out),
        )
        self.in_features = in_features
        self.out_features = out
