"""The table of export formats: one :class:`~medcl.export.format.ExportFormat` record per format, in CLI order.

Add a format: a module beside this one with its ``write`` / ``load`` (and ``sniff``) and a ``FORMAT``
record, and one entry in :data:`_BUILT_IN`. The CLI's ``--format`` choices, the loader's dispatch
and the round-trip check read this table; :func:`registered` adds a format for a ``with`` block
(tests, trying a format out). The first format is the default of ``medcl export``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from medcl.errors import MedclInputError
from medcl.export import bundle, onnx_file, safetensors_file, torch_export, torchscript
from medcl.export.format import ExportFormat
from medcl.tables import temporarily

_BUILT_IN = (bundle.FORMAT, safetensors_file.FORMAT, torch_export.FORMAT, torchscript.FORMAT, onnx_file.FORMAT)
_TABLE: dict[str, ExportFormat] = {fmt.name: fmt for fmt in _BUILT_IN}

#: the built-in formats' names, in table order (:func:`format_names` also lists registered ones)
FORMATS: tuple[str, ...] = tuple(_TABLE)


def export_formats() -> tuple[ExportFormat, ...]:
    """Every format's record, in table order."""
    return tuple(_TABLE.values())


def format_names() -> tuple[str, ...]:
    """The ``--format`` choices, in table order (the first is the default)."""
    return tuple(_TABLE)


def get_format(name: str) -> ExportFormat:
    """The record of format ``name``; MedclInputError naming the choices when there is none."""
    try:
        return _TABLE[name]
    except KeyError:
        raise MedclInputError(f"unknown export format {name!r}; choose one of {list(_TABLE)}") from None


def format_for_suffix(suffix: str) -> ExportFormat | None:
    """The file format that claims extension ``suffix`` (any case), or None."""
    suffix = suffix.lower()
    return next((fmt for fmt in _TABLE.values() if suffix in fmt.suffixes), None)


def written_by(suffix: str) -> ExportFormat | None:
    """The file format that *writes* extension ``suffix`` (its first suffix), or None."""
    suffix = suffix.lower()
    return next((fmt for fmt in _TABLE.values() if fmt.suffixes and fmt.suffix == suffix), None)


def _check_new(fmt: ExportFormat, table: dict[str, ExportFormat]) -> None:
    claimed = {s: other.name for other in table.values() if other.name != fmt.name for s in other.suffixes}
    clash = [s for s in fmt.suffixes if s in claimed]
    if clash:
        raise ValueError(f"export format {fmt.name!r}: suffix {clash[0]} is already format {claimed[clash[0]]!r}'s")


@contextlib.contextmanager
def registered(fmt: ExportFormat) -> Iterator[ExportFormat]:
    """Add ``fmt`` to the table (or replace the format of that name) for the ``with`` block only.

    Raises ValueError when another format already claims one of its suffixes.
    """
    _check_new(fmt, _TABLE)
    with temporarily(_TABLE, fmt.name, fmt):
        yield fmt
