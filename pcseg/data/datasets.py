"""Labelled training data: ``--data`` / ``--val`` strings -> clouds with training labels and input features.

:func:`resolve_data` turns the strings into :class:`CloudSource` records (what to read and how: nothing is
read yet, so a cached preprocessing can skip the read); :meth:`CloudSource.load` reads one into a
:class:`LabelledCloud`. Every source of one call shares one :class:`~pcseg.data.classmaps.ClassMap`.

Accepted strings (each kind has a default label field and class map; ``label_field=`` and ``class_map=``
override them):

===========================  ======================================================  =============  ==============
string                       what it gives                                          label field    class map
===========================  ======================================================  =============  ==============
``synthetic:rooms[:N]``      N procedural rooms (default 8 for training, 4 for      S3DIS ids      ``s3dis``
                             validation, with disjoint seeds; never real scores)
``synthetic:bank-rooms``     N rooms furnished with real scanned objects (the       S3DIS ids      ``s3dis``
``[:N][@ROOT]``              object bank of ROOT/indoor, default
                             ``$PCSEG_SHARED_DATA`` or ``../shared/data``, without
                             its validation files: :mod:`pcseg.data.object_bank`)
``synthetic:varied-rooms``   N bank rooms with drawn variants: no beams, a sloped   S3DIS ids      ``s3dis``
``[:N][@ROOT]``              ceiling, a partial-scan crop (as bank-rooms; see
                             :mod:`pcseg.data.synthetic_rooms`)
``synthetic:cad-rooms``      N varied rooms furnished from the object bank and      S3DIS ids      ``s3dis``
``[:N][@ROOT]``              the free CAD objects of ROOT/cad, virtually scanned
                             (chairs, doors, windows...: :mod:`pcseg.data.cad_bank`)
S3DIS root (has ``Area_N``)  training: every area but the held-out one (Area 5 by   ``class``      ``s3dis``
                             default); validation: the held-out area only
``.../Area_N`` or a room     every room of the area / that room (``Annotations/``)  ``class``      ``s3dis``
SemanticKITTI ``sequences``  training: 00-07, 09, 10; validation: 08                ``semantic``   ``semantickitti``
``.../sequences/NN``, .bin   every scan of the sequence / that scan (with           ``semantic``   ``semantickitti``
                             ``../../labels/NNNNNN.label``)
``*.las`` / ``*.laz``        airborne lidar, ASPRS codes                            classification ``asprs``
ScanNet ``*.ply``            a PLY with ``class`` and ``nyu40`` properties, or      ``class``      ``scannet20``
                             named ``sceneNNNN_NN``
any other cloud file         ``.ply``, ``.pcd``, ``.txt``, ``.npy`` ...              ``class`` /    required
                                                                                    ``label``
a folder                     every cloud file in it (not recursive)
a glob (``*``, ``?``, ``[``)   every match
``MAP:...``                  any of the above read with the built-in class map MAP  (as above)     MAP
                             (same class names as the run's): e.g.
                             ``als-ground:forest/*.laz`` for files labelled ground /
                             not ground only (partial labels)
===========================  ======================================================  =============  ==============

With the ``nyu40-to-s3dis`` class map, ScanNet files default to their ``nyu40`` field. Labels the class map
does not know, or ignores, become -1 (:data:`~pcseg.data.classmaps.IGNORE`). Mixing inputs whose default
class maps differ needs an explicit ``class_map``; each source is then read with a map of the same classes
that knows its label codes (S3DIS rooms with ``s3dis`` in a ``scannet20-to-s3dis`` run; ScanNet files with
``scannet20-to-s3dis`` in an ``s3dis`` run), and a map of classes that cannot be read from the data
(``asprs`` for ScanNet files) is a :class:`UsageError`. Every
:attr:`CloudSource.class_map` therefore has the same class names. Features: see :mod:`pcseg.data.features`.
"""
from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInputError, UsageError
from .classmaps import BUILTIN_CLASS_MAPS, ClassMap, builtin_class_map, load_class_map
from .features import make_features, parse_channels

SYNTHETIC_PREFIX = "synthetic:rooms"
BANK_ROOMS_PREFIX = "synthetic:bank-rooms"
VARIED_ROOMS_PREFIX = "synthetic:varied-rooms"  # bank rooms with variants (their own sources: varied-rooms#seed)
CAD_ROOMS_PREFIX = "synthetic:cad-rooms"  # varied rooms, real-scan bank + CAD bank (sources: cad-rooms#seed)
SYNTHETIC_TRAIN_ROOMS, SYNTHETIC_VAL_ROOMS = 8, 4
SYNTHETIC_VAL_SEED0 = 1_000_000  # validation rooms use seeds far from the training ones
S3DIS_VAL_AREA = 5  # KPConv §4.2 and SALA §4.1: Area 5 is the test area
SEMANTICKITTI_TRAIN = ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10")
SEMANTICKITTI_VAL = ("08",)
CLOUD_EXTENSIONS = (".las", ".laz", ".ply", ".pcd", ".bin", ".npy", ".txt", ".xyz", ".csv", ".pts")

