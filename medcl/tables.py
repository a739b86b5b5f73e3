"""Name-keyed tables that code may extend for a while (a toy format in a test, a plug-in format).

The export formats (:mod:`medcl.export.registry`) and image formats (:mod:`medcl.data.image_formats`)
are such tables; :func:`temporarily` adds or replaces one entry for a ``with`` block and restores
the table afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from typing import TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def temporarily(table: MutableMapping[str, T], name: str, entry: T) -> Iterator[T]:
    """``table[name] = entry`` inside the block; afterwards the earlier entry (or none) is back."""
    missing = object()
    previous = table.get(name, missing)
    table[name] = entry
    try:
        yield entry
    finally:
        if previous is missing:
            table.pop(name, None)
        else:
            table[name] = previous  # type: ignore[assignment]
