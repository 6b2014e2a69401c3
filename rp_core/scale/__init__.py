"""Anonymize a dataset across GPUs and machines on Ray (`rp anonymize --ray`; `pip install 'rp-anonymize[ray]'`).

Importing this package does not import Ray; a run does. See docs/scale.md.
"""

from rp_core.scale.options import RayOptions
from rp_core.scale.session import RaySession, anonymize_files_on_ray

__all__ = ["RayOptions", "RaySession", "anonymize_files_on_ray"]
