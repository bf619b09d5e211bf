"""The operator tests' fixtures (API emulator, fake trainer, operator runner) for test_rbac.py."""

from tests.operator.conftest import cluster, operator, trainer

__all__ = ["cluster", "operator", "trainer"]
