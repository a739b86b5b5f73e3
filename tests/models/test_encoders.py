"""Encoders (MONAI ResNet / DenseNet, 2D and 3D) and the projection head."""

from __future__ import annotations

import pytest
import torch

from medcl.errors import MedclInputError
from medcl.models import EncoderSpec, ProjectionHead, build_encoder


@pytest.mark.parametrize("arch", ["resnet10", "resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("dims", [2, 3])
def test_resnet_shapes(arch: str, dims: int) -> None:
    spec = EncoderSpec(arch=arch, spatial_dims=dims, in_channels=2, widths=[4, 8, 8, 16])
    enc = build_encoder(spec)
    out = enc(torch.randn(3, 2, *[16] * dims))
    expansion = 4 if arch == "resnet50" else 1
    assert enc.out_features == 16 * expansion
    assert out.shape == (3, enc.out_features)


@pytest.mark.parametrize("dims", [2, 3])
def test_densenet_shapes(dims: int) -> None:
    spec = EncoderSpec(arch="densenet121", spatial_dims=dims, in_channels=1, widths=[4, 4], first_stride=1)
    enc = build_encoder(spec)
    assert enc(torch.randn(2, 1, *[16] * dims)).shape == (2, enc.out_features)


def test_first_stride_defaults_to_2_and_is_configurable() -> None:
    spec = EncoderSpec(spatial_dims=3, in_channels=1, widths=[4, 8, 8, 16])
    assert build_encoder(spec).backbone.conv1.stride == (2, 2, 2)
    spec1 = spec.model_copy(update={"first_stride": 1})
    assert build_encoder(spec1).backbone.conv1.stride == (1, 1, 1)


def test_widths_are_validated_with_the_key_named() -> None:
    with pytest.raises(ValueError, match=r"encoder.widths for resnet18"):
        EncoderSpec(arch="resnet18", widths=[4, 8])
    with pytest.raises(ValueError, match=r"extra"):
        EncoderSpec(arch="resnet18", bogus=1)


def test_resolved_fills_dims_and_refuses_contradiction() -> None:
    spec = EncoderSpec().resolved(2, 3)
    assert (spec.spatial_dims, spec.in_channels) == (2, 3)
    with pytest.raises(MedclInputError, match=r"encoder\.spatial_dims is 3"):
        EncoderSpec(spatial_dims=3).resolved(2, 1)
    with pytest.raises(ValueError, match="resolved"):
        build_encoder(EncoderSpec())


def test_projection_head_and_gradients() -> None:
    torch.manual_seed(0)
    enc = build_encoder(EncoderSpec(spatial_dims=2, in_channels=1, widths=[4, 8, 8, 16]))
    head = ProjectionHead(enc.out_features, hidden=32, out=8)
    z = head(enc(torch.randn(4, 1, 16, 16)))
    assert z.shape == (4, 8)
    z.pow(2).sum().backward()
    assert enc.backbone.conv1.weight.grad is not None
    assert enc.backbone.conv1.weight.grad.abs().sum() > 0


def test_head_without_batch_norm_is_per_sample() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(16, 8, 4, batch_norm=False).train()
    x = torch.randn(6, 16)
    assert torch.allclose(head(x)[:3], head(x[:3]), atol=1e-6)


@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
def test_norm_choices_build(norm: str) -> None:
    # instance norm needs > 1 voxel at the last stage: keep full resolution for 16^3
    enc = build_encoder(EncoderSpec(spatial_dims=3, in_channels=1, widths=[4, 8, 8, 16], norm=norm,
                                    first_stride=1, max_pool=False))
    assert enc(torch.randn(2, 1, 16, 16, 16)).shape == (2, 16)


@pytest.mark.parametrize("norm", ["instance", "group"])
def test_non_batch_norms_make_features_per_sample(norm: str) -> None:
    torch.manual_seed(0)
    spec = EncoderSpec(spatial_dims=3, in_channels=1, widths=[4, 8, 8, 16], norm=norm, first_stride=1,
                       max_pool=False)
    enc = build_encoder(spec).train()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in enc.modules())
    x = torch.randn(4, 1, 16, 16, 16)
    torch.testing.assert_close(enc(x)[:2], enc(x[:2]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_is_a_layout_not_another_network(arch: str, dims: int) -> None:
    """The channels-last encoder (the default) computes what the default-layout one does, on an input
    of any layout, with the same state dict; its convolution weights are channels-last."""
    widths = [4, 4] if arch == "densenet121" else [4, 8, 8, 16]
    base = EncoderSpec(arch=arch, spatial_dims=dims, in_channels=2, widths=widths, first_stride=1)
    torch.manual_seed(0)
    plain = build_encoder(base.model_copy(update={"channels_last": False})).eval()
    fast = build_encoder(base).eval()
    fast.load_state_dict(plain.state_dict())
    layout = torch.channels_last if dims == 2 else torch.channels_last_3d
    convs = [m.weight for m in fast.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    assert convs and all(w.is_contiguous(memory_format=layout) for w in convs)
    assert any(not w.is_contiguous() for w in convs)  # (1-channel and 1x1 weights are both layouts at once)
    assert all(m.weight.is_contiguous() for m in plain.modules() if isinstance(m, torch.nn.modules.conv._ConvNd))
    assert {k: v.shape for k, v in fast.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    x = torch.randn(3, 2, *[16] * dims)
    with torch.no_grad():
        want = plain(x)
        torch.testing.assert_close(fast(x), want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast(x.contiguous(memory_format=layout)), want, rtol=1e-4, atol=1e-5)
