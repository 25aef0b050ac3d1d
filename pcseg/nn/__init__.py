"""Layers: KPConv, SALA, sparse and focal sparse convolution."""
from .sala import SALA
from .kpconv import KPConv
