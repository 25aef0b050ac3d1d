"""Layers: KPConv, SALA, sparse and focal sparse convolution."""
