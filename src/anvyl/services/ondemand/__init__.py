"""Models on demand: load on the first request, unload when idle, within a memory budget."""

from anvyl.services.ondemand.idle import IDLE_PERIOD_S, IdleClock
from anvyl.services.ondemand.loads import Load, LoadCancelled
from anvyl.services.ondemand.manager import OnDemand
from anvyl.services.ondemand.policy import (
    DEFAULT_KEEP_ALIVE_S,
    DEFAULT_LOAD_TIMEOUT_S,
    FOREVER,
    DemandPolicy,
    format_keep_alive,
    parse_keep_alive,
)

__all__ = [
    "DEFAULT_KEEP_ALIVE_S",
    "DEFAULT_LOAD_TIMEOUT_S",
    "FOREVER",
    "IDLE_PERIOD_S",
    "DemandPolicy",
    "IdleClock",
    "Load",
    "LoadCancelled",
    "OnDemand",
    "format_keep_alive",
    "parse_keep_alive",
]
