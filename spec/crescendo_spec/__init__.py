"""The AdaptiveBatchJob spec and the trainer ↔ operator contract, shared by both sides.

Neither side imports the other; both import this package, which needs only pydantic and PyYAML.
"""

from crescendo_spec.model import JobSpec
from crescendo_spec.parse import SpecError, load_spec, parse_spec

__all__ = ["JobSpec", "SpecError", "load_spec", "parse_spec"]