DEFAULT_CLASS_MAPS = {"s3dis": "s3dis", "synthetic": "s3dis", "scannet": "scannet20",
                      "semantickitti": "semantickitti", "als": "asprs", "generic": None}
# the raw label spaces each kind of data stores (ClassMap.raw_kind of the maps that can read it)
RAW_KINDS = {"s3dis": ("S3DIS id",), "synthetic": ("S3DIS id",), "scannet": ("ScanNet-20 id", "NYU40 id"),
             "semantickitti": ("SemanticKITTI raw id",),
             "als": ("ASPRS classification",)}
ALL_RAW_KINDS = {k for kinds in RAW_KINDS.values() for k in kinds}
_COLUMN_FORMATS = (".txt", ".xyz", ".csv", ".pts", ".npy")
_SCANNET_NAME = re.compile(r"scene\d{4}_\d{2}")


@dataclass
class LabelledCloud:
    """One labelled cloud, ready for preprocessing.

    xyz: (N, 3) float64 coordinates in the source frame; labels: (N,) int64 training ids (-1 ignored);
    features: (N, F) float32 input channels ``channels``; source: the file, folder or ``synthetic:rooms#seed``.
    """

    xyz: np.ndarray
    labels: np.ndarray
    features: np.ndarray
    source: str
    class_map: ClassMap
    channels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.xyz)


@dataclass
class CloudSource:
    """What to read for one cloud and how (see the module docstring); :meth:`load` reads it.

    kind: ``s3dis``, ``scannet``, ``semantickitti``, ``als``, ``generic`` or ``synthetic``.
    path: the file or room folder (``synthetic:rooms#<seed>`` for a generated room).
    files: every file the cloud is read from (their sizes and times are the cache fingerprint).
    """

    kind: str
    path: str
    label_field: str
    class_map: ClassMap
    channels: tuple[str, ...]
    files: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)

    def fingerprint(self) -> list:
        """Changes whenever the data this source reads changes (file sizes and modification times)."""
        if self.kind == "synthetic":
            from .synthetic_rooms import GENERATOR_VERSION

            if "bank" in self.options:  # the rooms change when a bank file does
                from .object_bank import bank_fingerprint

                return [["synthetic", GENERATOR_VERSION, self.options], bank_fingerprint(self.options["bank"])]
            return [["synthetic", GENERATOR_VERSION, self.options]]
        from .cache import file_fingerprint

        try:
            return file_fingerprint(self.files)
        except OSError as e:
            raise BadInputError(f"cannot read: {e.strerror}", e.filename or self.path) from None

    def identity(self) -> dict:
        """What this source *is* (independent of file times): used to name cache entries."""
        return {"kind": self.kind, "path": os.path.abspath(self.path) if self.kind != "synthetic" else self.path,
                "label_field": self.label_field, "class_map": self.class_map.to_dict(),
                "channels": list(self.channels), "options": self.options}

    def load(self) -> LabelledCloud:
        """Read the cloud, encode its labels and compute its features."""
        if self.kind == "synthetic":
            from .synthetic_rooms import generate_room

            bank = _object_bank(self.options["bank"], self.options.get("cad")) if "bank" in self.options else None
            xyz, rgb, raw = generate_room(np.random.default_rng(self.options["seed"]),
                                          density=self.options.get("density", 800.0), bank=bank,
                                          variants=self.options.get("variants", False))
            fields = {"red": rgb[:, 0], "green": rgb[:, 1], "blue": rgb[:, 2], "class": raw}
        else:
            from ..io import read

            labels_file, columns = self.options.get("labels_file"), self.options.get("columns")
            if labels_file:
                cloud = read(self.path, labels=labels_file)
            else:
                cloud = read(self.path, columns=columns) if columns else read(self.path)
            xyz, fields = cloud.xyz, cloud.fields
        if self.label_field not in fields:
            have = ", ".join(sorted(fields)) or "none"
            raise BadInputError(f"no label field {self.label_field!r} (its fields are: {have}); "
                                "choose one with --label-field", self.path)
        labels = self.class_map.encode(fields[self.label_field])
        feats = make_features(fields, xyz, self.channels, path=self.path)
        return LabelledCloud(np.asarray(xyz, dtype=np.float64), labels, feats, self.path, self.class_map,
                             self.channels)


