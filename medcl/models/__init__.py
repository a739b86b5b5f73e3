"""Encoders and projection heads; :mod:`medcl.models.saved`: an encoder on disk (safetensors + JSON document)."""

from medcl.models.encoders import Encoder, EncoderSpec, ProjectionHead, build_encoder

__all__ = ["Encoder", "EncoderSpec", "ProjectionHead", "build_encoder"]
