"""Encoders and projection heads."""

from medcl.models.encoders import Encoder, EncoderSpec, ProjectionHead, build_encoder

__all__ = ["Encoder", "EncoderSpec", "ProjectionHead", "build_encoder"]
