"""Prior kernels on subjects' attributes and their batch spectrum.

- :mod:`medcl.kernels.prior`: :class:`KernelTerm`, :class:`PriorKernel` (fit, evaluate, serialise).
- :mod:`medcl.kernels.spectrum`: how much of a batch the kernel-ridge smoother keeps (``lam``).
- :mod:`medcl.kernels.public`: the part of a fitted kernel a report or an export may show.

``from medcl.kernels import PriorKernel, KernelTerm`` is the documented import path. The names are
loaded on first use (PEP 562), so importing :mod:`medcl.kernels.public` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medcl.kernels.prior import MIN_GROUP, REFERENCE_GROUPS, KernelTerm, PriorKernel, Reference  # noqa: F401
    from medcl.kernels.public import public_kernel

_PRIOR = ("MIN_GROUP", "REFERENCE_GROUPS", "KernelTerm", "PriorKernel", "Reference")
__all__ = [*_PRIOR, "public_kernel"]


def __getattr__(name: str) -> Any:
    if name in _PRIOR:
        from medcl.kernels import prior

        return getattr(prior, name)
    if name == "public_kernel":
        from medcl.kernels.public import public_kernel

        return public_kernel
    raise AttributeError(f"module 'medcl.kernels' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