_BANKS: dict = {}


def _object_bank(root: str, cad: str | None = None):
    """The training object bank of ``root`` (held-out files excluded), with the free CAD objects of ``cad``
    (:func:`pcseg.data.cad_bank.load_cad_bank`) when given, read once per process."""
    key = root if cad is None else (root, cad)
    if key not in _BANKS:
        from .object_bank import load_bank

        if cad is None:
            _BANKS[key] = load_bank(root)
        else:
            from .cad_bank import load_cad_bank
            from .object_bank import ObjectBank

            _BANKS[key] = ObjectBank.concatenate([_object_bank(root), load_cad_bank(cad)])
    return _BANKS[key]


# ---------------------------------------------------------------------------------------------------------
def _ply_properties(path: str) -> set[str]:
    """Vertex property names from a PLY header (reads at most 64 KiB)."""
    with open(path, "rb") as f:
        head = f.read(65536)
    end = head.find(b"end_header")
    lines = head[: end if end >= 0 else len(head)].decode("ascii", errors="replace").splitlines()
    props, in_vertex = set(), False
    for line in lines:
        parts = line.split()
        if parts[:1] == ["element"]:
            in_vertex = len(parts) > 1 and parts[1] == "vertex"
        elif parts[:1] == ["property"] and in_vertex:
            props.add(parts[-1])
    return props


def _kitti_labels_file(scan: Path) -> Path:
    return scan.parent.parent / "labels" / (scan.stem + ".label")


def _classify_file(path: str) -> tuple[str, dict]:
    """(kind, options) of one cloud file."""
    ext = os.path.splitext(path)[1].lower()
    if ext in (".las", ".laz"):
        return "als", {}
    if ext == ".bin":
        scan = Path(path)
        labels = _kitti_labels_file(scan)
        if labels.is_file():
            return "semantickitti", {"labels_file": str(labels)}
        raise BadInputError(f"a .bin scan needs its SemanticKITTI labels at {labels} (not found)", path)
    if ext == ".ply":
        try:
            props = _ply_properties(path)
        except OSError as e:
            raise BadInputError(f"cannot read: {e.strerror}", path) from None
        if ("class" in props and "nyu40" in props) or _SCANNET_NAME.search(os.path.basename(path)):
            return "scannet", {}
    return "generic", {}


def _s3dis_rooms(area: Path) -> list[Path]:
    return sorted(p for p in area.iterdir() if (p / "Annotations").is_dir())


