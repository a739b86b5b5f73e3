"""Cohorts: manifest schema, table join, patient-level splits, image readers and validation.

Kept light: importing ``medcl.data`` loads pydantic, numpy and pandas, never torch or MONAI.
"""

from medcl.data.cohort import Cohort
from medcl.data.manifest import Manifest, load_manifest

__all__ = ["Cohort", "Manifest", "load_manifest"]
