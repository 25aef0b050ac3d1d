"""Pictures of point clouds: class / field colours, truth | prediction | errors panels, boxes seen from above.

Rasterising is :mod:`pcseg.geometry.raster` (numpy z-buffer: the highest point per pixel from above, the nearest
one from the side or in perspective); this module colours the visible points and composes the picture: a map
area, and with ``annotate=True`` a legend panel on the right (class names and colours, or a colour ramp), panel
titles, a scale bar (a round length, in metres = the cloud's units) on top and side views and a north arrow on
top views (labelled ``N`` for LAS/LAZ files, which are map coordinates, ``+y`` otherwise). Text is drawn with
Pillow, an optional dependency (``pip install 'pcseg[render]'``): :func:`require_pillow` raises a one-line
:class:`~pcseg.errors.UsageError` when it is missing. Pictures are ``(H, W, 3)`` uint8 arrays;
:func:`save_png` writes one atomically.

Colours of a field (``by``):

* integer label fields: ``classification`` (any field whose name contains it) holds ASPRS codes and gets the
  ASPRS colours and names; ``class`` / ``pred_class`` (what ``pcseg segment`` writes) hold the model's class ids
  and get the class map's names and colours: the one passed in, else the one the file implies (a
  ``height_above_ground`` field is written only for models of the ``als`` class set), else generic colours
  named by value. Other integer fields named like ids (``*_id``, ``*label*``, ``instance``) get generic colours.
* ``rgb``: the file's red, green, blue fields. ``z``: the height. Any other numeric field (``confidence``,
  ``height_above_ground``, ``intensity``, ``prob_*``...): a viridis ramp over the 1st-99th percentile of the
  visible points (``confidence`` and ``prob_*`` over 0..1).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from ..errors import BadInputError, UsageError
from ..geometry.boxes import boxes_corners_bev
from ..geometry.raster import VIEWS, Frame, auto_point_size, fit_frame, project, rasterize, zbuffer
from ..io import PointCloud
from ..io.atomic import atomic_write

if TYPE_CHECKING:  # pcseg.data imports torch (its batch module): class maps are imported where they are used
    from ..data.classmaps import ClassMap

__all__ = [
    "ClassStyle", "render_cloud", "render_compare", "render_boxes_top", "save_png", "png_bytes", "compare_labels",
    "require_pillow", "implied_class_map", "default_prediction_field", "DEFAULT_SIZE", "COMPARE_SIZE",
    "CORRECT", "WRONG", "UNLABELLED", "BACKGROUND",
]

PILLOW_MISSING = "drawing pictures needs Pillow: pip install 'pcseg[render]' (or pip install pillow)"

DEFAULT_SIZE = (1200, 900)
COMPARE_SIZE = (1800, 700)
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
CORRECT = (170, 205, 170)      # errors panel: prediction = truth
WRONG = (220, 20, 60)          # errors panel: prediction != truth
UNLABELLED = (215, 215, 215)   # truth not labelled (ignored by the class map): neither right nor wrong
MARGIN = 8                     # free pixels around the points in a map area
HEADER = 20                    # title strip above a panel (annotate=True)
MAX_LEGEND_ENTRIES = 24

# Prediction fields pcseg writes, in the order `--compare` looks for them.
PREDICTION_FIELDS = ("pred_class", "class", "classification")

# ASPRS codes beyond the ones of the class maps (pcseg.data.classmaps.ASPRS_CLASSES) and IGN LiDAR HD's own.
_ASPRS_EXTRA_COLORS = {
    0: (200, 200, 200), 7: (255, 0, 255), 8: (255, 140, 200), 10: (120, 100, 90), 11: (90, 90, 90),
    12: (255, 220, 150), 13: (255, 150, 0), 14: (255, 120, 0), 15: (180, 80, 0), 16: (220, 160, 60),
    18: (200, 0, 200), 64: (120, 60, 160), 65: (255, 60, 200), 66: (0, 200, 200), 67: (160, 110, 200),
}
_IGN_NAMES = {64: "permanent structure", 65: "artefact", 66: "virtual point", 67: "miscellaneous structure"}

# Generic categorical colours (Tableau 20), for labels without a known class map.
_GENERIC = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229)], dtype=np.uint8)

# Colour ramps: evenly spaced stops, interpolated linearly (viridis: matplotlib's, at tenths).
_RAMPS = {
    "viridis": np.array([(68, 1, 84), (72, 40, 120), (62, 73, 137), (49, 104, 142), (38, 130, 142),
                         (31, 158, 137), (53, 183, 121), (110, 206, 88), (181, 222, 43), (253, 231, 37)],
                        dtype=np.float64),
    "greys": np.array([(205, 205, 205), (40, 40, 40)], dtype=np.float64),
}


# ---------------------------------------------------------------------------------------------------------
# Pillow


def require_pillow():
    """The PIL modules (Image, ImageDraw, ImageFont); a one-line UsageError saying how to install Pillow when
    it is missing."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise UsageError(PILLOW_MISSING) from None
    return Image, ImageDraw, ImageFont


