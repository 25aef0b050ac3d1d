"""Check that the PLY files pcseg writes follow what CloudCompare's PLY reader expects.

CloudCompare is not needed: this replays, on the written header, how CloudCompare's PLY filter assigns vertex
properties in silent (command-line) mode (CloudCompare ``libs/qCC_io/PlyFilter.cpp``, ``PlyFilter::loadFile``;
same rules in 2.11-2.13; checked against CloudCompare 2.11.3 run headless):

* property names are matched upper-cased, in header order, first match wins: ``NX``/``NY``/``NZ`` anywhere (or
  ``NORM`` and a name ending in X/Y/Z) -> normals; ``RED``/``GREEN``/``BLUE`` anywhere -> colour channels (only
  the first of each: without a ``red`` property, ``scalar_pred_class`` is the red channel); ``INTENSITY``/
  ``GRAY``/``GREY`` -> a scalar field; then, on a vertex element, a name containing ``SCAL`` -> a scalar field,
  a name ending in X/Y/Z -> a coordinate; anything else is left unassigned (the GUI asks the user in a dialog,
  a command-line load drops it).
* colour values: 8-bit types are taken as they are, float types as 0..1, any other type is cast to 8 bits
  (``rgb_cb``): 16-bit colours come out wrapped, mostly dark.
* a scalar field named ``scalar_<name>`` is shown as ``<name>`` (CloudCompare 2.11.3 keeps the underscores;
  this script prints them as spaces); its values are read as float whatever the PLY type.

Two checks:

* LAS/LAZ in (default: three real tiles with RGB, NIR and extra bytes): the cloud plus a segmentation-like
  ``class`` and ``confidence`` written as PLY; every property's role and type, the 8-bit colours against the
  16-bit ones, and pcseg reading the PLY back with the exact LAS values.
* PLY in, PLY out (default: the real ScanNet scan ``scannet_scene0000_02.ply`` and the shipped synthetic room,
  both with plain property names): ``pcseg segment --confidence --proba`` with ``sala-s3dis``; the input's
  properties byte-identical in the output, every new field a scalar field, and pcseg reading the new fields back
  under their own names.

    python benchmarks/check_viewer_ply.py                      # the default files
    python benchmarks/check_viewer_ply.py a.laz room.ply --keep /tmp/ply   # keep the PLY files to open them
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
    "autzen_trim.las")] + [
    REPO.parent / "shared" / "data" / "indoor" / "scannet_scene0000_02.ply",  # real scan: plain names, class, nyu40
    REPO / "examples" / "synthetic_room.ply"]                                  # shipped: plain names, class
CHANNELS = {"x", "y", "z", "red", "green", "blue", "nx", "ny", "nz"}


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


def check(path: Path, keep: Path | None, model: str = "sala-s3dis", segment_args: tuple[str, ...] = ()) -> list[str]:
    """Problems of the PLY pcseg writes from ``path``: a LAS/LAZ written as PLY, or a PLY segmented by
    ``model`` (``segment_args``: more ``pcseg segment`` flags). An empty list when it follows CloudCompare."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return _dispatch(path, keep / (path.stem + (".segmented.ply" if path.suffix == ".ply" else ".ply")),
                         model, segment_args)
    with tempfile.TemporaryDirectory(prefix="pcseg-ply-") as tmp:
        return _dispatch(path, Path(tmp) / (path.stem + ".out.ply"), model, segment_args)


def _dispatch(path: Path, out: Path, model: str, segment_args: tuple[str, ...]) -> list[str]:
    if path.suffix.lower() == ".ply":
        return check_segmented_ply(path, out, model, segment_args)
    return _check(path, out)


def viewer_view(path: Path) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """The written file's properties (element, name, type) and the role CloudCompare gives each one."""
    from plyfile import PlyData

    ply = PlyData.read(str(path))
    props = [(el.name, p.name, p.val_dtype) for el in ply.elements for p in el.properties]
    return props, cloudcompare_roles(props)


