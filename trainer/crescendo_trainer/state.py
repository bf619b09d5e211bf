"""Restart state: the registry of Stateful components a checkpoint holds, by name.

Everything a restart needs is a component with `state_dict()` / `load_state_dict()` (torchtitan's
habit): the user's model, optimizer, scheduler and extras, and the job's own progress, policy,
noise-scale estimate and RNG. Each is registered once; the checkpoint's payload is
{name: component.state_dict()}, and a restore hands every entry back to the component of the same
name. So save and restore never list keys by hand, and a component missing from a checkpoint (or
a checkpoint entry no component claims) is an error that names it, never a silent partial restore.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names the job registers itself; a user's component cannot take them.
RESERVED = ("progress", "policy", "noise", "rng", "version")


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any], /) -> Any: ...


class StateError(ValueError):
    """A component cannot be registered or restored; the message names it."""


class StateRegistry:
    """The named components of one job's checkpoint, in registration order."""

    def __init__(self) -> None:
        self._components: dict[str, Stateful] = {}

    def register(self, name: str, component: object, *, reserved_ok: bool = False) -> None:
        if not _NAME.match(name):
            raise StateError(f"component name {name!r} must be a Python identifier")
        if name in RESERVED and not reserved_ok:
            raise StateError(
                f"component name {name!r} is the job's own ({', '.join(RESERVED)}): pick another"
            )
        if name in self._components:
            raise StateError(f"a component named {name!r} is already registered")
        if not isinstance(component, Stateful):
            raise StateError(
                f"component {name!r} ({type(component).__name__}) has no "
                "state_dict()/load_state_dict(): wrap it in an object that has them"
            )
        self._components[name] = component

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._components)

    def state_dict(self) -> dict[str, Any]:
        return {name: c.state_dict() for name, c in self._components.items()}

    def load_state_dict(self, payload: Mapping[str, Any]) -> None:
        """Restore every component; first check the names match, so nothing is half-restored."""
        stored = {k for k in payload if k != "version"}
        missing = [n for n in self._components if n not in stored]
        unknown = sorted(stored - set(self._components))
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"it lacks {', '.join(missing)}")
            if unknown:
                parts.append(f"no component is registered for {', '.join(unknown)}")
            raise StateError(
                "the checkpoint does not match the job's components: " + "; ".join(parts)
                + " (register the same components, with the same names, as the run that saved it)"
            )
        for name, component in self._components.items():
            component.load_state_dict(payload[name])


class RngState:
    """torch's global CPU generator (and CUDA's, when present) as a component."""

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])
