"""Networks, their registry and checkpoints."""
from .registry import build, count_macs, count_params, entries, get, register

__all__ = ["build", "count_macs", "count_params", "entries", "get", "register"]