def _font(size: int = 12):
    _, _, ImageFont = require_pillow()
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()          # Pillow 9: the small bitmap font


def _text_width(font, text: str) -> float:
    try:
        return float(font.getlength(text))
    except AttributeError:  # very old bitmap fonts
        return 6.0 * len(text)


def save_png(image: np.ndarray, path: str) -> None:
    """Write an (H, W, 3) uint8 picture as PNG, atomically (temporary file, then rename)."""
    data = png_bytes(image)
    atomic_write(path, lambda f: f.write(data))


def png_bytes(image: np.ndarray) -> bytes:
    """The PNG encoding of an (H, W, 3) uint8 picture."""
    Image, _, _ = require_pillow()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------
# Colours


@dataclass(frozen=True)
class ClassStyle:
    """How integer labels look: ``names`` and ``colors`` by label value; values missing from ``colors`` get a
    generic colour, negative values (not labelled / ignored) :data:`UNLABELLED`."""

    title: str
    names: Mapping[int, str]
    colors: Mapping[int, tuple[int, int, int]]

    @classmethod
    def from_class_map(cls, cmap: ClassMap, title: str | None = None) -> "ClassStyle":
        """Class ids 0..C-1 of a class map (a model's predictions)."""
        return cls(title or cmap.name, dict(enumerate(cmap.names)), dict(enumerate(cmap.colors)))

    @classmethod
    def from_lists(cls, names: Sequence[str] | None, colors=None, title: str = "class") -> "ClassStyle":
        """Class ids 0..C-1 named by ``names`` (None: the ids) coloured by ``colors`` ((C, 3); None: generic)."""
        n = len(names) if names is not None else (len(colors) if colors is not None else 0)
        names = list(names) if names is not None else [str(i) for i in range(n)]
        cols = np.asarray(colors, dtype=np.int64).reshape(-1, 3) if colors is not None else _GENERIC[np.arange(n) % 20]
        if len(cols) != n:
            raise ValueError(f"{n} class names but {len(cols)} colours")
        return cls(title, dict(enumerate(names)), {i: tuple(int(v) for v in c) for i, c in enumerate(cols)})

    @classmethod
    def asprs(cls, title: str = "ASPRS classification") -> "ClassStyle":
        """ASPRS LAS codes: the class maps' colours for the classes they know, others added."""
        from ..data.classmaps import ASPRS_CLASSES
        from ..io.las import ASPRS_CLASS_NAMES

        colors = {code: col for _, code, col in ASPRS_CLASSES}
        colors.update(_ASPRS_EXTRA_COLORS)
        names = {**ASPRS_CLASS_NAMES, **_IGN_NAMES}
        return cls(title, names, colors)

    @classmethod
    def generic(cls, title: str) -> "ClassStyle":
        return cls(title, {}, {})

    def name(self, value: int) -> str:
        if value < 0:
            return "not labelled"
        return self.names.get(int(value), str(int(value)))

    def color(self, value: int) -> tuple[int, int, int]:
        if value < 0:
            return UNLABELLED
        c = self.colors.get(int(value))
        return tuple(int(v) for v in (c if c is not None else _GENERIC[int(value) % 20]))

    def colorize(self, values: np.ndarray) -> np.ndarray:
        """(N, 3) uint8 colours of label values."""
        values = np.asarray(values).astype(np.int64)
        out = _GENERIC[np.abs(values) % 20].copy()
        if self.colors:
            keys = np.array(sorted(self.colors), dtype=np.int64)
            table = np.array([self.colors[int(k)] for k in keys], dtype=np.uint8)
            pos = np.clip(np.searchsorted(keys, values), 0, len(keys) - 1)
            known = keys[pos] == values
            out[known] = table[pos[known]]
        out[values < 0] = UNLABELLED
        return out

    def entries(self, values: np.ndarray) -> list[tuple[str, tuple[int, int, int]]]:
        """Legend entries (name, colour) of the values present, in value order (not labelled last)."""
        present = _present(values)
        out = [(self.name(v), self.color(v)) for v in present if v >= 0]
        if np.any(present < 0):
            out.append(("not labelled", UNLABELLED))
        return out


