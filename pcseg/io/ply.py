"""PLY (ascii, binary little/big endian) through plyfile, keeping property order, types and comments.

A cloud read from a PLY file is written back with its own property names and types, byte for byte. Every
other field (a new one such as ``class`` or ``confidence``, or every field of a cloud from LAS/LAZ, PCD, .bin,
.npy, text) is written the way CloudCompare's PLY filter reads PLY (CloudCompare ``libs/qCC_io/PlyFilter.cpp``,
``PlyFilter::loadFile``), so that it opens there with its colours and every new field as a scalar field,
without the property dialog (which a command-line load skips, dropping what it would have asked about):

* colours: ``red``, ``green``, ``blue`` as ``uchar``. CloudCompare takes 8-bit types as they are, float
  types as 0..1 and casts any other type to 8 bits, so 16-bit LAS colours showed as wrapped, mostly dark,
  values. Integer colours of any other type are written as their 8-bit reduction (unchanged when they all fit
  0..255, else the high byte: LAS stores 8-bit colour times 256) and kept in full in ``scalar_<c>_<type>``
  properties, which a header comment names so that pcseg reads the exact values back.
* every other field as ``scalar_<name>``: CloudCompare loads a vertex property whose name contains ``SCAL``
  as a scalar field, and drops the ``scalar_`` prefix (``_`` shown as spaces) from its name; it guesses other
  names only by colour, normal and coordinate words (``RED``, ``NX``, names ending in ``X``...) and leaves the
  rest for the user to assign. Normals ``nx``, ``ny``, ``nz`` keep their names.
* x, y, z as ``double`` (georeferenced coordinates stay exact; CloudCompare shifts them itself).
* CloudCompare matches colours and normals before ``SCAL``, on any part of a name: without a ``red``
  property before it, ``scalar_pred_class`` would be the red channel; ``scalar_nyu40`` is a normal's y. A new
  field that the viewer would take so gets a ``-`` inside the word (``scalar_pr-ed_class``), and a header
  comment names the field that property holds, so that pcseg reads it back under its own name.

Reading drops a ``scalar_`` prefix from property names (files written by CloudCompare or by pcseg), unless
the plain name is taken: pcseg finds ``class``, ``pred_class``, ``confidence``... under their plain names
whatever file they came from, and writes a read property back under the name it had.
"""
from __future__ import annotations

import io
import os
import re

import numpy as np

from ..errors import BadInputError
from .simple import flat_fields