def _expand(spec: str, role: str, s3dis_val_area: int) -> list[tuple[str, str, dict, tuple[str, ...]]]:
    """(kind, path, options, files) for one ``--data`` string."""
    for prefix in (BANK_ROOMS_PREFIX, VARIED_ROOMS_PREFIX, CAD_ROOMS_PREFIX):
        if not spec.startswith(prefix):
            continue
        m = re.fullmatch(r"(?::(\d+))?(?:@(.+))?", spec[len(prefix):])
        if not m:
            raise UsageError(f"{spec!r}: write {prefix}, {prefix}:N (N rooms) or {prefix}:N@DATA_ROOT")
        from .object_bank import default_data_root

        root = Path(m.group(2)) if m.group(2) else default_data_root()
        if not (root / "indoor").is_dir():
            raise BadInputError(f"no indoor/ folder of real scans for the object bank (give {prefix}:N@"
                                "DATA_ROOT or set PCSEG_SHARED_DATA)", str(root))
        n = int(m.group(1)) if m.group(1) else (SYNTHETIC_TRAIN_ROOMS if role == "train" else SYNTHETIC_VAL_ROOMS)
        seed0 = 0 if role == "train" else SYNTHETIC_VAL_SEED0
        # varied rooms: the same seeds, another source name and the variants option (their own cache entries)
        extra = {"variants": True} if prefix == VARIED_ROOMS_PREFIX else {}
        if prefix == CAD_ROOMS_PREFIX:  # the CAD bank's version and catalog are in the options (cache names)
            from .cad_bank import cad_bank_key

            cad = root / "cad"
            if not (cad / "catalog.json").is_file():
                raise BadInputError(f"no cad/catalog.json of CAD objects for {prefix} (give {prefix}:N@DATA_ROOT "
                                    "or set PCSEG_SHARED_DATA)", str(root))
            extra = {"variants": True, "cad": os.path.abspath(cad), "cad_bank": cad_bank_key(cad)}
        return [("synthetic", f"{prefix}#{seed0 + i}", {"seed": seed0 + i, "bank": os.path.abspath(root), **extra},
                 ()) for i in range(n)]
    if spec.startswith(SYNTHETIC_PREFIX):
        rest = spec[len(SYNTHETIC_PREFIX):]
        if rest and not re.fullmatch(r":\d+", rest):
            raise UsageError(f"{spec!r}: write synthetic:rooms or synthetic:rooms:N (N rooms)")
        n = int(rest[1:]) if rest else (SYNTHETIC_TRAIN_ROOMS if role == "train" else SYNTHETIC_VAL_ROOMS)
        seed0 = 0 if role == "train" else SYNTHETIC_VAL_SEED0
        return [("synthetic", f"{SYNTHETIC_PREFIX}#{seed0 + i}", {"seed": seed0 + i}, ()) for i in range(n)]
    if any(ch in spec for ch in "*?["):
        matches = sorted(glob.glob(spec, recursive=True))
        if not matches:
            raise BadInputError("the pattern matches no file", spec)
        return [item for m in matches for item in _expand(m, role, s3dis_val_area)]
    p = Path(spec)
    if not p.exists():
        raise BadInputError("no such file or directory", spec)
    if p.is_file():
        kind, options = _classify_file(spec)
        files = (spec,) + ((options["labels_file"],) if "labels_file" in options else ())
        return [(kind, spec, options, files)]
    # folders
    if (p / "Annotations").is_dir():  # one S3DIS room
        return [("s3dis", spec, {}, tuple(sorted(str(f) for f in (p / "Annotations").glob("*.txt"))))]
    areas = sorted(d for d in p.iterdir() if d.is_dir() and re.fullmatch(r"Area_\d+", d.name))
    if areas:  # S3DIS root: hold one area out
        held = f"Area_{s3dis_val_area}"
        chosen = [a for a in areas if (a.name == held) == (role == "val")]
        if not chosen:
            what = f"{held} (the validation area)" if role == "val" else f"training area (all but {held})"
            raise BadInputError(f"S3DIS root has no {what}: it has {', '.join(a.name for a in areas)}", spec)
        return [item for a in chosen for item in _expand(str(a), role, s3dis_val_area)]
    if re.fullmatch(r"Area_\d+", p.name):
        rooms = _s3dis_rooms(p)
        if not rooms:
            raise BadInputError("S3DIS area folder holds no room folder with Annotations/", spec)
        return [item for r in rooms for item in _expand(str(r), role, s3dis_val_area)]
    if (p / "velodyne").is_dir():  # one SemanticKITTI sequence
        scans = sorted((p / "velodyne").glob("*.bin"))
        if not scans:
            raise BadInputError("SemanticKITTI sequence has no velodyne/*.bin scans", spec)
        return [item for s in scans for item in _expand(str(s), role, s3dis_val_area)]
    seqs = sorted(d for d in p.iterdir() if d.is_dir() and re.fullmatch(r"\d\d", d.name) and (d / "velodyne").is_dir())
    if seqs:  # SemanticKITTI sequences root: standard split
        wanted = SEMANTICKITTI_VAL if role == "val" else SEMANTICKITTI_TRAIN
        chosen = [s for s in seqs if s.name in wanted]
        if not chosen:
            raise BadInputError(f"has none of the SemanticKITTI {role} sequences {', '.join(wanted)} "
                                f"(it has {', '.join(s.name for s in seqs)}); give a sequence folder instead", spec)
        return [item for s in chosen for item in _expand(str(s), role, s3dis_val_area)]
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in CLOUD_EXTENSIONS)
    if not files:
        raise BadInputError(f"folder holds no point cloud file ({', '.join(CLOUD_EXTENSIONS)})", spec)
    return [item for f in files for item in _expand(str(f), role, s3dis_val_area)]


def _default_label_field(kind: str, path: str, class_map: ClassMap) -> str:
    if kind == "als":
        return "classification"
    if kind == "semantickitti":
        return "semantic"
    if kind == "scannet" and class_map.raw_kind == "NYU40 id":
        return "nyu40"
    if kind == "generic":
        ext = os.path.splitext(path)[1].lower()
        if ext == ".ply":
            props = _ply_properties(path)
            return "label" if "label" in props and "class" not in props else "class"
        if ext == ".pcd":
            return "label"
    return "class"


