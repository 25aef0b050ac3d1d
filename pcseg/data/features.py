"""Input feature channels, as the papers feed them to the first layer.

Channels (names accepted by ``--features``, in the order given):

``one`` (1 column)
    The constant 1 (KPConv §4.1/§4.2: it encodes the geometry and keeps black points from reading as empty
    space; SALA's "1").
``rgb`` (3 columns)
    Colour scaled to [0, 1] whatever the storage: uint8 / 8-bit values / 0-255 floats divide by 255; 16-bit
    values (LAS stores colour in uint16; a field whose maximum exceeds 255) divide by 65535; floats already in
    [0, 1] are kept. Read from ``red``/``green``/``blue`` (LAS, PLY, S3DIS) or ``r``/``g``/``b``.
``z`` (1 column)
    Height above the lowest point of the *whole cloud* (not of the sphere), in metres. For an S3DIS room this is
    the height above the floor, the "Z" of SALA's ZRGB1 input (supp. B.1; KPConv-PyTorch feeds the S3DIS
    z coordinate, whose floors lie near 0). Computed before subsampling and augmentation, so rotation, scaling
    and sphere centring never change it. For airborne tiles it is height above the tile's lowest point (not
    above ground).
``hag`` (2 columns)
    Height above two label-free ground estimates (:func:`pcseg.geometry.ground.opening_surface`: lowest point
    per 1 m cell, grey opening with a 10 m and a 40 m window), in units of 10 m, clipped to [-0.5, 6]. The
    small window follows steep terrain (a 40 m cliff inside a 50 m Corsican tile) but takes the roofs of
    houses wider than 10 m for ground; the large one keeps buildings up to 40 m wide above ground but cuts
    ridges and fills valleys. The network reads both. Geometry only: it
    reads x, y, z and nothing a sensor stores differently, and it follows hilly terrain where ``z`` (height
    above the tile's lowest point) does not. It depends on the neighbourhood, so a cloud processed in pieces
    computes it per piece with a margin of more than half the window (:func:`fill_local_features`).
``terrain`` (2 columns)
    Height above two label-free ground estimates, in units of 10 m clipped to [-0.5, 6] like ``hag``: the
    10 m opening of ``hag`` (follows steep terrain, takes roofs wider than 10 m for ground) and the
    progressive morphological terrain model :func:`pcseg.geometry.ground.terrain_surface` (windows up to
    256 m with PMF's slope thresholds and a step test: roofs up to 256 m wide, and roofs cut by the tile's
    edge, stand above it; cells sized to the survey's point spacing, so a 0.3 points/m² tile gets a surface
    as whole as a dense one). A neighbourhood channel like ``hag``, with a margin of half the widest window.
``echo`` (4 columns)
    What the return numbers say, the same on every sensor (ASPRS ``return_number`` / ``number_of_returns``):
    whether the cloud records them, single return (1 of 1: roofs, bare ground), first of several (the top
    of a canopy) and last of several (what is below it). Intensity, whose scale differs by sensor, stays out.
    A cloud without usable return numbers (no such fields, or every ``number_of_returns`` 0, or a
    ``return_number`` above ``number_of_returns`` on more than 1 % of the points) gets four zero columns: the
    input a model trained with ``echo_drop`` learnt for x, y, z-only files. Never an error.
``shape`` (6 columns)
    Indoor geometry from x, y, z alone, label-free (:mod:`pcseg.geometry.shape`): the normal's vertical component
    ``|n_z|`` (1 on floors, ceilings and table tops, 0 on walls and doors), planarity ``(l2 - l3) / l1`` and
    linearity ``(l1 - l2) / l1`` (eigenvalues ``l1 >= l2 >= l3`` of the covariance of the 24 nearest points of
    the cloud grid-subsampled at 4 cm, so that S3DIS, ScanNet and the generated rooms, sampled at different
    densities, get the same neighbourhoods); then the height above the room's floor and the depth below its
    ceiling in metres, clipped to [-0.5, 4], and 1 where a ceiling was found, 0 where none was (the depth
    column then holds 4: no ceiling within reach). Floor and ceiling are estimated from the cloud's own points
    (:func:`pcseg.geometry.shape.room_levels`): the lowest and the highest horizontal surface covering a share
    of the room's footprint, the ceiling at least 2 m above the floor with the walls ending there; a room
    scanned or cropped without its ceiling gets none, never the top of a bookcase. Computed on the whole
    cloud before subsampling and augmentation (the heights do not follow the scaling, like ``z``), at training
    and at inference alike. A neighbourhood channel: a cloud processed in pieces computes it per piece with
    its margin (:func:`fill_local_features`), each piece estimating its own floor and ceiling.
``intensity`` (1 column)
    Return strength: floats already in [0, 1] (SemanticKITTI remission) are kept; anything else is divided
    by the cloud's 99th percentile and clipped to [0, 1], because sensors store intensity on very different
    scales (the ALS tiles here range from 0-254 to 0-65535). Read from ``intensity``, ``remission`` or
    ``reflectance``.

A requested channel the data lacks raises :class:`pcseg.errors.BadInputError` naming the file, the channel and
the fields the file has; so does a colour or intensity field that is present but all zero (some LAS writers create the
colour dimensions and leave them empty): a model is never fed silent zeros. The one exception is a model that
learnt colourless input: one trained with colour dropped to zero on part of its spheres (the card's
``color_drop``) reads a cloud without colour with zero ``rgb`` columns (``color_optional``), and says so.

:data:`FEATURE_PRESETS` lists the channels each paper uses; :func:`channel_slices` says which columns hold which
channel (augmentation uses it to drop colour).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import BadInputError, UsageError

CHANNEL_WIDTHS = {"one": 1, "rgb": 3, "z": 1, "hag": 2, "terrain": 2, "echo": 4, "intensity": 1, "shape": 6}
"""Number of columns of each channel."""

LOCAL_CHANNELS = ("hag", "terrain", "shape")
"""Channels computed from a point's neighbourhood (not from the point and whole-cloud statistics alone)."""
GROUND_CHANNELS = ("hag", "terrain")
"""Channels that read heights above label-free ground estimates (:func:`ground_surfaces`)."""

