"""Imports every module that registers a network (one import line per network module)."""
from . import salanet  # noqa: F401  (SALANet, SALA paper §3.4)
from . import kpconv_nets  # noqa: F401  (KP-FCNN, KP-CNN, KPConv paper §3.4)
from . import detector  # noqa: F401  (focals-centerpoint, Focals Conv + CenterPoint)
