"""Class maps: raw label values of a dataset <-> the contiguous training ids a network predicts.

A :class:`ClassMap` names the ``C`` training classes (training id = position ``0..C-1``), gives each a
display colour, and says how the raw label values stored in files (S3DIS ids, ScanNet-20 ids, SemanticKITTI
raw ids, ASPRS classification codes, ...) become training ids:

* :meth:`ClassMap.encode` maps raw values to training ids; raw values listed as ignored, and raw values the
  map does not know, become :data:`IGNORE` (-1), which losses and metrics skip.
* Partial labels: a raw value may stand for a *set* of classes (a file labelled ground / not ground only
  says "not ground", i.e. any class but ground). :meth:`ClassMap.encode` writes such a value as
  :func:`partial_label` of the set, a negative id below :data:`IGNORE` that carries the set as a bit mask;
  the loss marginalises over the set (:func:`pcseg.nn.losses.partial_cross_entropy`), metrics skip it.
* :meth:`ClassMap.decode` maps training ids back to one raw code per class (``raw_codes``), e.g. to write
  predictions back into a LAS ``classification``. Classes without a raw counterpart, and :data:`IGNORE`, are
  written as ``unlabelled_raw``.
* :meth:`ClassMap.to_dict` / :meth:`ClassMap.from_dict` round-trip through JSON, so a checkpoint carries its
  map and predictions can be decoded without the training data.

Built-in maps (:func:`builtin_class_map`, names in :data:`BUILTIN_CLASS_MAPS`):

``s3dis``
    The 13 S3DIS classes in the usual order (ceiling 0 ... clutter 12); raw = training id.
``scannet20``
    The ScanNet-20 benchmark classes; raw ids 1..20 -> training ids 0..19, raw 0 (unlabelled / not one of
    the 20) is ignored.
``semantickitti``
    SemanticKITTI's standard ``learning_map`` (semantic-kitti.yaml): raw ids (``label & 0xFFFF``) -> 19
    classes (car ... traffic-sign = training ids 0..18; the "+1" unlabelled class 0 of the 19+1 convention
    is :data:`IGNORE` here). Moving classes fold into their static class; unlabelled (0), outlier (1),
    other-structure (52) and other-object (99) are ignored. ``decode`` writes the ``learning_map_inv`` codes.
``semantickitti-train``
    For data already in the 19+1 training ids (0 unlabelled, 1 car ... 19 traffic-sign): k -> k-1, 0 ignored.
``asprs``
    Airborne lidar, ASPRS LAS 1.4 classification codes -> ground, low / medium / high vegetation, building,
    water, bridge, other. Choices (see :data:`ASPRS_DEFAULT_CODES`): 2 ground, 10 rail and 11 road surface
    are ground (ground-level surfaces); 13-16 (wires, towers, insulators) and IGN's 64 (permanent
    above-ground structures) and 67 (miscellaneous built structures) are ``other``; ignored are 0 (never
    classified), 1 (unclassified: AHN3 leaves vegetation there, so it is not a class), 7 and 18 (noise),
    8 (model key-point / reserved), 12 (overlap: a flag, not a class), IGN's 65 (artefacts) and 66 (virtual
    points), and every other code (reserved or user-defined without a known meaning). ``decode`` writes each
    class's standard code, and ``other`` as 1 (unclassified: the network says "none of the named classes").
    Pass a JSON class map (``--class-map map.json``) for another class set.
``als``
    Airborne lidar, the classes a network can tell apart from geometry the way surveys define them: ground,
    vegetation, building, water, bridge, other (ASPRS 3/4/5 all read as vegetation; the low / medium / high
    split is a height rule applied after prediction, see :mod:`pcseg.geometry.ground`). Codes as ``asprs``
    otherwise. ``decode`` writes vegetation as 5 (high vegetation) when no height split is applied.
``als-ground``
    The ``als`` classes for files labelled ground / not ground only (2 ground, 1 everything else, as lidR and
    lasR examples and PDAL tests store them): code 1 becomes the partial label "any class but ground".
``als-ahn3``
    The ``als`` classes for AHN3 tiles, whose code 1 holds vegetation and unclassified objects together: code
    1 becomes the partial label "vegetation or other"; 26 (AHN3's civil structures: bridges, viaducts) is
    bridge.
``scannet20-to-s3dis``
    ScanNet-20 raw ids -> the 13 S3DIS classes, to train an S3DIS-class model on ScanNet rescans (see
    :data:`SCANNET20_TO_S3DIS`). ScanNet-20 has no ceiling, beam, column or board: those S3DIS classes get no
    ScanNet point. Ambiguous classes are ignored rather than guessed.
``nyu40-to-s3dis``
    The same for ScanNet's ``nyu40`` field, which also knows ceiling (22) and whiteboard (30 -> board).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInputError, UsageError

IGNORE = -1
"""Training id of ignored / unknown points (losses use ``ignore_index=-1``)."""

MAX_PARTIAL_CLASSES = 60
"""Partial labels carry their class set as a bit mask in an int64: at most this many classes."""


def partial_label(class_ids) -> int:
    """The training id of "one of ``class_ids``": ``-2 - mask`` with bit ``c`` of ``mask`` set for each class."""
    mask = 0
    for c in class_ids:
        if not 0 <= int(c) < MAX_PARTIAL_CLASSES:
            raise ValueError(f"partial labels cover class ids 0..{MAX_PARTIAL_CLASSES - 1}, not {c}")
        mask |= 1 << int(c)
    if mask == 0:
        raise ValueError("a partial label needs at least one class")
    return -2 - mask


def partial_masks(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, C) bool: the classes each label allows. Full labels allow their class, partial labels their set,
    :data:`IGNORE` allows nothing."""
    labels = np.asarray(labels, dtype=np.int64)
    bits = np.where(labels <= -2, -2 - labels, np.where(labels >= 0, np.left_shift(1, np.maximum(labels, 0)), 0))
    return (np.right_shift(bits[:, None], np.arange(num_classes)) & 1).astype(bool)