HAG_CELL, HAG_WINDOWS, HAG_UNIT, HAG_RANGE = 1.0, (10.0, 40.0), 10.0, (-0.5, 6.0)
"""``hag``: raster cell and opening windows (m), unit (m) and clipping range (in units)."""

FEATURE_PRESETS = {
    "kpconv-geometry": ("one",),  # KPConv ModelNet40 / geometry only (§4.1)
    "kpconv-rgb": ("one", "rgb"),  # KPConv scenes "when datasets are colorized" (§4.2)
    "sala-s3dis": ("one", "rgb", "z"),  # SALA supp. B.1: ZRGB1
    "sala-scannet": ("one", "rgb"),  # SALA supp. B.2: RGB1
    "lidar": ("one", "intensity"),  # SemanticKITTI / airborne lidar without colour
    "als-geometry": ("one", "hag"),  # airborne lidar from any sensor: x, y, z only
    "als-terrain-echo": ("one", "terrain", "echo"),  # airborne lidar: x, y, z and return numbers
    "sala-s3dis-shape": ("one", "rgb", "z", "shape"),  # SALA's ZRGB1 + indoor geometry (issue #28)
    "sala-xyz-shape": ("one", "z", "shape"),  # indoor scans without colour: 1 + Z + indoor geometry
}
"""Paper input channels (the trainer's presets pick one; order within a preset is the column order)."""

_RGB_NAMES = (("red", "green", "blue"), ("r", "g", "b"))
COLOR_FIELDS = tuple(k for names in _RGB_NAMES for k in names)
"""Every field name the ``rgb`` channel reads."""
_INTENSITY_NAMES = ("intensity", "remission", "reflectance")


def parse_channels(channels: str | Sequence[str]) -> tuple[str, ...]:
    """Channel names from ``"one,rgb,z"`` or a sequence; unknown or repeated names are a :class:`UsageError`."""
    if isinstance(channels, str):
        channels = [c.strip() for c in channels.split(",") if c.strip()]
    channels = tuple(channels)
    if not channels:
        raise UsageError("at least one feature channel is needed (e.g. 'one')")
    unknown = [c for c in channels if c not in CHANNEL_WIDTHS]
    if unknown:
        raise UsageError(f"unknown feature channel(s) {', '.join(unknown)} (known: {', '.join(CHANNEL_WIDTHS)})")
    if len(set(channels)) != len(channels):
        raise UsageError(f"feature channels repeated in {','.join(channels)}")
    if set(GROUND_CHANNELS) <= set(channels):
        raise UsageError(f"feature channels {' and '.join(GROUND_CHANNELS)} both read ground estimates; choose one")
    return channels


