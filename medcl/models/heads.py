"""Projection heads (re-exported from :mod:`medcl.models.encoders`, where they are defined)."""

from medcl.models.encoders import ProjectionHead

__all__ = ["ProjectionHead"]
