"""The settings of one `pcseg segment` run, gathered once by the CLI and read by the engine.

:func:`pcseg.engine.segment.segment_file`, its tiled path and :func:`pcseg.engine.chunked.segment_las_chunked`
take a :class:`SegmentOptions` instead of a dozen positional settings, so that a new setting is one field here
and one read where it is used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class SegmentOptions:
    votes: int = 3                                            # test-time rotations about z averaged per point
    device: str = "cpu"                                       # a resolved device (engine.runtime.resolve_device)
    confidence: bool = False                                  # write the top class probability
    proba: bool = False                                       # write prob_<class> for every class
    as_classification: bool = False                           # ASPRS codes into the LAS classification
    eval_field: str | None = None                             # ground truth to score against
    batch_points: int = 60_000                                # points per forward pass
    tile_points: int = 5_000_000                              # LAS/LAZ inputs above this go tile by tile
    vegetation_heights: tuple[float, float] | None = None     # low / medium vegetation upper heights (m)
    ground_tolerance: float | None = None                     # ground test (m above the neighbours' plane); inf: off
    building_min_height: float | None = None                  # building test (m above the hag estimates); inf: off
    bf16: bool = False                                        # network in bfloat16
    png: str | None = None                                    # also render a picture of the result here

    @property
    def want_proba(self) -> bool:
        return self.confidence or self.proba


def metres_or_off(value: str | None, option: str) -> float | None:
    """A height setting as given on the command line: None (the card's), a number of metres, or 'off' (inf)."""
    if value is None:
        return None
    try:
        return math.inf if value.strip().lower() == "off" else float(value)
    except ValueError:
        raise UsageError(f"{option} takes a height in metres or 'off', not {value!r}") from None
