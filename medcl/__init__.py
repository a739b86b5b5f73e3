"""medcl: pretrain medical image encoders with clinical metadata as prior knowledge.

``import medcl`` stays light; ``medcl.load_encoder`` (from :mod:`medcl.export`) is imported on
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medcl.export import load_encoder

__all__ = ["load_encoder"]


def __getattr__(name: str) -> Any:
    if name == "load_encoder":
        from medcl.export import load_encoder

        return load_encoder
    raise AttributeError(f"module 'medcl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
