"""Reading the YAML files users write (manifests, run configs) with errors that name the file, and
the dotted ``key=value`` overrides of a command line (``--set optimizer.lr=0.01``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from medcl.errors import MedclInputError


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse a YAML file; MedclInputError names ``what`` and the file when it is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise MedclInputError(f"{what} {path} does not exist or is not a file")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise MedclInputError(f"{what} {path}: not valid YAML ({err})") from None


def validation_problems(err: ValidationError, source: str) -> list[str]:
    """One line per pydantic error: ``source: dotted.key: message``."""
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        out.append(f"{source}: {loc}: {e['msg']}")
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``key.sub=value`` into (["key", "sub"], value) with ``value`` read as a YAML scalar."""
    if "=" not in item:
        raise MedclInputError(f"--set {item!r}: expected key=value (e.g. optimizer.lr=0.01)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise MedclInputError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise MedclInputError(f"--set {item!r}: value is not valid YAML ({err})") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of ``data`` with dotted ``key=value`` overrides applied (not yet validated)."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for i, p in enumerate(parts[:-1]):
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise MedclInputError(f"--set {item!r}: {where} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data