def check_segmented_ply(src: Path, out: Path, model: str = "sala-s3dis",
                        segment_args: tuple[str, ...] = ()) -> list[str]:
    """``pcseg segment src --model model -o out --confidence --proba``, then: the input's own properties are
    in the output unchanged (names, types, values, order, comments), every new property is a CloudCompare
    scalar field, and pcseg reads the new fields back under their own names with the values it wrote."""
    from plyfile import PlyData

    from pcseg.cli.main import main
    from pcseg.io import read

    problems: list[str] = []
    rc = main(["segment", str(src), "--model", model, "-o", str(out), "--confidence", "--proba", "-q",
               *segment_args])
    if rc != 0:
        return [f"pcseg segment exited with {rc}"]
    a, b = PlyData.read(str(src)), PlyData.read(str(out))
    props, roles = viewer_view(out)
    own = [p.name for p in a["vertex"].properties]
    written = [p.name for p in b["vertex"].properties]
    print(f"\n{src.name}: {len(a['vertex'].data):,} points, segmented by {model} -> {out}")
    for _, name, typ in props:
        role = roles[name]
        shown = f" '{scalar_field_name(name)}'" if role == "scalar field" else ""
        print(f"  {name:<28} {typ:<4} -> {role}{shown}{'' if name in own else '  (new)'}")
    if written[:len(own)] != own:
        problems.append(f"the input's properties are not first and in order: {written[:len(own)]} != {own}")
    for name in own:
        if name not in written:
            continue
        if b["vertex"].data.dtype[name] != a["vertex"].data.dtype[name]:
            problems.append(f"property {name!r} changes type")
        elif not np.array_equal(b["vertex"][name], a["vertex"][name]):
            problems.append(f"property {name!r} changes values")
    if b.comments[:len(a.comments)] != list(a.comments):
        problems.append("the input's header comments are not kept")
    if [e.name for e in b.elements] != [e.name for e in a.elements]:
        problems.append("the input's other elements are not kept")
    for axis in "xyz":
        if roles.get(axis) != axis:
            problems.append(f"{axis} is not read as the {axis} coordinate")
    for c in ("red", "green", "blue"):
        if c in own and roles.get(c) != c:
            problems.append(f"the input's {c} is not read as the {c} channel")
    new = [n for n in written if n not in own]
    if not new:
        problems.append("no new property written")
    for name in new:
        if roles[name] != "scalar field":
            problems.append(f"new property {name!r} is read as {roles[name]}, not as a scalar field")
    source, back = read(str(src)), read(str(out))
    added = [f for f in back.fields if f not in source.fields]
    if len(added) != len(new):
        problems.append(f"pcseg reads {len(added)} new fields back, the file has {len(new)} new properties")
    for field in [f"pred_{f}" if f in source.fields else f for f in ("class", "confidence")]:
        if field not in added:
            problems.append(f"pcseg does not read the new field {field!r} back under that name")
    for field, prop in zip(added, new):
        if not np.array_equal(np.asarray(back.fields[field]), np.asarray(b["vertex"][prop])):
            problems.append(f"field {field!r} does not read back with the values of property {prop!r}")
    for field in source.fields:
        if not np.array_equal(np.asarray(back.fields[field]), np.asarray(source.fields[field])):
            problems.append(f"the input's field {field!r} does not read back with its values")
    return problems


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
    for _, name, _ in props:
        if name not in CHANNELS and roles[name] != "scalar field":
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
    ap.add_argument("files", nargs="*", type=Path,
                    help="LAS/LAZ files written as PLY, PLY files segmented (default: three real tiles, a real "
                         "ScanNet scan and the shipped synthetic room)")
    ap.add_argument("--keep", type=Path, default=None, help="folder for the PLY files (default: a temporary one)")
    ap.add_argument("--model", default="sala-s3dis", help="the model that segments PLY inputs")
    args = ap.parse_args(argv)
    files = args.files or [p for p in DEFAULT if p.exists()]
    if not files:
        print("no input files (pass LAS/LAZ or PLY paths)", file=sys.stderr)
        return 2
    failed = 0
    for f in files:
        problems = check(f, args.keep, args.model)
        for p in problems:
            print(f"  PROBLEM: {p}")
        failed += bool(problems)
    print(f"\n{len(files) - failed}/{len(files)} files follow CloudCompare's PLY conventions and read back exactly")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
