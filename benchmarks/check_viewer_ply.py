"""Check that the PLY files pcseg writes from LAS/LAZ follow what CloudCompare's PLY reader expects.

CloudCompare is not needed: this replays, on the written header, how CloudCompare's PLY filter assigns vertex
properties (CloudCompare ``libs/qCC_io/PlyFilter.cpp``, ``PlyFilter::loadFile``; same rules in 2.11-2.13):

* property names are matched upper-cased, in header order, first match wins: ``NX``/``NY``/``NZ`` (or ``NORM``
  and a name ending in X/Y/Z) -> normals; ``RED``/``GREEN``/``BLUE`` -> colour channels (only the first of
  each); ``INTENSITY``/``GRAY``/``GREY`` -> a scalar field; then, on a vertex element, a name containing
  ``SCAL`` -> a scalar field, a name ending in X/Y/Z -> a coordinate; anything else is left unassigned (the
  user picks it in a dialog, and a command-line load drops it).
* colour values: 8-bit types are taken as they are, float types as 0..1, any other type is cast to 8 bits
  (``rgb_cb``): 16-bit colours come out wrapped, mostly dark.
* a scalar field named ``scalar_<name>`` is shown as ``<name>`` with ``_`` as spaces; its values are read as
  float whatever the PLY type.

For each LAS/LAZ file (default: three real tiles with RGB, NIR and extra bytes, plus a segmentation-like
``class`` and ``confidence``), the script writes the PLY with pcseg, checks every property's role and type, the
8-bit colours against the 16-bit ones, and that pcseg reads the PLY back with the exact LAS values.

    python benchmarks/check_viewer_ply.py                      # the default tiles
    python benchmarks/check_viewer_ply.py a.laz b.las --keep /tmp/ply   # keep the PLY files to open them
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT = [REPO.parent / "shared" / "data" / "als" / n for n in (
    "ign_870000_6618000_subset.laz",    # LAS 1.4 format 8: 16-bit RGB, NIR, extra bytes
    "sample_c.las",                     # LAS 1.2 format 3: 16-bit RGB
    "autzen_trim.las")]                 # LAS 1.2 format 3: 8-bit values in the 16-bit RGB fields


def cloudcompare_roles(properties: list[tuple[str, str, str]]) -> dict[str, str]:
    """{property: role} as CloudCompare's PLY filter guesses it. ``properties``: (element, name, type)."""
    roles: dict[str, str] = {}
    taken: set[str] = set()

    def first(role: str, name: str) -> bool:
        if role in taken:
            return False
        taken.add(role)
        roles[name] = role
        return True

    def normal(e: str, p: str, axis: str) -> bool:
        return f"N{axis}" in p or (("NORM" in e or "NORM" in p) and p.endswith(axis))

    for element, name, _ in properties:
        e, p = element.upper(), name.upper()
        if "nx" not in taken and normal(e, p, "X"):
            first("nx", name)
        elif "ny" not in taken and normal(e, p, "Y"):
            first("ny", name)
        elif "nz" not in taken and normal(e, p, "Z"):
            first("nz", name)
        elif "red" not in taken and ("RED" in p or ("COL" in e and p.endswith("R"))):
            first("red", name)
        elif "green" not in taken and ("GREEN" in p or ("COL" in e and p.endswith("G"))):
            first("green", name)
        elif "blue" not in taken and ("BLUE" in p or ("COL" in e and p.endswith("B"))):
            first("blue", name)
        elif any(w in p for w in ("INTENSITY", "GRAY", "GREY")) or ("COL" in e and p.endswith("I")):
            roles[name] = "scalar field"
        elif "VERT" in e or "POINT" in e:
            if "SCAL" in p:
                roles[name] = "scalar field"
            elif "x" not in taken and p.endswith("X"):
                first("x", name)
            elif "y" not in taken and p.endswith("Y"):
                first("y", name)
            elif "z" not in taken and p.endswith("Z"):
                first("z", name)
            else:
                roles[name] = "unassigned"
        elif "SCAL" in p or "VAL" in p:
            roles[name] = "scalar field"
        else:
            roles[name] = "unassigned"
    return roles