_XYZ = ("x", "y", "z")
_RGB = ("red", "green", "blue")
_NORMALS = ("nx", "ny", "nz")
SCALAR_PREFIX = "scalar_"
# Header comment naming the properties that hold the full colour values behind 8-bit red, green, blue.
FULL_COLOUR_COMMENT = "pcseg full-precision colour:"
# Header comment naming the field behind each property whose name is not the field's (nor scalar_<field>).
FIELD_NAMES_COMMENT = "pcseg field names:"
_TYPE_BYTES = {"char": 1, "int8": 1, "uchar": 1, "uint8": 1, "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
               "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}


def _check_sizes(head: bytes, body_size: int, newlines, path: str) -> None:
    """Refuse a PLY whose header declares more element data than the file holds, before plyfile allocates
    arrays of the declared sizes. ``newlines()`` counts the lines of the body (ascii files). A header this
    parse does not follow is left to plyfile, which reports it."""
    end = head.find(b"end_header")
    if end < 0:
        return
    fmt, elements = None, []
    for line in head[:end].decode("ascii", errors="replace").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "format":
            fmt = words[1]
        elif words[:1] == ["element"]:
            if len(words) != 3 or not re.fullmatch(r"\d+", words[2]):
                return
            elements.append([words[1], int(words[2]), 0])
        elif len(words) >= 3 and words[0] == "property" and elements:
            kind = words[2] if words[1] == "list" and len(words) == 5 else words[1]
            if kind not in _TYPE_BYTES:
                return
            elements[-1][2] += _TYPE_BYTES[kind]  # a list counts its length only: a lower bound
    if fmt in ("binary_little_endian", "binary_big_endian"):
        need = sum(count * row for _, count, row in elements)
        if need > body_size:
            what = ", ".join(f"{count:,} {name}" for name, count, _ in elements)
            raise BadInputError(f"file is truncated: the header declares {what} ({need:,} bytes at least) but "
                                f"{body_size:,} bytes follow it", path)
    elif fmt == "ascii":
        rows = sum(count for _, count, _ in elements)
        if rows and rows > newlines():
            raise BadInputError(f"file is truncated: the header declares {rows:,} rows of values but fewer lines "
                                "follow it", path)


def read_ply(data: bytes | str, path: str):
    from plyfile import PlyData

    from .cloud import PointCloud

    try:
        if isinstance(data, str):
            size = os.path.getsize(data)
            with open(data, "rb") as f:
                head = f.read(1 << 20)
        else:
            size, head = len(data), data[:1 << 20]
        if head[:3] != b"ply":
            raise BadInputError("not a PLY file (no 'ply' magic line)", path)
        end = head.find(b"end_header")
        bad = re.search(rb"[^\x20-\x7e\t\r\n]", head[:end if end >= 0 else len(head)])
        if bad:  # plyfile would take a control byte into a property name; the header is text
            raise BadInputError(f"PLY header has a non-text byte {bad.group()!r} at byte {bad.start()}; the file "
                                "is damaged", path)
        if end >= 0:
            start = end + len(b"end_header") + (2 if head[end + 10:end + 12] == b"\r\n" else 1)

            def newlines() -> int:
                if isinstance(data, str):
                    with open(data, "rb") as f:
                        f.seek(start)
                        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b"")) + 1
                return data.count(b"\n", start) + 1

            _check_sizes(head, size - start, newlines, path)
        ply = PlyData.read(data if isinstance(data, str) else io.BytesIO(data))
    except BadInputError:
        raise
    except Exception as e:  # noqa: BLE001 - plyfile raises many types for malformed files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadInputError(f"cannot read PLY data ({msg}); the file may be truncated or corrupt", path) from None
    if "vertex" not in [el.name for el in ply.elements]:
        raise BadInputError("PLY file has no 'vertex' element", path)
    list_props = [p.name for p in ply["vertex"].properties if hasattr(p, "len_dtype")]
    if list_props:
        raise BadInputError(f"PLY vertex list properties are not supported ({', '.join(list_props)})", path)
    vertex = ply["vertex"].data
    names = vertex.dtype.names or ()
    missing = [c for c in _XYZ if c not in names]
    if missing:
        raise BadInputError(f"PLY vertices have no {', '.join(missing)} property (found: {', '.join(names)})", path)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite coordinates are reported by read()
        xyz = np.stack([vertex[c].astype(np.float64) for c in _XYZ], axis=1)
    # CloudCompare (and pcseg) store scalar fields as scalar_<name>: read them as <name>; pcseg's comment names
    # the fields of the properties it had to name otherwise. A property's own name, if free, wins.
    props = [n for n in names if n not in _XYZ]
    comments = list(ply.comments)
    named: dict[str, str] = {}
    for comment in [c for c in comments if c.startswith(FIELD_NAMES_COMMENT)]:
        comments.remove(comment)  # written again with the properties it names
        named.update(w.split("=", 1) for w in comment[len(FIELD_NAMES_COMMENT):].split() if "=" in w)
    field_of: dict[str, str] = {}
    for n in props:
        field = named.get(n, "")
        if field and field not in names and field not in field_of.values():
            field_of[n] = field
    for n in props:
        if n not in field_of:
            base = n[len(SCALAR_PREFIX):] if n.startswith(SCALAR_PREFIX) else ""
            field_of[n] = base if base and base not in names and base not in field_of.values() else n
    field_of = {n: field_of[n] for n in props}  # header order
    fields = {field_of[n]: np.array(vertex[n]) for n in props}
    ply_names = {field_of[n]: n for n in props}
    for comment in [c for c in comments if c.startswith(FULL_COLOUR_COMMENT)]:
        comments.remove(comment)  # written again with the colours
        spec = dict(w.split("=", 1) for w in comment[len(FULL_COLOUR_COMMENT):].split() if "=" in w)
        full = {c: field_of.get(spec.get(c, ""), "") for c in _RGB}
        if (len(set(full.values())) == 3 and all(c in fields and full[c] in fields and full[c] not in _RGB
                                                  and fields[full[c]].dtype.kind in "iu" for c in _RGB)):
            for c in _RGB:  # the full values replace the 8-bit copies, in the colours' place
                fields[c] = fields.pop(full[c])
                del ply_names[c], ply_names[full[c]]
    meta = {
        "format": "ply",
        "ply_text": bool(ply.text),
        "ply_byte_order": ply.byte_order,
        "ply_comments": comments,
        "ply_obj_info": list(ply.obj_info),
        "ply_xyz_dtype": [vertex.dtype[c].str for c in _XYZ],
        "ply_names": ply_names,
        "ply_other_elements": [el for el in ply.elements if el.name != "vertex"],
    }
    return PointCloud(xyz, fields, meta)


