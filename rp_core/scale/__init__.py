"""Anonymize a dataset across GPUs and machines on Ray (`rp anonymize --ray`; `pip install 'rp-anonymize[ray]'`).

`RunSession(pipeline, plan, executor=RayExecutor(RayOptions(...)))` runs a session's files on Ray
actors. Importing this package does not import Ray; a run does. See docs/scale.md.
"""

from rp_core.scale.executor import RayExecutor, anonymize_files_on_ray
from rp_core.scale.options import RayOptions

__all__ = ["RayExecutor", "RayOptions", "anonymize_files_on_ray"]
