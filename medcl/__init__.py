"""medcl: pretrain medical image encoders with clinical metadata as prior knowledge.

``import medcl`` stays light; ``medcl.load_encoder`` (from :mod:`medcl.export`) and
``medcl.load_diagnosis_model`` (from :mod:`medcl.models.saved`) are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medcl.export import load_encoder
    from medcl.models.saved import load_diagnosis_model

__all__ = ["load_diagnosis_model", "load_encoder"]


def __getattr__(name: str) -> Any:
    if name == "load_encoder":
        from medcl.export import load_encoder

        return load_encoder
    if name == "load_diagnosis_model":
        from medcl.models.saved import load_diagnosis_model

        return load_diagnosis_model
    raise AttributeError(f"module 'medcl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