def _ply_dtype(name: str, values: np.ndarray, notes: list[str]) -> np.dtype:
    """The PLY type for a field: PLY has 8-32-bit integers, float and double only."""
    dt = values.dtype
    if dt == np.bool_:
        return np.dtype("u1")
    if dt.kind not in "iuf" or dt.itemsize > 8 or (dt.kind in "iu" and dt.itemsize == 8):
        target = np.dtype("f8") if dt.kind == "f" else np.dtype("i4") if dt.kind == "i" else np.dtype("u4")
        notes.append(f"field {name!r} ({dt}) stored as PLY {target}")
        return target
    return dt.newbyteorder("=")


def eight_bit(values: np.ndarray) -> np.ndarray:
    """8-bit colour for viewers: unchanged when every value fits 0..255, else the high byte of 16-bit values
    (LAS colour is 8-bit colour times 256, or 257)."""
    v = np.asarray(values)
    if len(v) == 0 or (v.min() >= 0 and v.max() <= 255):
        return v.astype(np.uint8)
    return np.clip(v.astype(np.int64) >> 8, 0, 255).astype(np.uint8)


def _viewer_role(prop: str, taken: set[str]) -> str:
    """The role CloudCompare's PLY filter gives a vertex property, given the roles earlier properties took
    (``PlyFilter::loadFile``: upper-cased names, first match wins, one property per colour, normal and
    coordinate): a normal (``NX``... anywhere in the name, or ``NORM`` and a name ending in the axis), a colour
    (``RED``, ``GREEN``, ``BLUE`` anywhere), a scalar field (``INTENSITY``, ``GRAY``, ``GREY``, ``SCAL``), a
    coordinate (a name ending in X, Y, Z) or nothing."""
    p = prop.upper()
    for axis in "XYZ":
        if "n" + axis.lower() not in taken and (f"N{axis}" in p or ("NORM" in p and p.endswith(axis))):
            return "n" + axis.lower()
    for word in ("RED", "GREEN", "BLUE"):
        if word.lower() not in taken and word in p:
            return word.lower()
    if any(w in p for w in ("INTENSITY", "GRAY", "GREY", "SCAL")):
        return "scalar"
    for axis in "xyz":
        if axis not in taken and p.endswith(axis.upper()):
            return axis
    return ""


# The words in a name that make CloudCompare take it as each colour or normal.
_VIEWER_WORDS = {"red": ("RED",), "green": ("GREEN",), "blue": ("BLUE",), "nx": ("NX", "NORM"),
                 "ny": ("NY", "NORM"), "nz": ("NZ", "NORM")}


def _viewer_scalar(prop: str, taken: set[str]) -> str:
    """``prop``, with a ``-`` after the first letter of each word that makes CloudCompare take it as a colour or
    a normal (``scalar_pr-ed_class``), so that it loads as a scalar field."""
    while (role := _viewer_role(prop, taken)) in _VIEWER_WORDS:
        p = prop.upper()
        at = min(i for i in (p.find(w) for w in _VIEWER_WORDS[role]) if i >= 0)
        prop = prop[:at + 1] + "-" + prop[at + 1:]
    return prop


