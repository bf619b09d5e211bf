"""Entry point for `kopf run -m crescendo_operator.main`: the handlers on kopf's default registry.

Only wiring: the configuration is read once here, at start-up, and a bad CRESCENDO_* variable
stops the operator with the variable's name. `crescendo operator` does the same without kopf's CLI.
"""

from __future__ import annotations

import kopf

from crescendo_operator import config
from crescendo_operator.handlers import register

RUNTIME = register(kopf.get_default_registry(), config.load())