def scalar_field_name(prop: str) -> str:
    return prop[7:].replace("_", " ") if prop.startswith("scalar_") and len(prop) > 7 else prop


def check(path: Path, keep: Path | None) -> list[str]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return _check(path, keep / (path.stem + ".ply"))
    with tempfile.TemporaryDirectory(prefix="pcseg-ply-") as tmp:
        return _check(path, Path(tmp) / (path.stem + ".ply"))


def _check(path: Path, out: Path) -> list[str]:
    from plyfile import PlyData

    from pcseg.io import read, write

    problems: list[str] = []
    cloud = read(str(path))
    n = len(cloud)
    cloud = cloud.with_fields(**{"class": (np.arange(n) % 6).astype(np.int64),
                                 "confidence": np.linspace(0, 1, n).astype(np.float32)})
    notes = write(cloud, str(out))
    ply = PlyData.read(str(out))
    props = [(el.name, p.name, p.val_dtype) for el in ply.elements for p in el.properties]
    roles = cloudcompare_roles(props)
    vertex = ply["vertex"].data
    print(f"\n{path.name}: {n:,} points -> {out}")
    for note in notes:
        print(f"  note: {note}")
    for _, name, typ in props:
        role = roles[name]
        shown = f" '{scalar_field_name(name)}'" if role == "scalar field" else ""
        print(f"  {name:<28} {typ:<4} -> {role}{shown}")
    for axis in "xyz":
        if roles.get(axis) != axis:
            problems.append(f"{axis} is not read as the {axis} coordinate")
    if all(c in cloud.fields for c in ("red", "green", "blue")):
        for c in ("red", "green", "blue"):
            if roles.get(c) != c:
                problems.append(f"property {c} is not read as the {c} channel")
            elif vertex.dtype[c] != np.uint8:
                problems.append(f"{c} is {vertex.dtype[c]}: CloudCompare casts non-8-bit integer colours to 8 bits")
            full = np.asarray(cloud.fields[c])
            expect = full.astype(np.uint8) if full.max() <= 255 else (full >> 8).astype(np.uint8)
            if not np.array_equal(vertex[c], expect):
                problems.append(f"8-bit {c} is not the high byte of the 16-bit values")
    channels = {"x", "y", "z", "red", "green", "blue", "nx", "ny", "nz"}
    for _, name, _ in props:
        if name not in channels and roles[name] != "scalar field":
            problems.append(f"property {name!r} is read as {roles[name]}, not as a scalar field")
    for field in ("class", "confidence", "classification"):
        if field in cloud.fields and not any(roles[p] == "scalar field" and scalar_field_name(p) == field
                                             for _, p, _ in props):
            problems.append(f"field {field!r} does not come through as a scalar field named {field!r}")
    back = read(str(out))
    if not np.array_equal(back.xyz, cloud.xyz):
        problems.append("coordinates change on the way back")
    for name, values in cloud.fields.items():
        got = back.fields.get(name)
        if got is None or not np.array_equal(np.asarray(got), np.asarray(values)):
            problems.append(f"field {name!r} does not read back with its values")
        elif name in ("red", "green", "blue") and got.dtype != np.asarray(values).dtype:
            problems.append(f"{name} reads back as {got.dtype}, not {np.asarray(values).dtype}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help="LAS/LAZ files (default: three real tiles)")
    ap.add_argument("--keep", type=Path, default=None, help="folder for the PLY files (default: a temporary one)")
    args = ap.parse_args(argv)
    files = args.files or [p for p in DEFAULT if p.exists()]
    if not files:
        print("no input files (pass LAS/LAZ paths; the defaults live in ../shared/data/als)", file=sys.stderr)
        return 2
    failed = 0
    for f in files:
        problems = check(f, args.keep)
        for p in problems:
            print(f"  PROBLEM: {p}")
        failed += bool(problems)
    print(f"\n{len(files) - failed}/{len(files)} files follow CloudCompare's PLY conventions and read back exactly")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