def num_features(channels: Sequence[str]) -> int:
    """Number of feature columns (the network's ``in_features``)."""
    return sum(CHANNEL_WIDTHS[c] for c in parse_channels(channels))


def channel_slices(channels: Sequence[str]) -> dict[str, slice]:
    """Column slice of each channel in the feature matrix."""
    out, start = {}, 0
    for c in parse_channels(channels):
        out[c] = slice(start, start + CHANNEL_WIDTHS[c])
        start += CHANNEL_WIDTHS[c]
    return out


def has_color(fields: Mapping[str, np.ndarray]) -> bool:
    """Whether ``fields`` hold colour that is not all zero."""
    names = next((t for t in _RGB_NAMES if all(k in fields for k in t)), None)
    return names is not None and any(np.any(fields[k]) for k in names)


def _missing(channel: str, wanted: str, fields: Mapping[str, np.ndarray], path: str | None) -> BadInputError:
    have = ", ".join(sorted(fields)) or "none"
    return BadInputError(f"feature channel {channel!r} needs {wanted}, but the cloud's fields are: {have}", path)


def color_scale(values: np.ndarray) -> float:
    """Divisor that maps a cloud's colour values to [0, 1] (rules in the module docstring)."""
    v = np.asarray(values)
    peak = float(v.max()) if v.size else 0.0
    if v.dtype.kind == "f" and peak <= 1.0:
        return 1.0
    return 255.0 if peak <= 255.0 else 65535.0


def scale_color(values: np.ndarray, scale: float | None = None) -> np.ndarray:
    """(N, k) colour values in any storage -> float32 in [0, 1] (rules in the module docstring)."""
    scale = color_scale(values) if scale is None else scale
    return np.clip(np.asarray(values).astype(np.float32) / np.float32(scale), 0.0, 1.0)


def intensity_scale(values: np.ndarray) -> float:
    """Divisor of a cloud's intensities: 1 for floats already in [0, 1], else the 99th percentile (the maximum
    when that is 0; 0 when every value is 0)."""
    v = np.asarray(values)
    if v.size == 0:
        return 1.0
    if v.dtype.kind == "f" and v.min() >= 0.0 and v.max() <= 1.0:
        return 1.0
    q = float(np.percentile(v.astype(np.float64), 99.0))
    return q if q > 0 else float(v.max())


def scale_intensity(values: np.ndarray, scale: float | None = None) -> np.ndarray:
    """(N,) intensity -> float32 in [0, 1] (rules in the module docstring)."""
    v = np.asarray(values).astype(np.float64)
    scale = intensity_scale(values) if scale is None else scale
    return np.clip(v / scale, 0.0, 1.0).astype(np.float32) if scale > 0 else np.zeros(len(v), np.float32)


@dataclass(frozen=True)
class FeatureStats:
    """Whole-cloud statistics the channels depend on: lowest z, colour and intensity divisors. Computed from
    the cloud itself by default; given explicitly when a large cloud is processed in pieces, so that every
    piece gets the features the whole cloud would have."""

    z_min: float = 0.0
    color_scale: float = 255.0
    intensity_scale: float = 1.0


def local_margin(channels: Sequence[str]) -> float:
    """Metres of context a piece of a cloud needs around it for its neighbourhood channels to equal the whole
    cloud's: half the widest opening window plus a cell. The terrain model's widest window is the first of its
    series (2^k + 1 cells) that spans 256 m, which on a sparse survey's coarse cells can span up to twice that."""
    from ..geometry.ground import TERRAIN_MAX_WINDOW

    channels = parse_channels(channels)
    margin = HAG_WINDOWS[-1] / 2 + HAG_CELL if "hag" in channels else 0.0
    margin = max(margin, SHAPE_MARGIN) if "shape" in channels else margin
    return max(margin, TERRAIN_MAX_WINDOW + 5.0) if "terrain" in channels else margin


