"""Run code in a Python process where a package cannot be imported (itk, medcl): the prelude below."""

from __future__ import annotations


def without_package(name: str) -> str:
    """Python source that, run first, makes ``import NAME`` (and its submodules) raise ImportError."""
    return f"""
import sys

class Hidden:
    def find_spec(self, fullname, path=None, target=None):
        if fullname == {name!r} or fullname.startswith({name + "."!r}):
            raise ImportError({name!r} + " is hidden in this test")

sys.meta_path.insert(0, Hidden())
"""