def write_ply(cloud, dest, path: str) -> list[str]:
    from plyfile import PlyData, PlyElement

    notes: list[str] = []
    meta = cloud.meta if cloud.meta.get("format") == "ply" else {}
    origin = meta.get("ply_names", {})  # field -> its property name in the PLY file it was read from
    # Coordinates keep their PLY type when read from PLY; otherwise float64 so georeferenced values stay exact.
    xyz_types = meta.get("ply_xyz_dtype", ["<f8", "<f8", "<f8"])
    props: list[tuple[str, np.dtype, np.ndarray, str]] = [(c, np.dtype(t).newbyteorder("="), cloud.xyz[:, i], c)
                                                           for i, (c, t) in enumerate(zip(_XYZ, xyz_types))]
    fields = flat_fields(cloud.fields)  # PLY properties hold one value (lists are for faces)
    full_colour = [c for c in _RGB if c in fields and c not in origin
                   and fields[c].dtype.kind in "iu" and fields[c].dtype != np.uint8]
    if len(full_colour) < 3:
        full_colour = []
    companions = []
    for name, values in fields.items():
        values = np.asarray(values)
        if name in full_colour:
            props.append((name, np.dtype("u1"), eight_bit(values), name))
            dt = _ply_dtype(name, values, notes)
            companions.append((f"{SCALAR_PREFIX}{name}_{dt.name}", dt, values, name))
            continue
        if name in origin:  # the source PLY's own property, under its own name
            prop = origin[name]
        elif name not in _NORMALS and name not in _RGB and not name.startswith(SCALAR_PREFIX):
            prop = SCALAR_PREFIX + name  # a new field: a CloudCompare scalar field, whatever the source's naming
        else:
            prop = name
        props.append((prop, _ply_dtype(name, values, notes), values, name))
    props += companions  # after the 8-bit channels: CloudCompare takes the first RED/GREEN/BLUE property
    used: set[str] = set()
    taken: set[str] = set()  # the roles CloudCompare gives the properties so far
    columns, renamed = [], []
    for i, (prop, dt, values, name) in enumerate(props):
        clean = re.sub(r"[^\x21-\x7e]", "_", prop)  # the header is ASCII, words separated by spaces
        if clean != prop:
            notes.append(f"field {name!r} written as PLY property {clean!r}")
        if name not in origin and clean.startswith(SCALAR_PREFIX):  # a new field: a scalar field in the viewer
            clean = _viewer_scalar(clean, taken)
        k, unique = 2, clean
        while unique in used:
            unique, k = f"{clean}_{k}", k + 1
        used.add(unique)
        taken.add(_viewer_role(unique, taken))
        columns.append((unique, dt))
        props[i] = (unique, dt, values, name)
        plain = unique[len(SCALAR_PREFIX):] if unique.startswith(SCALAR_PREFIX) else unique
        if (unique != name and plain != name and i < len(props) - len(companions)
                and re.fullmatch(r"[\x21-\x7e]+", name) and "=" not in name):
            renamed.append(f"{unique}={name}")  # reading back would not find the field's name in the property's
    arr = np.empty(len(cloud), dtype=columns)
    for prop, dt, values, name in props:
        if values.dtype.kind in "iu" and dt.kind in "iu" and len(values):
            info = np.iinfo(dt)
            if values.min() < info.min or values.max() > info.max:
                raise BadInputError(f"field {name!r} does not fit PLY type {dt}", path)
        arr[prop] = values
    comments = list(meta.get("ply_comments", []))
    if renamed:
        comments.append(FIELD_NAMES_COMMENT + " " + " ".join(renamed))
    if companions:
        comments.append(FULL_COLOUR_COMMENT + " " + " ".join(f"{name}={prop}" for prop, _, _, name
                                                             in props[len(props) - len(companions):]))
    elements = [PlyElement.describe(arr, "vertex")] + list(meta.get("ply_other_elements", []))
    ply = PlyData(elements, text=meta.get("ply_text", False), byte_order=meta.get("ply_byte_order", "<"),
                  comments=comments, obj_info=meta.get("ply_obj_info", []))
    ply.write(dest)
    return notes