def _present(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (int64) of a label array: bincount for small non-negative codes, else unique."""
    v = np.asarray(values)
    if len(v) == 0:
        return np.zeros(0, np.int64)
    if v.dtype.kind in "ub" or (v.dtype.kind == "i" and v.min() >= 0):
        hi = int(v.max())
        if hi < 1 << 20:
            return np.flatnonzero(np.bincount(v.astype(np.int64), minlength=hi + 1)).astype(np.int64)
    return np.unique(v.astype(np.int64))


def ramp(values: np.ndarray, vmin: float, vmax: float, name: str = "viridis") -> np.ndarray:
    """(N, 3) uint8 colours of ``values`` on a colour ramp from ``vmin`` to ``vmax``; NaN values grey."""
    stops = _RAMPS[name]
    v = np.asarray(values, dtype=np.float64)
    t = (v - vmin) / (vmax - vmin) if vmax > vmin else np.full(v.shape, 0.5)
    t = np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0) * (len(stops) - 1)
    i = np.minimum(t.astype(np.int64), len(stops) - 2)
    f = (t - i)[:, None]
    out = np.rint(stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)
    out[~np.isfinite(v)] = UNLABELLED
    return out


def is_code_field(name: str) -> bool:
    """ASPRS classification codes (LAS ``classification``, or a copy such as ``truth_classification``)."""
    return "classification" in name.lower()


def _is_class_field(name: str) -> bool:
    low = name.lower()
    return low == "class" or low.endswith("_class") or low.startswith("class_")


def _is_label_field(name: str, values: np.ndarray) -> bool:
    low = name.lower()
    if values.dtype.kind not in "iub":
        return False
    return (is_code_field(name) or _is_class_field(name) or "label" in low or low.endswith("_id")
            or low in ("instance", "id", "segment", "cluster"))


def implied_class_map(cloud: PointCloud) -> ClassMap | None:
    """The class map of a ``class`` field that the file itself implies, or None: ``pcseg segment`` writes
    ``height_above_ground`` only for models of the ``als`` class set (ground, vegetation, building, water,
    bridge, other), so a file holding it has ``als`` class ids in ``class`` / ``pred_class``."""
    if "height_above_ground" in cloud.fields or "pred_height_above_ground" in cloud.fields:
        from ..data.classmaps import builtin_class_map

        return builtin_class_map("als")
    return None


def default_prediction_field(cloud: PointCloud, truth: str | None = None) -> str | None:
    """The prediction field pcseg wrote: ``pred_class`` (when the input already had a ``class``), else
    ``class``, else ``classification`` (``--as-classification``); never ``truth`` itself. None if none."""
    for name in PREDICTION_FIELDS:
        if name in cloud.fields and name != truth:
            return name
    return None


def _field(cloud: PointCloud, name: str) -> str:
    """The field ``name`` of the cloud (``pred_<name>`` when only that exists), or a BadInputError."""
    if name in cloud.fields:
        return name
    if f"pred_{name}" in cloud.fields:
        return f"pred_{name}"
    raise BadInputError(f"no field {name!r} (fields: {', '.join(cloud.fields) or 'none'}; also z, rgb)",
                        cloud.meta.get("source"))


def _auto_by(cloud: PointCloud) -> str:
    for name in PREDICTION_FIELDS:
        if name in cloud.fields:
            return name
    if all(c in cloud.fields for c in ("red", "green", "blue")):
        return "rgb"
    return "z"


def _class_style(name: str, cmap: ClassMap | None, style: ClassStyle | None) -> ClassStyle:
    if is_code_field(name):
        return ClassStyle.asprs(name)
    if _is_class_field(name):
        if style is not None:
            return style
        if cmap is not None:
            return ClassStyle.from_class_map(cmap, f"{name} ({cmap.name})")
    return ClassStyle.generic(name)


@dataclass
class _Legend:
    title: str
    entries: list | None = None           # [(name, rgb)] for classes
    vmin: float | None = None             # colour ramp
    vmax: float | None = None
    ramp: str = "viridis"


class _Colouring:
    """The colouring ``by`` of a cloud: its legend is known before rasterising (class entries are counted on
    the whole cloud; a ramp's range comes from the points seen), colours are computed for the visible points."""

    def __init__(self, cloud: PointCloud, by: str, cmap: ClassMap | None, style: ClassStyle | None,
                 ramp_name: str = "viridis"):
        self.cloud, self.by, self.ramp_name = cloud, by, ramp_name
        self.style: ClassStyle | None = None
        self.legend: _Legend | None = None
        src = cloud.meta.get("source")
        if by == "rgb":
            missing = [c for c in ("red", "green", "blue") if c not in cloud.fields]
            if missing:
                raise BadInputError(f"colouring by rgb needs red, green and blue fields (missing: "
                                    f"{', '.join(missing)})", src)
            return
        if by == "z":
            self.name = "z"
        else:
            self.name = _field(cloud, by)
            values = np.asarray(cloud.fields[self.name])
            if _is_label_field(self.name, values):
                self.style = _class_style(self.name, cmap, style)
                self.legend = _Legend(self.style.title, self.style.entries(values))
                return
            if values.dtype.kind not in "iufb":
                raise BadInputError(f"field {self.name!r} is not numeric ({values.dtype})", src)
        low = self.name.lower()
        self.fixed = (0.0, 1.0) if (low.endswith("confidence") or low.startswith(("prob_", "pred_prob_"))) else None
        self.legend = _Legend(self.name, vmin=-8.888e8, vmax=-8.888e8, ramp=ramp_name)  # width placeholder

    def colors(self, visible: np.ndarray) -> np.ndarray:
        """(M, 3) uint8 colours of the points ``visible``; sets the ramp range of the legend."""
        cloud = self.cloud
        if self.by == "rgb":
            rgb = np.stack([cloud.fields[c][visible] for c in ("red", "green", "blue")], axis=1).astype(np.float64)
            if rgb.size and rgb.max() > 255:  # LAS stores 16-bit colour
                rgb = rgb / 257.0
            return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        if self.style is not None:
            return self.style.colorize(cloud.fields[self.name][visible])
        values = (cloud.xyz[visible, 2] if self.name == "z" else cloud.fields[self.name][visible]).astype(np.float64)
        if self.fixed is not None:
            vmin, vmax = self.fixed
        else:
            finite = values[np.isfinite(values)]
            vmin, vmax = (float(v) for v in np.percentile(finite, [1, 99])) if len(finite) else (0.0, 1.0)
        self.legend = _Legend(self.name, vmin=vmin, vmax=vmax, ramp=self.ramp_name)
        return ramp(values, vmin, vmax, self.ramp_name)


# ---------------------------------------------------------------------------------------------------------
# Composition


def _check_args(view: str, size) -> tuple[int, int]:
    if view not in VIEWS:
        raise UsageError(f"view must be one of {', '.join(VIEWS)}, not {view!r}")
    w, h = (int(v) for v in size)
    if w < 64 or h < 64 or w > 20000 or h > 20000:
        raise UsageError(f"picture size {w}x{h}: each side must be 64 to 20000 pixels")
    return w, h


def _resolve_style(class_map, class_names, class_colors) -> ClassStyle | None:
    if class_names is None and class_colors is None:
        return None
    if class_map is not None:
        raise ValueError("give class_map or class_names / class_colors, not both")
    return ClassStyle.from_lists(class_names, class_colors)


def _legend_width(legend: _Legend | None, extra: list | None, width: int) -> int:
    if legend is None and not extra:
        return 0
    font = _font(12)
    texts = [legend.title] if legend else []
    if legend is not None and legend.entries is not None:
        texts += [n for n, _ in legend.entries[:MAX_LEGEND_ENTRIES]]
    elif legend is not None:
        texts += [f"{legend.vmax:.4g}", f"{legend.vmin:.4g}"]
    texts += [n for n, _ in (extra or [])]
    need = max(_text_width(font, t) for t in texts) + 44
    return int(np.clip(need, 110, max(110, width // 3)))


def _draw_legend(draw, x0: int, y0: int, legend: _Legend | None, extra: list | None = None,
                 extra_title: str | None = None) -> None:
    font, bold = _font(12), _font(13)
    y = y0 + 6
    blocks = []
    if legend is not None:
        blocks.append((legend.title, legend))
    if extra:
        blocks.append((extra_title or "", _Legend(extra_title or "", entries=extra)))
    for title, lg in blocks:
        if title:
            draw.text((x0 + 8, y), title, fill=TEXT, font=bold)
            y += 20
        if lg.entries is not None:
            shown = lg.entries[:MAX_LEGEND_ENTRIES]
            for name, col in shown:
                draw.rectangle([x0 + 8, y + 1, x0 + 22, y + 13], fill=tuple(col), outline=(60, 60, 60))
                draw.text((x0 + 28, y), name, fill=TEXT, font=font)
                y += 18
            if len(lg.entries) > len(shown):
                draw.text((x0 + 8, y), f"... {len(lg.entries) - len(shown)} more", fill=TEXT, font=font)
                y += 18
        else:
            bar_h = 160
            colors = ramp(np.linspace(1.0, 0.0, bar_h), 0.0, 1.0, lg.ramp)
            for i, c in enumerate(colors):
                draw.line([x0 + 8, y + i, x0 + 22, y + i], fill=tuple(int(v) for v in c))
            draw.rectangle([x0 + 8, y, x0 + 22, y + bar_h - 1], outline=(60, 60, 60))
            draw.text((x0 + 28, y - 2), f"{lg.vmax:.4g}", fill=TEXT, font=font)
            draw.text((x0 + 28, y + bar_h - 14), f"{lg.vmin:.4g}", fill=TEXT, font=font)
            y += bar_h + 6
        y += 10


def _nice_length(max_units: float) -> float:
    """The largest 1, 2 or 5 x 10^k not above ``max_units``."""
    if max_units <= 0:
        return 0.0
    k = np.floor(np.log10(max_units))
    for m in (5, 2, 1):
        if m * 10**k <= max_units:
            return float(m * 10**k)
    return float(10 ** (k - 1) * 5)


def _draw_scale_bar(draw, frame: Frame, x0: int, y0: int) -> None:
    """A round length (1, 2 or 5 x 10^k units, at most a quarter of the map width) at the bottom left."""
    length = _nice_length(0.25 * frame.width / frame.scale) if frame.scale > 0 else 0.0
    px = int(round(length * frame.scale))
    if px < 4:
        return
    font = _font(12)
    label = f"{length:g} m"
    bx, by_ = x0 + 12, y0 + frame.height - 14
    draw.rectangle([bx - 4, by_ - 18, bx + max(px, _text_width(font, label)) + 4, by_ + 9], fill=(255, 255, 255))
    draw.rectangle([bx, by_, bx + px, by_ + 5], fill=TEXT)
    draw.rectangle([bx + px // 2, by_ + 1, bx + px - 1, by_ + 4], fill=(255, 255, 255))  # two-tone bar
    draw.text((bx, by_ - 16), label, fill=TEXT, font=font)


def _draw_north(draw, x0: int, y0: int, width: int, label: str) -> None:
    """An arrow pointing up (+y) in the top-right corner, labelled ``N`` (map coordinates) or ``+y``."""
    font = _font(12)
    cx, top = x0 + width - 22, y0 + 10
    draw.polygon([(cx, top), (cx - 7, top + 20), (cx, top + 15), (cx + 7, top + 20)], fill=TEXT)
    draw.text((cx - _text_width(font, label) / 2, top + 22), label, fill=TEXT, font=font)


def _north_label(cloud: PointCloud) -> str:
    return "N" if cloud.format in ("las", "laz") else "+y"


def _paint(index: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(H, W, 3) map: background where ``index`` is -1, ``colors[k]`` at the k-th filled pixel (row-major)."""
    img = np.empty(index.shape + (3,), dtype=np.uint8)
    img[:] = BACKGROUND
    img[index >= 0] = colors
    return img


def _visible(index: np.ndarray) -> np.ndarray:
    """The point seen at each filled pixel, row-major (a splatted point once per pixel it covers)."""
    return index[index >= 0]


def render_cloud(cloud: PointCloud, by: str = "auto", view: str = "top", *, class_map: ClassMap | None = None,
                 class_names: Sequence[str] | None = None, class_colors=None, size: tuple[int, int] = DEFAULT_SIZE,
                 point_size: int | None = None, annotate: bool = True, title: str | None = None) -> np.ndarray:
    """An (H, W, 3) uint8 picture of a cloud, ``size = (W, H)`` pixels.

    by: ``auto`` (the prediction pcseg wrote: ``pred_class``, ``class`` or ``classification``; else ``rgb``
        when the cloud has colours; else ``z``), ``rgb``, ``z`` or a field name (see the module docstring).
    view: ``top``, ``side`` or ``persp``.
    class_map / class_names + class_colors: names and colours of the class ids of ``class`` fields (e.g. a
        model's :class:`ClassMap`); default: the map the file implies (:func:`implied_class_map`), else generic.
    point_size: splat radius in pixels (0: one pixel per point; None: from the point density).
    annotate: legend panel on the right, title, scale bar (top and side views) and north arrow (top view);
        False gives the bare map over the whole picture (no Pillow needed).
    """
    w, h = _check_args(view, size)
    if annotate:
        require_pillow()
    style = _resolve_style(class_map, class_names, class_colors)
    cmap = class_map if class_map is not None else implied_class_map(cloud)
    colouring = _Colouring(cloud, _auto_by(cloud) if by == "auto" else by, cmap, style)
    map_w, map_h, top = w, h, 0
    if annotate:
        map_w = w - _legend_width(colouring.legend, None, w)
        top = HEADER if title else 0
        map_h = h - top
    index, frame, _, _ = rasterize(cloud.xyz, view, map_w, map_h, point_size, MARGIN)
    vis = _visible(index)
    colors = colouring.colors(vis)
    legend = colouring.legend
    canvas = np.empty((h, w, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    canvas[top:top + map_h, :map_w] = _paint(index, colors)
    if not annotate:
        return canvas
    Image, ImageDraw, _ = require_pillow()
    pic = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pic)
    if title:
        draw.text((MARGIN, 3), title, fill=TEXT, font=_font(13))
    if view in ("top", "side"):
        _draw_scale_bar(draw, frame, 0, top)
    if view == "top":
        _draw_north(draw, 0, top, map_w, _north_label(cloud))
    if legend is not None:
        draw.line([map_w, 0, map_w, h], fill=(200, 200, 200))
        _draw_legend(draw, map_w, 0, legend)
    return np.asarray(pic, dtype=np.uint8).copy()


def compare_labels(cloud: PointCloud, truth: str, pred: str | None = None, class_map: ClassMap | None = None
                   ) -> tuple[np.ndarray, np.ndarray, ClassStyle, str, str]:
    """(truth values, prediction values, style, truth field, prediction field) in one label space.

    Both ASPRS code fields, or both class-id fields: compared as they are. ASPRS codes against class ids (the
    file's ``classification`` against the ``class`` written by ``pcseg segment``): the codes are mapped to the
    class map's ids (``class_map``, else the one the file implies); codes the map ignores become -1 (not
    labelled). Raises UsageError when no class map can relate them.
    """
    tname = _field(cloud, truth)
    pname = pred if pred is not None else default_prediction_field(cloud, tname)
    if pname is None:
        raise BadInputError(f"no prediction field to compare with {tname!r} (looked for "
                            f"{', '.join(PREDICTION_FIELDS)}); name it with --pred", cloud.meta.get("source"))
    pname = _field(cloud, pname)
    if pname == tname:
        raise UsageError(f"truth and prediction are the same field {tname!r}")
    t, p = np.asarray(cloud.fields[tname]), np.asarray(cloud.fields[pname])
    for name, v in ((tname, t), (pname, p)):
        if v.dtype.kind not in "iub":
            raise BadInputError(f"field {name!r} holds {v.dtype} values, not class labels", cloud.meta.get("source"))
    cmap = class_map if class_map is not None else implied_class_map(cloud)
    t_codes, p_codes = is_code_field(tname), is_code_field(pname)
    if t_codes == p_codes:
        style = _class_style(tname if t_codes else pname, cmap, None)
        return t.astype(np.int64), p.astype(np.int64), style, tname, pname
    if cmap is None or "ASPRS" not in cmap.raw_kind:
        codes, ids = (tname, pname) if t_codes else (pname, tname)
        raise UsageError(f"{codes!r} holds ASPRS codes and {ids!r} class ids of a model: name the model "
                         "(--model) or its class map (--class-map) to compare them")
    style = ClassStyle.from_class_map(cmap, f"classes ({cmap.name})")

    def encode(codes: np.ndarray) -> np.ndarray:
        ids = cmap.encode(codes)
        return np.where(ids < 0, -1, ids)  # ignored codes and partial labels (< -1): not labelled here

    t = encode(t) if t_codes else t.astype(np.int64)
    p = encode(p) if p_codes else p.astype(np.int64)
    return t, p, style, tname, pname


def render_compare(cloud: PointCloud, truth: str, pred: str | None = None, view: str = "top", *,
                   class_map: ClassMap | None = None, size: tuple[int, int] = COMPARE_SIZE,
                   point_size: int | None = None, annotate: bool = True) -> np.ndarray:
    """Three panels side by side, same view and scale: truth | prediction | errors (:data:`CORRECT` where the
    prediction equals the truth, :data:`WRONG` where it differs, :data:`UNLABELLED` where the truth is not
    labelled). ``pred`` defaults to :func:`default_prediction_field`; labels are related as
    :func:`compare_labels` says. ``size`` is the whole picture (W, H); the legend panel is on the right."""
    w, h = _check_args(view, size)
    if annotate:
        require_pillow()
    t, p, style, tname, pname = compare_labels(cloud, truth, pred, class_map)
    wrong = (t >= 0) & (t != p)
    labelled = int(np.count_nonzero(t >= 0))
    entries = [e for e in style.entries(np.concatenate([_present(t), _present(p)])) if e[1] != UNLABELLED]
    err_entries = [("correct", CORRECT), ("wrong", WRONG), ("not labelled", UNLABELLED)]
    legend = _Legend(style.title, entries)
    legend_w = _legend_width(legend, err_entries, w) if annotate else 0
    top = HEADER if annotate else 0
    panel_w, map_h = (w - legend_w) // 3, h - top
    if panel_w < 32:
        raise UsageError(f"picture width {w} is too small for three panels")
    index, frame, _, _ = rasterize(cloud.xyz, view, panel_w, map_h, point_size, MARGIN)
    vis = _visible(index)
    err_col = np.where(wrong[vis, None], np.array(WRONG, np.uint8), np.array(CORRECT, np.uint8))
    err_col[t[vis] < 0] = UNLABELLED
    panels = [_paint(index, style.colorize(t[vis])), _paint(index, style.colorize(p[vis])),
              _paint(index, err_col.astype(np.uint8))]
    canvas = np.empty((h, w, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    for k, panel in enumerate(panels):
        canvas[top:, k * panel_w:(k + 1) * panel_w] = panel
    if not annotate:
        return canvas
    Image, ImageDraw, _ = require_pillow()
    pic = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pic)
    share = f"{100.0 * np.count_nonzero(wrong) / labelled:.1f}% of {labelled:,} labelled points wrong" if labelled \
        else "no labelled point"
    titles = [f"truth: {tname}", f"prediction: {pname}", f"errors: {share}"]
    for k, text in enumerate(titles):
        x0 = k * panel_w
        draw.text((x0 + MARGIN, 3), text, fill=TEXT, font=_font(13))
        if k:
            draw.line([x0, 0, x0, h], fill=(200, 200, 200))
        if view in ("top", "side"):
            _draw_scale_bar(draw, frame, x0, top)
        if view == "top":
            _draw_north(draw, x0, top, panel_w, _north_label(cloud))
    x_leg = 3 * panel_w
    draw.line([x_leg, 0, x_leg, h], fill=(200, 200, 200))
    _draw_legend(draw, x_leg, 0, legend, err_entries, "errors")
    return np.asarray(pic, dtype=np.uint8).copy()


BOX_COLORS = {"car": (230, 30, 30), "pedestrian": (230, 0, 230), "cyclist": (255, 140, 0),
              "van": (200, 60, 0), "truck": (150, 0, 0)}


def render_boxes_top(points, boxes, names: Sequence[str] | None = None, scores=None, *, by: str = "z",
                     size: tuple[int, int] = (900, 900), point_size: int | None = None,
                     class_colors: Mapping[str, tuple[int, int, int]] | None = None,
                     extent: Sequence[float] | None = None, annotate: bool = True,
                     title: str | None = None) -> np.ndarray:
    """A top view of a frame with oriented 3D boxes drawn as rectangles (a line from the centre to the front
    edge shows the heading).

    points: a PointCloud, or an (N, >=3) array (a 4th column is ``intensity``, as ``load_frame`` returns).
    boxes: (B, 7) ``[x, y, z, dx, dy, dz, yaw]`` in the points' frame (:mod:`pcseg.geometry.boxes`).
    names / scores: per box (legend: classes and counts; scores are printed beside each box).
    by: point colours (``z``, ``intensity`` or any field; grey ramp so that boxes stand out).
    class_colors: box colour per class name (default: red cars, magenta pedestrians, orange cyclists).
    extent: ``(xmin, ymin, xmax, ymax)`` of the area shown (e.g. a detector's ``point_range[0, 1, 3, 4]``);
        default: the points and the boxes. Needs Pillow (boxes are drawn with it).
    """
    w, h = _check_args("top", size)
    require_pillow()
    if isinstance(points, PointCloud):
        cloud = points
    else:
        arr = np.asarray(points)
        if arr.ndim != 2 or arr.shape[1] < 3:
            raise ValueError(f"points must have shape (N, >=3), got {arr.shape}")
        fields = {"intensity": arr[:, 3].astype(np.float32)} if arr.shape[1] >= 4 else {}
        cloud = PointCloud(arr[:, :3].astype(np.float64), fields)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    names = list(names) if names is not None else ["box"] * len(b)
    if len(names) != len(b):
        raise ValueError(f"{len(b)} boxes but {len(names)} names")
    # project() puts uv = 0 at the cloud's minimum corner: the boxes get the same origin
    origin = np.array([cloud.xyz[:, i].min() for i in range(3)]) if len(cloud) else np.zeros(3)
    corners = boxes_corners_bev(b) - origin[:2] if len(b) else np.zeros((0, 4, 2))
    uv, priority, uv_lo, uv_hi = project(cloud.xyz, "top")
    if extent is not None:
        ext = np.asarray(extent, dtype=np.float64).reshape(-1)
        if len(ext) != 4 or not np.all(ext[2:] > ext[:2]):
            raise UsageError(f"extent is xmin, ymin, xmax, ymax with max > min, got {list(ext)}")
        lo, hi = ext[:2] - origin[:2], ext[2:] - origin[:2]
    else:
        c2 = corners.reshape(-1, 2)
        lo = np.minimum(uv_lo, c2.min(axis=0)) if len(c2) else uv_lo
        hi = np.maximum(uv_hi, c2.max(axis=0)) if len(c2) else uv_hi
    colors_by_name = {k.lower(): v for k, v in {**BOX_COLORS, **(class_colors or {})}.items()}
    kinds = sorted(set(names))
    box_color = {n: colors_by_name.get(n.lower(), tuple(int(v) for v in _GENERIC[i % 20]))
                 for i, n in enumerate(kinds)}
    entries = [(f"{n} ({names.count(n)})", box_color[n]) for n in kinds]
    legend_w = _legend_width(_Legend("boxes", entries), None, w) if annotate else 0
    top = HEADER if (annotate and title) else 0
    map_w, map_h = w - legend_w, h - top
    frame = fit_frame(lo, hi, map_w, map_h, MARGIN)
    if point_size is None:
        if extent is None:
            n_seen, seen_lo, seen_hi = len(uv), uv_lo, uv_hi
        else:
            inside = ((uv[:, 0] >= lo[0]) & (uv[:, 0] <= hi[0]) & (uv[:, 1] >= lo[1]) & (uv[:, 1] <= hi[1]))
            n_seen = int(np.count_nonzero(inside))
            seen_lo, seen_hi = np.maximum(uv_lo, lo), np.minimum(uv_hi, hi)
        point_size = auto_point_size(n_seen, frame, seen_lo, seen_hi)
    cols, rows = frame.pixels(uv)
    index = zbuffer(cols, rows, priority, map_w, map_h, point_size)
    vis = _visible(index)
    colors = _Colouring(cloud, by, None, None, ramp_name="greys").colors(vis)
    canvas = np.empty((h, w, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    canvas[top:, :map_w] = _paint(index, colors)
    Image, ImageDraw, _ = require_pillow()
    pic = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pic)
    font = _font(11)
    for k in range(len(b)):
        xy = frame.points(corners[k]) + [0, top]
        ring = [tuple(v) for v in xy] + [tuple(xy[0])]
        col = box_color[names[k]]
        draw.line(ring, fill=col, width=2)
        centre = xy.mean(axis=0)
        front = 0.5 * (xy[0] + xy[3])  # front-left and front-right corners (boxes_corners_bev order)
        draw.line([tuple(centre), tuple(front)], fill=col, width=2)
        if annotate and scores is not None:
            draw.text((float(xy[:, 0].max()) + 2, float(xy[:, 1].min())), f"{float(scores[k]):.2f}", fill=col,
                      font=font)
    if annotate:
        if title:
            draw.text((MARGIN, 3), title, fill=TEXT, font=_font(13))
        _draw_scale_bar(draw, frame, 0, top)
        _draw_north(draw, 0, top, map_w, _north_label(cloud))
        draw.line([map_w, 0, map_w, h], fill=(200, 200, 200))
        _draw_legend(draw, map_w, 0, _Legend("boxes", entries) if entries else None)
    return np.asarray(pic, dtype=np.uint8).copy()
