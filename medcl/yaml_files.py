"""Reading the YAML files users write (manifests, run configs) with errors that name the file."""

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
