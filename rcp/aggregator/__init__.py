"""
The station's SystemAggregator module (C{etc/everest/modules/SystemAggregator}).

The pass-through of L{rcp.aggregator.passthrough} is what the controller
process hosts today; the policy (L{rcp.aggregator.module} and its parts)
replaces it once the receivers are wired in.
"""

from __future__ import annotations

from .passthrough import COMMANDS, MAIN_BOARD, SYSTEM, VARS, SystemAggregatorModule

__all__ = ["COMMANDS", "MAIN_BOARD", "SYSTEM", "VARS", "SystemAggregatorModule"]