def resolve_data(
    specs: str | Sequence[str],
    channels: str | Sequence[str],
    *,
    role: str = "train",
    class_map: ClassMap | str | None = None,
    label_field: str | None = None,
    s3dis_val_area: int = S3DIS_VAL_AREA,
    columns: str | None = None,
) -> list[CloudSource]:
    """The clouds named by ``--data`` (``role="train"``) or ``--val`` (``role="val"``) strings.

    channels: input feature channels (:mod:`pcseg.data.features`); class_map: a ClassMap, a built-in name or
    a JSON path, overriding each input's default; label_field: overrides each input's default label field;
    columns: column names of ``.txt`` / ``.npy`` files (``x,y,z,red,green,blue,class``, see :func:`pcseg.io.read`).
    Raises :class:`UsageError` / :class:`BadInputError` with one-line messages.
    """
    if role not in ("train", "val"):
        raise ValueError("role must be 'train' or 'val'")
    specs = [specs] if isinstance(specs, str) else list(specs)
    if not specs:
        raise UsageError("no data given")
    channels = parse_channels(channels)
    items, source_maps = [], []
    for spec in specs:
        name, rest = split_class_map(str(spec))
        expanded = _expand(rest, role, s3dis_val_area)
        items += expanded
        source_maps += [name] * len(expanded)
    if isinstance(class_map, (str, os.PathLike)):
        class_map = load_class_map(class_map)
    generic = [path for kind, path, *_ in items if kind == "generic"]
    if class_map is None and generic:
        raise UsageError(f"{generic[0]}: no built-in class map for this file; pass --class-map (a built-in "
                         "name or a .json file)")
    if class_map is None:
        names = sorted({DEFAULT_CLASS_MAPS[kind] for kind, *_ in items})
        if len(names) > 1:
            raise UsageError(f"these inputs use different class maps ({', '.join(names)}); pass --class-map "
                             "(e.g. scannet20-to-s3dis to train S3DIS classes on S3DIS and ScanNet)")
        class_map = builtin_class_map(names[0])
    sources = []
    for (kind, path, options, files), own_map in zip(items, source_maps):
        encoder = _encoder_for(kind, path, class_map) if own_map is None else builtin_class_map(own_map)
        if encoder.names != class_map.names:
            raise UsageError(f"{path}: class map {own_map!r} has the classes {', '.join(encoder.names)}, the run "
                             f"has {', '.join(class_map.names)}; choose a map with the run's classes")
        field_name = label_field or _default_label_field(kind, path, encoder)
        files = tuple(files) or ((path,) if kind != "synthetic" else ())
        if columns and kind == "generic" and os.path.splitext(path)[1].lower() in _COLUMN_FORMATS:
            options = {**options, "columns": columns}
        sources.append(CloudSource(kind, path, field_name, encoder, channels, files, options))
    return sources


def split_class_map(spec: str) -> tuple[str | None, str]:
    """(built-in class map name or None, the rest) of a ``MAP:...`` data string (the whole string when it has no
    such prefix)."""
    head, sep, rest = spec.partition(":")
    if sep and head in BUILTIN_CLASS_MAPS and rest:
        return head, rest
    return None, spec


def _encoder_for(kind: str, path: str, class_map: ClassMap) -> ClassMap:
    """The map that encodes this source's raw labels into ``class_map``'s classes.

    ``class_map`` itself when its raw values are the ones this kind of data stores (or it is a custom map,
    whose raw values the user vouches for); else the built-in map with the same class names that reads this
    data (an S3DIS room in a run with ``scannet20-to-s3dis`` is read with ``s3dis``); else a UsageError rather
    than labels silently read in the wrong code space.
    """
    if kind not in RAW_KINDS or class_map.raw_kind not in ALL_RAW_KINDS:
        return class_map
    if class_map.raw_kind in RAW_KINDS[kind]:
        return class_map
    for name in BUILTIN_CLASS_MAPS:
        other = builtin_class_map(name)
        if other.raw_kind in RAW_KINDS[kind] and other.names == class_map.names:
            return other
    raise UsageError(f"{path}: class map {class_map.name!r} reads {class_map.raw_kind}s, but this "
                     f"{kind} data stores {' or '.join(RAW_KINDS[kind])}s; choose a class map for it")


def check_disjoint(train: Sequence[CloudSource], val: Sequence[CloudSource]) -> None:
    """UsageError if a cloud is both a training and a validation cloud (same file or same synthetic seed)."""
    def key(s: CloudSource) -> str:
        return s.path if s.kind == "synthetic" else os.path.realpath(s.path)

    both = sorted({key(s) for s in train} & {key(s) for s in val})
    if both:
        raise UsageError(f"{both[0]} is both a training and a validation cloud ({len(both)} in all)")


def load_clouds(sources: Sequence[CloudSource]) -> list[LabelledCloud]:
    """Read every source (no cache: :func:`pcseg.data.spheres.prepare_clouds` caches the preprocessing)."""
    return [s.load() for s in sources]
