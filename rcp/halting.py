"""Objects that can be halted: after C{halt()}, their effects do nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Haltable:
    """
    A link end whose board or process can go down at any moment: timers and
    late answers may still fire afterwards, and must then have no effect.
    """

    halted = False

    def guard(self, effect: Callable[..., None]) -> Callable[..., None]:
        """C{effect}, made a no-op once this object is halted."""

        def guarded(*args: Any) -> None:
            if not self.halted:
                effect(*args)

        return guarded