@dataclass(frozen=True)
class ClassMap:
    """Training classes and how raw label values map to them (see the module docstring).

    name: short identifier (a built-in name or the user's).
    names: training class names; training id = position.
    colors: one RGB uint8 triple per class (display only).
    raw_to_train: raw label value -> training id, or :data:`IGNORE` for raw values ignored on purpose.
        Raw values missing from this dict are unknown and also encode to :data:`IGNORE`.
    raw_codes: for each class the raw code ``decode`` writes, or None when the class has no raw counterpart.
    unlabelled_raw: raw code written for :data:`IGNORE` and for classes without a raw code.
    raw_kind: what the raw values are ("ASPRS classification", "S3DIS id", ...), for messages and docs.
    raw_to_set: raw label value -> several training ids: a partial label (:func:`partial_label`).
    """

    name: str
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    raw_to_train: dict[int, int]
    raw_codes: tuple[int | None, ...]
    unlabelled_raw: int = 0
    raw_kind: str = "raw label"
    raw_to_set: dict[int, tuple[int, ...]] = field(default_factory=dict)
    _lut: tuple = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        c = len(self.names)
        if c == 0:
            raise ValueError("a class map needs at least one class")
        if len(set(self.names)) != c:
            raise ValueError(f"class map {self.name!r}: duplicate class names")
        if len(self.colors) != c or len(self.raw_codes) != c:
            raise ValueError(f"class map {self.name!r}: {c} names but {len(self.colors)} colours "
                             f"and {len(self.raw_codes)} raw codes")
        bad = {k: v for k, v in self.raw_to_train.items() if not IGNORE <= v < c}
        if bad:
            raise ValueError(f"class map {self.name!r}: training ids out of range: {bad}")
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "colors", tuple(tuple(int(v) for v in col) for col in self.colors))
        object.__setattr__(self, "raw_codes", tuple(None if r is None else int(r) for r in self.raw_codes))
        object.__setattr__(self, "raw_to_train", {int(k): int(v) for k, v in self.raw_to_train.items()})
        sets = {int(k): tuple(sorted({int(c) for c in v})) for k, v in self.raw_to_set.items()}
        c_max = len(self.names)
        bad = {k: v for k, v in sets.items() if not v or any(not 0 <= c < c_max for c in v)}
        if bad or (sets and c_max > MAX_PARTIAL_CLASSES):
            raise ValueError(f"class map {self.name!r}: invalid partial label sets {bad}")
        both = sorted(set(sets) & set(self.raw_to_train))
        if both:
            raise ValueError(f"class map {self.name!r}: raw values {both} are both full and partial labels")
        object.__setattr__(self, "raw_to_set", sets)
        table = {**self.raw_to_train, **{k: partial_label(v) for k, v in sets.items()}}
        keys = np.array(sorted(table), dtype=np.int64)
        values = np.array([table[int(k)] for k in keys], dtype=np.int64)
        object.__setattr__(self, "_lut", (keys, values))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def ignored_raw(self) -> tuple[int, ...]:
        """Raw values ignored on purpose (unknown raw values are ignored too)."""
        return tuple(sorted(k for k, v in self.raw_to_train.items() if v == IGNORE))

    @property
    def color_array(self) -> np.ndarray:
        """(C, 3) uint8 class colours."""
        return np.array(self.colors, dtype=np.uint8)

    def index(self, name: str) -> int:
        """Training id of the class called ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise UsageError(f"class map {self.name!r} has no class {name!r} (it has {', '.join(self.names)})")

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """Training ids (int64, :data:`IGNORE` for ignored or unknown values) of raw label values."""
        raw = np.asarray(raw)
        if raw.dtype.kind == "f":
            if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
                raise ValueError("label values must be integers")
        raw = raw.astype(np.int64)
        keys, values = self._lut
        pos = np.clip(np.searchsorted(keys, raw), 0, max(len(keys) - 1, 0))
        found = keys[pos] == raw if len(keys) else np.zeros(raw.shape, dtype=bool)
        return np.where(found, values[pos] if len(keys) else IGNORE, IGNORE).astype(np.int64)

    def decode(self, train_ids: np.ndarray) -> np.ndarray:
        """Raw codes (int64) for training ids; :data:`IGNORE` and classes without a code give ``unlabelled_raw``."""
        ids = np.asarray(train_ids).astype(np.int64)
        if np.any((ids < IGNORE) | (ids >= self.num_classes)):
            raise ValueError(f"training ids must lie in [-1, {self.num_classes - 1}]")
        table = np.array([self.unlabelled_raw if r is None else r for r in self.raw_codes] + [self.unlabelled_raw],
                         dtype=np.int64)
        return table[np.where(ids == IGNORE, self.num_classes, ids)]

    def to_dict(self) -> dict:
        """JSON-serialisable form (raw keys become strings in JSON; :meth:`from_dict` converts them back)."""
        return {
            "name": self.name,
            "names": list(self.names),
            "colors": [list(c) for c in self.colors],
            "raw_to_train": {str(k): v for k, v in sorted(self.raw_to_train.items())},
            "raw_codes": list(self.raw_codes),
            "unlabelled_raw": self.unlabelled_raw,
            "raw_kind": self.raw_kind,
            **({"raw_to_set": {str(k): list(v) for k, v in sorted(self.raw_to_set.items())}}
               if self.raw_to_set else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ClassMap":
        """Inverse of :meth:`to_dict`. ``colors`` and ``raw_codes`` may be omitted (grey / no raw code), and
        ``raw_to_train`` may be omitted when raw values are the training ids."""
        names = list(d["names"])
        n = len(names)
        raw_to_train = d.get("raw_to_train")
        raw_to_train = {i: i for i in range(n)} if raw_to_train is None else \
            {int(k): int(v) for k, v in raw_to_train.items()}
        if "raw_codes" in d:
            raw_codes = d["raw_codes"]
        else:  # the smallest raw value of each class
            inv: dict[int, int] = {}
            for raw, t in sorted(raw_to_train.items()):
                if t != IGNORE:
                    inv.setdefault(t, raw)
            raw_codes = [inv.get(i) for i in range(n)]
        return cls(
            name=str(d.get("name", "custom")),
            names=tuple(names),
            colors=tuple(tuple(c) for c in d.get("colors", [[128, 128, 128]] * n)),
            raw_to_train=raw_to_train,
            raw_codes=tuple(raw_codes),
            unlabelled_raw=int(d.get("unlabelled_raw", 0)),
            raw_kind=str(d.get("raw_kind", "raw label")),
            raw_to_set={int(k): tuple(int(c) for c in v) for k, v in d.get("raw_to_set", {}).items()},
        )


# ---------------------------------------------------------------------------------------------------------
# S3DIS (13 classes, the order of the official class list used by KPConv and SALA)
S3DIS_NAMES = ("ceiling", "floor", "wall", "beam", "column", "window", "door",
               "table", "chair", "sofa", "bookcase", "board", "clutter")
S3DIS_COLORS = ((0, 255, 0), (0, 0, 255), (0, 255, 255), (255, 255, 0), (255, 0, 255), (100, 100, 255),
                (200, 200, 100), (170, 120, 200), (255, 0, 0), (200, 100, 100), (10, 200, 100),
                (200, 200, 200), (50, 50, 50))

# ScanNet-20 benchmark classes, raw ids 1..20 (their NYU40 ids in the comment of each line)
SCANNET20_NAMES = ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
                   "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
                   "bathtub", "otherfurniture")
SCANNET20_NYU40 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
SCANNET20_COLORS = ((174, 199, 232), (152, 223, 138), (31, 119, 180), (255, 187, 120), (188, 189, 34),
                    (140, 86, 75), (255, 152, 150), (214, 39, 40), (197, 176, 213), (148, 103, 189),
                    (196, 156, 148), (23, 190, 207), (247, 182, 210), (219, 219, 141), (255, 127, 14),
                    (158, 218, 229), (44, 160, 44), (112, 128, 144), (227, 119, 194), (82, 84, 163))

# SemanticKITTI: the 19 evaluated classes, their learning_map_inv raw code and colour
SEMANTICKITTI_CLASSES = (
    ("car", 10, (100, 150, 245)), ("bicycle", 11, (100, 230, 245)), ("motorcycle", 15, (30, 60, 150)),
    ("truck", 18, (80, 30, 180)), ("other-vehicle", 20, (100, 80, 250)), ("person", 30, (255, 30, 30)),
    ("bicyclist", 31, (255, 40, 200)), ("motorcyclist", 32, (150, 30, 90)), ("road", 40, (255, 0, 255)),
    ("parking", 44, (255, 150, 255)), ("sidewalk", 48, (75, 0, 75)), ("other-ground", 49, (175, 0, 75)),
    ("building", 50, (255, 200, 0)), ("fence", 51, (255, 120, 50)), ("vegetation", 70, (0, 175, 0)),
    ("trunk", 71, (135, 60, 0)), ("terrain", 72, (150, 240, 80)), ("pole", 80, (255, 240, 150)),
    ("traffic-sign", 81, (255, 0, 0)),
)
# learning_map of semantic-kitti.yaml, written as raw id -> class name (None = ignored)
SEMANTICKITTI_LEARNING_MAP = {
    0: None, 1: None, 10: "car", 11: "bicycle", 13: "other-vehicle", 15: "motorcycle", 16: "other-vehicle",
    18: "truck", 20: "other-vehicle", 30: "person", 31: "bicyclist", 32: "motorcyclist", 40: "road",
    44: "parking", 48: "sidewalk", 49: "other-ground", 50: "building", 51: "fence", 52: None, 60: "road",
    70: "vegetation", 71: "trunk", 72: "terrain", 80: "pole", 81: "traffic-sign", 99: None,
    252: "car", 253: "bicyclist", 254: "person", 255: "motorcyclist", 256: "other-vehicle",
    257: "other-vehicle", 258: "truck", 259: "other-vehicle",
}

# ASPRS default class set: class name, code written back, colour
ASPRS_CLASSES = (
    ("ground", 2, (165, 124, 82)), ("low vegetation", 3, (170, 220, 120)), ("medium vegetation", 4, (80, 180, 60)),
    ("high vegetation", 5, (20, 110, 30)), ("building", 6, (220, 60, 50)), ("water", 9, (60, 120, 220)),
    ("bridge", 17, (240, 200, 60)), ("other", 1, (150, 150, 150)),
)
ASPRS_DEFAULT_CODES = {
    0: None, 1: None, 2: "ground", 3: "low vegetation", 4: "medium vegetation", 5: "high vegetation",
    6: "building", 7: None, 8: None, 9: "water", 10: "ground", 11: "ground", 12: None, 13: "other",
    14: "other", 15: "other", 16: "other", 17: "bridge", 18: None,
    64: "other", 65: None, 66: None, 67: "other",   # IGN LiDAR HD's own codes
}

# The airborne classes a network can tell apart (issue: surveys derive low / medium / high vegetation from
# height above ground, so the network learns one vegetation class): name, code written back, colour.
ALS_CLASSES = (
    ("ground", 2, (165, 124, 82)), ("vegetation", 5, (40, 150, 50)), ("building", 6, (220, 60, 50)),
    ("water", 9, (60, 120, 220)), ("bridge", 17, (240, 200, 60)), ("other", 1, (150, 150, 150)),
)
ALS_CODES = {**{k: v for k, v in ASPRS_DEFAULT_CODES.items()},
             3: "vegetation", 4: "vegetation", 5: "vegetation"}

# ScanNet-20 -> S3DIS-13. None = ignored: no S3DIS counterpart that is not a guess (a cabinet is a bookcase
# in some S3DIS rooms and clutter in others; a counter is a table or clutter; a curtain hangs over a window).
SCANNET20_TO_S3DIS = {
    "wall": "wall", "floor": "floor", "cabinet": None, "bed": "clutter", "chair": "chair", "sofa": "sofa",
    "table": "table", "door": "door", "window": "window", "bookshelf": "bookcase", "picture": "clutter",
    "counter": None, "desk": "table", "curtain": None, "refrigerator": "clutter", "shower curtain": "clutter",
    "toilet": "clutter", "sink": "clutter", "bathtub": "clutter", "otherfurniture": "clutter",
}
# Extra NYU40 classes beyond the ScanNet-20 ones (NYU40 id -> S3DIS class, None = ignored)
NYU40_EXTRA_TO_S3DIS = {
    13: None,  # blinds (window or clutter)
    15: "bookcase",  # shelves
    17: "clutter", 18: "clutter", 19: "clutter", 20: None,  # dresser, pillow, mirror; floor mat (floor?)
    21: "clutter", 22: "ceiling", 23: "clutter", 25: "clutter", 26: "clutter", 27: "clutter", 29: "clutter",
    30: "board",  # whiteboard
    31: None,  # person: not a room object
    32: "clutter", 35: "clutter", 37: "clutter", 38: None, 40: "clutter",  # 38 otherstructure: ambiguous
}


def _from_names(name, names, colors, raw_to_name, raw_codes, unlabelled_raw, raw_kind) -> ClassMap:
    idx = {n: i for i, n in enumerate(names)}
    return ClassMap(name=name, names=tuple(names), colors=tuple(colors),
                    raw_to_train={raw: (IGNORE if n is None else idx[n]) for raw, n in raw_to_name.items()},
                    raw_codes=tuple(raw_codes), unlabelled_raw=unlabelled_raw, raw_kind=raw_kind)


def _s3dis() -> ClassMap:
    return ClassMap("s3dis", S3DIS_NAMES, S3DIS_COLORS, {i: i for i in range(13)}, tuple(range(13)),
                    unlabelled_raw=-1, raw_kind="S3DIS id")  # S3DIS has no "unlabelled" code


def _scannet20() -> ClassMap:
    r2t = {0: IGNORE, **{i + 1: i for i in range(20)}}
    return ClassMap("scannet20", SCANNET20_NAMES, SCANNET20_COLORS, r2t, tuple(range(1, 21)),
                    unlabelled_raw=0, raw_kind="ScanNet-20 id")


def _semantickitti() -> ClassMap:
    names = [c[0] for c in SEMANTICKITTI_CLASSES]
    return _from_names("semantickitti", names, [c[2] for c in SEMANTICKITTI_CLASSES], SEMANTICKITTI_LEARNING_MAP,
                       [c[1] for c in SEMANTICKITTI_CLASSES], 0, "SemanticKITTI raw id")


def _semantickitti_train() -> ClassMap:
    names = [c[0] for c in SEMANTICKITTI_CLASSES]
    return ClassMap("semantickitti-train", tuple(names), tuple(c[2] for c in SEMANTICKITTI_CLASSES),
                    {0: IGNORE, **{i + 1: i for i in range(19)}}, tuple(range(1, 20)), unlabelled_raw=0,
                    raw_kind="SemanticKITTI 19+1 training id")


def _asprs() -> ClassMap:
    return _from_names("asprs", [c[0] for c in ASPRS_CLASSES], [c[2] for c in ASPRS_CLASSES], ASPRS_DEFAULT_CODES,
                       [c[1] for c in ASPRS_CLASSES], 1, "ASPRS classification")


def _als(name: str = "als", codes: dict | None = None, sets: dict | None = None) -> ClassMap:
    names = [c[0] for c in ALS_CLASSES]
    base = _from_names(name, names, [c[2] for c in ALS_CLASSES], ALS_CODES if codes is None else codes,
                       [c[1] for c in ALS_CLASSES], 1, "ASPRS classification")
    sets = {raw: tuple(names.index(n) for n in members) for raw, members in (sets or {}).items()}
    raw_to_train = {k: v for k, v in base.raw_to_train.items() if k not in sets}
    return ClassMap(base.name, base.names, base.colors, raw_to_train, base.raw_codes, base.unlabelled_raw,
                    base.raw_kind, sets)


def _als_ground() -> ClassMap:
    names = [c[0] for c in ALS_CLASSES]
    return _als("als-ground", {2: "ground"}, {1: [n for n in names if n != "ground"]})


def _als_ahn3() -> ClassMap:
    codes = {0: None, 2: "ground", 6: "building", 9: "water", 26: "bridge"}
    return _als("als-ahn3", codes, {1: ["vegetation", "other"]})


def _scannet20_to_s3dis() -> ClassMap:
    raw = {0: None, **{i + 1: SCANNET20_TO_S3DIS[n] for i, n in enumerate(SCANNET20_NAMES)}}
    # decode: the ScanNet-20 id of the class's first source (clutter -> otherfurniture 20); none for the rest
    codes = []
    for s in S3DIS_NAMES:
        src = [i + 1 for i, n in enumerate(SCANNET20_NAMES) if SCANNET20_TO_S3DIS[n] == s]
        codes.append(20 if s == "clutter" else (src[0] if src else None))
    return _from_names("scannet20-to-s3dis", S3DIS_NAMES, S3DIS_COLORS, raw, codes, 0, "ScanNet-20 id")


def _nyu40_to_s3dis() -> ClassMap:
    raw: dict[int, str | None] = {0: None}
    for n, nyu in zip(SCANNET20_NAMES, SCANNET20_NYU40):
        raw[nyu] = SCANNET20_TO_S3DIS[n]
    raw.update(NYU40_EXTRA_TO_S3DIS)
    codes = []
    for s in S3DIS_NAMES:
        src = sorted(k for k, v in raw.items() if v == s)
        codes.append(40 if s == "clutter" else (src[0] if src else None))  # clutter -> otherprop
    return _from_names("nyu40-to-s3dis", S3DIS_NAMES, S3DIS_COLORS, raw, codes, 0, "NYU40 id")


BUILTIN_CLASS_MAPS = {
    "s3dis": _s3dis, "scannet20": _scannet20, "semantickitti": _semantickitti,
    "semantickitti-train": _semantickitti_train, "asprs": _asprs,
    "als": _als, "als-ground": _als_ground, "als-ahn3": _als_ahn3,
    "scannet20-to-s3dis": _scannet20_to_s3dis, "nyu40-to-s3dis": _nyu40_to_s3dis,
}


def builtin_class_map(name: str) -> ClassMap:
    """A built-in class map by name (see the module docstring)."""
    try:
        return BUILTIN_CLASS_MAPS[name]()
    except KeyError:
        raise UsageError(f"unknown class map {name!r} (built-in: {', '.join(BUILTIN_CLASS_MAPS)}; "
                         "or give a .json file)") from None


def load_class_map(spec: str | Path) -> ClassMap:
    """A built-in name, or a JSON file in the :meth:`ClassMap.to_dict` format (``raw_to_train`` etc. optional)."""
    spec = str(spec)
    if spec in BUILTIN_CLASS_MAPS:
        return builtin_class_map(spec)
    path = Path(spec)
    if not path.suffix.lower() == ".json":
        return builtin_class_map(spec)
    try:
        return ClassMap.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise BadInputError("class map file not found", spec) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadInputError(f"not a valid class map ({type(e).__name__}: {e})", spec) from None