def terrain_surfaces(xyz: np.ndarray) -> list:
    """The two label-free ground estimates the ``terrain`` channel reads: the 10 m opening of ``hag`` and the
    progressive morphological terrain model (:func:`pcseg.geometry.ground.terrain_surface`)."""
    from ..geometry.ground import opening_surfaces, terrain_surface

    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    return [opening_surfaces(xyz, HAG_CELL, HAG_WINDOWS[:1])[0], terrain_surface(xyz)]


def ground_surfaces(xyz: np.ndarray, channels: Sequence[str]) -> list:
    """The ground estimates a model with input ``channels`` reads and its building test measures heights above:
    :func:`terrain_surfaces` for a ``terrain`` model, :func:`hag_surfaces` otherwise."""
    return terrain_surfaces(xyz) if "terrain" in parse_channels(channels) else hag_surfaces(xyz)


def hag_surfaces(xyz: np.ndarray) -> list:
    """The two label-free ground estimates the ``hag`` channel reads (opening surfaces with its cell and
    windows, :func:`pcseg.geometry.ground.opening_surfaces`) of a non-empty cloud."""
    from ..geometry.ground import opening_surfaces

    return opening_surfaces(np.asarray(xyz, dtype=np.float64).reshape(-1, 3), HAG_CELL, HAG_WINDOWS)


def height_above_ground_feature(xyz: np.ndarray, surfaces: list | None = None, channel: str = "hag") -> np.ndarray:
    """(N, 2) float32 ``hag`` or ``terrain`` channel of a cloud (see the module docstring); ``surfaces``: its
    :func:`ground_surfaces` when the caller already has them."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if not len(xyz):
        return np.zeros((0, CHANNEL_WIDTHS[channel]), np.float32)
    surfaces = ground_surfaces(xyz, (channel,)) if surfaces is None else surfaces
    h = np.stack([s.height(xyz) for s in surfaces], axis=1) / HAG_UNIT
    return np.clip(h, *HAG_RANGE).astype(np.float32)


def fill_local_features(features: np.ndarray, xyz: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    """Compute the neighbourhood channels (:data:`LOCAL_CHANNELS`) of a piece of a cloud in place: the columns
    :func:`make_features` left as NaN with ``local=False``. Returns ``features``."""
    for c, cols in channel_slices(channels).items():
        if c in GROUND_CHANNELS:
            features[:, cols] = height_above_ground_feature(xyz, channel=c)
        elif c == "shape":
            features[:, cols] = shape_feature(xyz)
    return features


ECHO_INCONSISTENT_SHARE = 0.01
"""Return numbers are unusable when more than this share of points has ``return_number`` above
``number_of_returns`` (or either is 0 where the other is not)."""


def echo_feature(fields: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """(N, 4) float32 ``echo`` channel (see the module docstring): recorded, single, first of several, last of
    several; all zero where the cloud has no usable return numbers."""
    out = np.zeros((n, 4), np.float32)
    if n == 0 or "return_number" not in fields or "number_of_returns" not in fields:
        return out
    r = np.asarray(fields["return_number"]).astype(np.int64)
    m = np.asarray(fields["number_of_returns"]).astype(np.int64)
    bad = (r > m) | (r < 1) | (m < 1)
    if not np.any(m) or bad.mean() > ECHO_INCONSISTENT_SHARE:
        return out
    ok = ~bad
    out[:, 0] = 1.0
    out[:, 1] = ok & (m == 1)
    out[:, 2] = ok & (m > 1) & (r == 1)
    out[:, 3] = ok & (m > 1) & (r == m)
    return out


def has_echo(fields: Mapping[str, np.ndarray]) -> bool:
    """Whether ``fields`` hold return numbers the ``echo`` channel can read (its columns are not all zero)."""
    n = len(next(iter(fields.values()))) if fields else 0
    return bool(n) and bool(echo_feature({k: fields[k] for k in ("return_number", "number_of_returns")
                                          if k in fields}, n)[:, 0].any())


def make_features(
    fields: Mapping[str, np.ndarray],
    xyz: np.ndarray,
    channels: Sequence[str],
    path: str | None = None,
    stats: FeatureStats | None = None,
    local: bool = True,
    color_optional: bool = False,
    hag: list | None = None,
) -> np.ndarray:
    """(N, F) float32 input features of a whole cloud for ``channels`` (see the module docstring).

    fields: per-point arrays by name (``PointCloud.fields``); xyz: (N, 3) coordinates; path: the source file,
    named in errors; stats: whole-cloud statistics when ``xyz`` is only a piece of the cloud; local=False
    leaves the neighbourhood channels NaN, for :func:`fill_local_features` on a spatial piece with margin;
    color_optional: the model was trained with colour dropped to zero on part of its spheres (the card's
    ``color_drop``), so a cloud without colour gets zero ``rgb`` columns, the input it learnt for that case,
    instead of an error; hag: the cloud's :func:`ground_surfaces` for ``channels``, when the caller computed
    them (they are reused, not recomputed).
    """
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    n = len(xyz)
    cols = []
    for c in parse_channels(channels):
        if c == "one":
            cols.append(np.ones((n, 1), np.float32))
        elif c in GROUND_CHANNELS:
            cols.append(height_above_ground_feature(xyz, hag, c) if local else np.full((n, 2), np.nan, np.float32))
        elif c == "echo":
            cols.append(echo_feature(fields, n))
        elif c == "shape":
            cols.append(shape_feature(xyz) if local else np.full((n, CHANNEL_WIDTHS[c]), np.nan, np.float32))
        elif c == "z":
            z_min = stats.z_min if stats is not None else (xyz[:, 2].min() if n else 0.0)
            cols.append((xyz[:, 2:3] - z_min).astype(np.float32))
        elif c == "rgb":
            names = next((t for t in _RGB_NAMES if all(k in fields for k in t)), None)
            if color_optional and (names is None or (n and stats is None and not has_color(fields))):
                cols.append(np.zeros((n, 3), np.float32))
                continue
            if names is None:
                raise _missing(c, "fields red, green, blue", fields, path)
            rgb = np.stack([np.asarray(fields[k]) for k in names], axis=1)
            if n and stats is None and not np.any(rgb):
                raise BadInputError(f"feature channel 'rgb': fields {', '.join(names)} are all zero "
                                    "(the file records no colour); choose features without rgb", path)
            cols.append(scale_color(rgb, None if stats is None else stats.color_scale))
        elif c == "intensity":
            name = next((k for k in _INTENSITY_NAMES if k in fields), None)
            if name is None:
                raise _missing(c, "a field " + " / ".join(_INTENSITY_NAMES), fields, path)
            if n and stats is None and not np.any(fields[name]):
                raise BadInputError(f"feature channel 'intensity': field {name} is all zero (the file records no "
                                    "intensity); choose features without intensity", path)
            cols.append(scale_intensity(fields[name], None if stats is None else stats.intensity_scale)[:, None])
    return np.concatenate(cols, axis=1).astype(np.float32, copy=False)


SHAPE_RANGE = (-0.5, 4.0)
"""``shape``: clipping range (m) of the height above the floor and of the depth below the ceiling; a cloud without
a ceiling reads the upper bound as its depth."""
SHAPE_MARGIN = 3.0
"""``shape``: metres of context around a piece of a cloud. The neighbourhoods need ~0.2 m; the rest lets each
piece's floor and ceiling estimate see the room around its edge."""


def shape_feature(xyz: np.ndarray, workers: int = -1) -> np.ndarray:
    """(N, 6) float32 ``shape`` channel of a cloud (see the module docstring): ``|n_z|``, planarity, linearity,
    height above the floor, depth below the ceiling, ceiling found. ``workers``: neighbour-search threads."""
    from ..geometry.shape import local_shape, room_levels

    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    out = np.zeros((len(xyz), CHANNEL_WIDTHS["shape"]), np.float32)
    if not len(xyz):
        return out
    shape = local_shape(xyz, workers=workers)
    levels = room_levels(shape.points, shape.grid_features[:, 0])
    out[:, :3] = shape.features
    out[:, 3] = np.clip(xyz[:, 2] - levels.floor, *SHAPE_RANGE)
    if levels.ceiling is None:
        out[:, 4] = SHAPE_RANGE[1]
    else:
        out[:, 4] = np.clip(levels.ceiling - xyz[:, 2], *SHAPE_RANGE)
        out[:, 5] = 1.0
    return out
