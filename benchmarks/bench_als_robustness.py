"""Robustness of an airborne model to what changes between surveys and tiles (issue #27, item 1).

One ``--model`` on one file set (``--files``; each file read with the class map its labels need, nothing copied
from ../shared/data). Every prediction is what ``pcseg segment`` writes: the network at ``--votes``, then the
card's per-point height tests (``bench_als.predict_als``), scored as in bench_als.py on the als classes. A row
gives the IoU of ground, vegetation and building over its points (confusion matrices summed over the files or
crops of the row, then IoU) and their mean over the classes present in the scored truth (AHN3 labels no
vegetation: its vegetation IoU is 0 wherever vegetation is predicted on its ground or buildings, and left out
of that file's mean). Three sweeps (``--sweeps``):

1. density: each fully labelled file thinned to 10, 3, 1, 0.3 and 0.1 points/m² (only the levels below the
   file's own density), two ways: random points, and whole pulses (the returns of one pulse share
   ``gps_time`` and ``point_source_id``; a file whose time stamps are not per pulse is thinned by points
   instead, and the row says so). The model sees only the kept points and only they are scored. Each row is
   compared with the full-density prediction of the same files (all of their points).
   Density of a file: points / occupied area, the area of the 2 m cells holding points, cells doubled until
   they hold 4 points on average (``pcseg.geometry.xy_density``).
2. edges: squares of 30, 45 and 60 m cut from each fully labelled file, two per size on building points and
   two on tree-crown points (ASPRS 6 and 5; a file without such labels gets none of that kind): one side of
   each square passes through a random such point, so it cuts the building or crown the way a tile boundary
   does (``pcseg.geometry.edge_crop_centres``). The model sees only the crop. Scored on all crop points and on
   the points within 5 m of the crop's border, each compared with the prediction of the whole file on the same
   points: the difference is what cutting the tile costs.
3. inputs: every file of the set (ground-only files too) fed as read, as x, y, z only (every field dropped:
   the labels come from the file as read), with z shifted by +1,000 m, and rewritten as LAS 1.2 point format 1
   (classification codes above 31 written as 1, return counts capped at 7, as that format holds no more) and as
   LAS 1.4 point format 6, each read back with ``pcseg.io.read``; and with noise returns added, as a raw survey
   holds them and none of the project's files does (their providers removed them): 0.1 % of the points copied
   5-50 m below themselves (multipath, ASPRS 7 "low noise") and 0.1 % copied 50-500 m above (birds, cloud, ASPRS
   18 "high noise"), single returns; the model sees them, only the file's own points are scored. Compared with
   the file as read; a variant the model cannot take (a model reading intensity, given x, y, z only) is reported
   with the reason. This sweep
   also gives the ground / non-ground IoU pooled over all its files (bench_als.py's measure; ASPRS noise,
   overlap and unlabelled codes left out).

All random choices come from generators seeded by the sweep, the file name and the condition: a rerun draws the
same points and crops. Outputs name files by their base names only.

    python benchmarks/bench_als_robustness.py --model MODEL [--files val|test|FILE...]
        [--sweeps density,edges,inputs] [--votes 1] [--threads 2] [--max-points N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_als import DATA, GROUND_EXCLUDED, VALIDATION, cpu_model, fmt, predict_als, score_als  # noqa: E402

from pcseg.data.classmaps import builtin_class_map  # noqa: E402
from pcseg.engine.metrics import confusion_matrix, scores  # noqa: E402
from pcseg.engine.segment import airborne_rules, class_map_of  # noqa: E402
from pcseg.errors import BadInputError  # noqa: E402
from pcseg.geometry import edge_crop_centres, pulse_ids, square_crop, thin_to_density, xy_density  # noqa: E402
from pcseg.io import PointCloud, read, write  # noqa: E402
from pcseg.models import zoo  # noqa: E402

TEST = [  # (file, class map of its labels, fully labelled): the test files of issue #27
    ("als/test_semis_2021_0382_6565_LA93_IGN69.laz", "als", True),    # IGN, sparse 1 km^2 (0.4 pts/m^2)
    ("als/test_data_77050_627760_LA93_IGN69.laz", "als", True),       # IGN LiDAR HD, 50 m tile
    ("als/ahn3_cropped_2.laz", "als-ahn3", True),                     # AHN3, Delft
    ("als/sample_c.las", "als", True),                                # PDAL sample (time stamps not per pulse)
]
SWEEPS = ("density", "edges", "inputs")
LEVELS = (10.0, 3.0, 1.0, 0.3, 0.1)  # points/m^2
THINNING = ("random", "pulse")
CROP_SIZES = (30.0, 45.0, 60.0)  # m
ANCHORS = {"building": (6,), "tree crown": (5,)}  # ASPRS codes of the objects the crop borders cut
CROPS_PER_ANCHOR = 2  # per file, crop size and anchor kind
BAND = 5.0  # m: the border band of a crop
Z_SHIFT = 1000.0
NOISE_SHARE, NOISE_BELOW, NOISE_ABOVE = 0.001, (5.0, 50.0), (50.0, 500.0)  # per kind; metres
VARIANTS = ("as read", "x, y, z only", f"z + {Z_SHIFT:,.0f} m", "LAS 1.2 point format 1", "LAS 1.4 point format 6",
            "with noise returns")
CLASSES = ("ground", "vegetation", "building")
NAMES = builtin_class_map("als").names
GROUND = NAMES.index("ground")
SEED = 27


@dataclass
class Tally:
    """Summed confusion matrices of a set of scored points: the als classes (fully labelled files only) and
    ground / non-ground."""

    cm: np.ndarray = field(default_factory=lambda: np.zeros((len(NAMES), len(NAMES)), np.int64))
    gcm: np.ndarray = field(default_factory=lambda: np.zeros((2, 2), np.int64))
    points: int = 0

    @classmethod
    def of(cls, pred: np.ndarray, raw: np.ndarray, map_name: str, full: bool) -> "Tally":
        cm = score_als(pred, raw, map_name)[0] if full else cls().cm
        keep = ~np.isin(raw, GROUND_EXCLUDED)
        gcm = confusion_matrix((pred[keep] == GROUND).astype(np.int64), (raw[keep] == 2).astype(np.int64), 2)
        return cls(cm, gcm, len(pred))

    def __add__(self, other: "Tally") -> "Tally":
        return Tally(self.cm + other.cm, self.gcm + other.gcm, self.points + other.points)

    def summary(self) -> dict:
        every = scores(self.cm, NAMES)["iou"]
        iou = {k: every[k] for k in CLASSES}
        in_truth = [k for k in CLASSES if self.cm[NAMES.index(k)].sum()]
        g = self.gcm
        union = g[1, 1] + g[0, 1] + g[1, 0]
        return {"points": self.points, "iou": iou, "classes_in_truth": in_truth,
                "mean": float(np.mean([iou[k] for k in in_truth])) if in_truth else None,
                "ground_iou": float(g[1, 1] / union) if union else None}


@dataclass
class Source:
    """A file of the set, read (and cut to ``--max-points``), with the model's prediction of all of it."""

    name: str
    map_name: str
    full: bool
    cloud: PointCloud
    raw: np.ndarray
    density: float
    points_read: int
    pred: np.ndarray | None = None

    def tally(self, pred: np.ndarray, index=slice(None)) -> Tally:
        return Tally.of(pred, self.raw[index], self.map_name, self.full)


class Model:
    """The model with its height rules; counts the seconds spent segmenting."""

    def __init__(self, ck, split, votes: int):
        self.ck, self.split, self.votes, self.seconds, self.calls = ck, split, votes, 0.0, 0

    def __call__(self, cloud: PointCloud) -> np.ndarray:
        t = time.perf_counter()
        pred = predict_als(self.ck, self.split, cloud, votes=self.votes)[0]
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return pred


def rng_for(*key) -> np.random.Generator:
    """A generator seeded by SEED and ``key`` (strings hashed with crc32: the same in every run)."""
    return np.random.default_rng([SEED] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in key])


def row(label: dict, tally: Tally, reference: Tally | None = None) -> dict:
    """A result row: ``label``, the scores of ``tally``, and those of ``reference`` with the differences."""
    out = {**label, **tally.summary()}
    if reference is not None:
        ref = reference.summary()
        out["reference"] = ref
        pairs = {**{k: (out["iou"][k], ref["iou"][k]) for k in CLASSES}, "mean": (out["mean"], ref["mean"]),
                 "ground_iou": (out["ground_iou"], ref["ground_iou"])}
        out["delta"] = {k: None if a is None or b is None else a - b for k, (a, b) in pairs.items()}
    return out


# ---------------------------------------------------------------------------------------------------- files

def file_set(spec: list[str]) -> list[tuple[Path, str, bool]]:
    """(path, class map, fully labelled) of ``val``, ``test`` or the files named (a path, or one relative to
    ../shared/data; a file of VALIDATION or TEST keeps its class map, any other is read as ``als-ground`` in
    an ``als_ground`` folder, ``als-ahn3`` when its name starts with ``ahn3``, else ``als``)."""
    if spec in (["val"], ["test"]):
        return [(DATA / rel, m, full) for rel, m, full in (VALIDATION if spec == ["val"] else TEST)]
    known = {Path(rel).name: (m, full) for rel, m, full in VALIDATION + TEST}
    out = []
    for name in spec:
        path = Path(name) if Path(name).exists() else DATA / name
        if not path.exists():
            raise SystemExit(f"{Path(name).name}: not found (as given, nor in ../shared/data)")
        if path.name in known:
            out.append((path, *known[path.name]))
        elif path.parent.name == "als_ground":
            out.append((path, "als-ground", False))
        else:
            out.append((path, "als-ahn3" if path.name.startswith("ahn3") else "als", True))
    return out


def load(path: Path, map_name: str, full: bool, max_points: int | None) -> Source:
    """Read a file; with ``max_points``, a larger one is cut to the square around its x, y centre holding that
    many points (density and pulses kept, unlike a random subsample)."""
    cloud = read(str(path))
    cloud.meta["source"] = path.name
    n = len(cloud)
    if max_points is not None and n > max_points:
        xy = cloud.xyz[:, :2]
        middle = (xy.min(axis=0) + xy.max(axis=0)) / 2
        cloud = cloud.select(np.sort(np.argpartition(np.abs(xy - middle).max(axis=1), max_points - 1)[:max_points]))
    raw = np.asarray(cloud.fields["classification"]).astype(np.int64)
    return Source(path.name, map_name, full, cloud, raw, xy_density(cloud.xyz), n)


# --------------------------------------------------------------------------------------------------- sweeps

def density_sweep(model: Model, sources: list[Source]) -> dict:
    """Random and pulse thinning to each level below a file's density (module docstring, 1)."""
    per_file, pooled, refs = [], {}, []
    full = [s for s in sources if s.full]
    for s in full:
        pulses, ref = pulse_ids(s.cloud.fields), s.tally(s.pred)
        refs.append(ref)
        for mi, method in enumerate(THINNING):
            by_pulse = method == "pulse" and pulses is not None
            for li, level in enumerate(LEVELS):
                if level >= s.density:
                    continue
                kept = thin_to_density(s.cloud.xyz, level, rng_for("density", s.name, mi, li),
                                       pulse_ids=pulses if by_pulse else None)
                t = s.tally(model(s.cloud.select(kept)), kept)
                label = {"file": s.name, "thinning": method, "target": level,
                         "thinned_by": "pulses" if by_pulse else "points",
                         "density": round(xy_density(s.cloud.xyz[kept]), 3)}
                per_file.append(row(label, t, ref))
                acc = pooled.setdefault((method, level), [Tally(), Tally(), []])
                acc[0], acc[1] = acc[0] + t, acc[1] + ref
                acc[2].append(s.name if by_pulse or method == "random" else f"{s.name} (by points)")
    rows = [row({"thinning": "none", "target": None, "files": [s.name for s in full]}, sum(refs, Tally()))]
    order = sorted(pooled, key=lambda key: (THINNING.index(key[0]), -key[1]))
    rows += [row({"thinning": m, "target": lv, "files": pooled[m, lv][2]}, *pooled[m, lv][:2]) for m, lv in order]
    return {"pooled": rows, "per_file": per_file}


def edge_sweep(model: Model, sources: list[Source]) -> dict:
    """Crops whose border cuts buildings and crowns, alone against the whole file (module docstring, 2)."""
    zero = [Tally()] * 4  # crop alone, whole file (same points); the same within BAND of the border
    per_file, pooled, counts = [], {size: zero for size in CROP_SIZES}, dict.fromkeys(CROP_SIZES, 0)
    for s in (s for s in sources if s.full):
        xy = s.cloud.xyz[:, :2]
        for si, size in enumerate(CROP_SIZES):
            acc, kinds = zero, {}
            for ki, (kind, codes) in enumerate(ANCHORS.items()):
                anchors = xy[np.isin(s.raw, codes)]
                if not len(anchors):
                    continue
                centres = edge_crop_centres(xy, anchors, size, CROPS_PER_ANCHOR, rng_for("edges", s.name, si, ki))
                kinds[kind] = len(centres)
                for centre in centres:
                    idx = square_crop(xy, centre, size)
                    near = size / 2 - np.abs(xy[idx] - centre).max(axis=1) <= BAND
                    alone = model(s.cloud.select(idx))
                    parts = (s.tally(alone, idx), s.tally(s.pred[idx], idx),
                             s.tally(alone[near], idx[near]), s.tally(s.pred[idx[near]], idx[near]))
                    acc = [a + p for a, p in zip(acc, parts)]
            if not kinds:
                continue
            label = {"file": s.name, "size": size, "crops": kinds}
            per_file += [row({**label, "scored": "all crop points"}, acc[0], acc[1]),
                         row({**label, "scored": f"within {BAND:g} m of the border"}, acc[2], acc[3])]
            pooled[size] = [p + a for p, a in zip(pooled[size], acc)]
            counts[size] += sum(kinds.values())
    rows = []
    for size, (crop, whole, crop_band, whole_band) in pooled.items():
        rows += [row({"size": size, "crops": counts[size], "scored": "all crop points"}, crop, whole),
                 row({"size": size, "crops": counts[size], "scored": f"within {BAND:g} m of the border"}, crop_band,
                     whole_band)]
    return {"pooled": rows, "per_file": per_file}


def with_noise_returns(cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
    """``cloud`` followed by its noise returns (module docstring, 3): copies of NOISE_SHARE of its points moved
    down by NOISE_BELOW and as many moved up by NOISE_ABOVE (uniform), ASPRS 7 and 18, single returns."""
    n = len(cloud)
    k = max(1, round(NOISE_SHARE * n))
    src = rng.choice(n, 2 * k, replace=n < 2 * k)
    dz = np.concatenate([-rng.uniform(*NOISE_BELOW, k), rng.uniform(*NOISE_ABOVE, k)])
    xyz = np.concatenate([cloud.xyz, cloud.xyz[src] + np.stack([np.zeros(2 * k), np.zeros(2 * k), dz], axis=1)])
    fields = {}
    for key, v in cloud.fields.items():
        v = np.asarray(v)
        extra = v[src].copy()
        if key == "classification":
            extra[:] = np.repeat(np.array([7, 18], v.dtype), k)
        elif key in ("return_number", "number_of_returns"):
            extra[:] = 1
        fields[key] = np.concatenate([v, extra])
    return PointCloud(xyz, fields, {**cloud.meta, "source": f"{cloud.meta.get('source', '')} (with noise returns)"})


def variant(name: str, cloud: PointCloud, folder: Path) -> PointCloud:
    """The cloud as the input variant ``name`` (VARIANTS) presents it (the noise returns after its points)."""
    if name == VARIANTS[5]:
        return with_noise_returns(cloud, rng_for("noise", cloud.meta.get("source", ""), len(cloud)))
    if name == VARIANTS[1]:
        return PointCloud(cloud.xyz, {"classification": cloud.fields["classification"]},
                          {"source": f"{cloud.meta.get('source', '')} ({name})"})
    if name == VARIANTS[2]:
        return PointCloud(cloud.xyz + [0.0, 0.0, Z_SHIFT], cloud.fields, cloud.meta)
    import laspy

    point_format, version = (1, "1.2") if name == VARIANTS[3] else (6, "1.4")
    if point_format == 1:  # what LAS 1.2 format 1 can hold: codes 0-31, 3-bit return numbers
        capped = {"classification": lambda v: np.where(v > 31, 1, v),
                  "return_number": lambda v: np.minimum(v, 7), "number_of_returns": lambda v: np.minimum(v, 7)}
        cloud = cloud.with_fields(**{k: f(cloud.fields[k]).astype(cloud.fields[k].dtype)
                                     for k, f in capped.items() if k in cloud.fields})
    write(cloud, str(folder / "as_read.las"))
    laspy.convert(laspy.read(folder / "as_read.las"), point_format_id=point_format,
                  file_version=version).write(folder / "variant.las")
    out = read(str(folder / "variant.las"))
    out.meta["source"] = f"{cloud.meta.get('source', '')} ({name})"
    return out


def input_sweep(model: Model, sources: list[Source]) -> dict:
    """The file as read against its variants (module docstring, 3)."""
    per_file, pooled = [], {v: [Tally(), Tally(), [], []] for v in VARIANTS}  # variant, as read, files, failed
    with tempfile.TemporaryDirectory() as tmp:
        for s in sources:
            ref = s.tally(s.pred)
            for name in VARIANTS:
                try:
                    t = ref if name == VARIANTS[0] else \
                        s.tally(model(variant(name, s.cloud, Path(tmp)))[:len(s.cloud)])
                except BadInputError as e:
                    reason = str(e).replace(tmp, "").replace(str(DATA), "")
                    per_file.append({"file": s.name, "input": name, "error": reason})
                    pooled[name][3].append(s.name)
                    continue
                per_file.append(row({"file": s.name, "input": name, "fully_labelled": s.full}, t, ref))
                acc = pooled[name]
                acc[0], acc[1] = acc[0] + t, acc[1] + ref
                acc[2].append(s.name)
    rows = [row({"input": name, "files": names, "not_run_on": failed}, t, ref) if names else
            {"input": name, "files": [], "not_run_on": failed} for name, (t, ref, names, failed) in pooled.items()]
    return {"pooled": rows, "per_file": per_file}


# --------------------------------------------------------------------------------------------------- output

def signed(v) -> str:
    return "  -  " if v is None else f"{100 * v:+5.1f}"


def scores_cells(r: dict) -> list[str]:
    """IoU of each class, mean, and their differences from the reference; '-' for a class absent from the scored
    truth (its IoU, 0 where it is predicted, stays in the JSON)."""
    shown = [k if k in r["classes_in_truth"] else None for k in CLASSES]
    d = r.get("delta", {})
    return ([fmt(r["iou"][k]) if k else fmt(None) for k in shown] + [fmt(r["mean"])]
            + [signed(d.get(k)) if k else signed(None) for k in shown] + [signed(d.get("mean"))])


def table(title: str, header: list[str], rows: list[list]) -> str:
    lines = [f"\n\n### {title}\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


IOU_HEADER = ["ground", "vegetation", "building", "mean", "Δ ground", "Δ veg.", "Δ building", "Δ mean"]


def density_tables(model: str, res: dict) -> str:
    def thinning(r: dict) -> str:
        by_points = sum(f.endswith("(by points)") for f in r["files"])
        return r["thinning"] + (f" ({by_points} of {len(r['files'])} by points)" if by_points else "")

    pooled = [[thinning(r), "full" if r["target"] is None else f"{r['target']:g}", len(r["files"]),
               f"{r['points']:,}", *scores_cells(r)] for r in res["pooled"]]
    files = [[r["file"], r["thinning"] + (" (by points)" if r["thinning"] == "pulse" and r["thinned_by"] == "points"
                                          else ""), f"{r['target']:g}", f"{r['density']:g}", f"{r['points']:,}",
              *scores_cells(r)] for r in res["per_file"]]
    return (table(f"{model}: density, pooled over the fully labelled files (Δ: against full density, same files)",
                  ["thinning", "pts/m²", "files", "points", *IOU_HEADER], pooled)
            + table(f"{model}: density, per file (Δ: against the file at full density)",
                    ["file", "thinning", "target pts/m²", "kept pts/m²", "points", *IOU_HEADER], files))


def edge_tables(model: str, res: dict) -> str:
    pooled = [[f"{r['size']:g} m", r["crops"], r["scored"], f"{r['points']:,}", *scores_cells(r)]
              for r in res["pooled"]]
    files = [[r["file"], f"{r['size']:g} m", ", ".join(f"{n} {k}" for k, n in r["crops"].items()), r["scored"],
              f"{r['points']:,}", *scores_cells(r)] for r in res["per_file"]]
    head = ["scored", "points", *IOU_HEADER]
    return (table(f"{model}: tile edges, crop alone (Δ: against the whole file's prediction, same points)",
                  ["crop", "crops", *head], pooled)
            + table(f"{model}: tile edges, per file", ["file", "crop", "crops", *head], files))


def input_tables(model: str, res: dict) -> str:
    pooled = [[r["input"], f"0 ({len(r['not_run_on'])} not run: the model cannot take it, see per file)",
               *[""] * 11] if not r["files"] else
              [r["input"], f"{len(r['files'])}" + (f" ({len(r['not_run_on'])} not run)" if r["not_run_on"] else ""),
               f"{r['points']:,}", *scores_cells(r), fmt(r["ground_iou"]), signed(r["delta"]["ground_iou"])]
              for r in res["pooled"]]
    files = [[r["file"], r["input"], "error: " + r["error"], *[""] * 10] if "error" in r else
             [r["file"], r["input"], f"{r['points']:,}", *scores_cells(r), fmt(r["ground_iou"]),
              signed(r["delta"]["ground_iou"])] for r in res["per_file"]]
    extra = ["ground/non-ground IoU", "Δ"]
    return (table(f"{model}: input variants (classes: fully labelled files; ground/non-ground: all files; "
                  "Δ: against the file as read)", ["input", "files", "points", *IOU_HEADER, *extra], pooled)
            + table(f"{model}: input variants, per file", ["file", "input", "points", *IOU_HEADER, *extra], files))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--files", nargs="+", default=["val"], metavar="val|test|FILE",
                    help="val (bench_als.py's validation files), test, or files (default: val)")
    ap.add_argument("--sweeps", default=",".join(SWEEPS),
                    help=f"comma-separated, of {', '.join(SWEEPS)} (default: all)")
    ap.add_argument("--votes", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-points", type=int, help="cut larger files to the square around their centre holding "
                    "this many points (default: whole files)")
    ap.add_argument("--json", help="write every row (pooled and per file) to this file")
    args = ap.parse_args()
    sweeps = [s.strip() for s in args.sweeps.split(",") if s.strip()]
    if not sweeps or set(sweeps) - set(SWEEPS):
        ap.error(f"--sweeps takes a comma-separated list of {', '.join(SWEEPS)}")
    if args.max_points is not None and args.max_points < 1:
        ap.error("--max-points must be positive")
    if not DATA.is_dir():
        print("../shared/data is not present", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    ck = zoo.load(args.model, "cpu")
    if "ASPRS" not in class_map_of(ck).raw_kind:
        ap.error(f"{args.model} is not an airborne model (its classes are not ASPRS codes)")
    model = Model(ck, airborne_rules(ck), args.votes)
    t0, load_start = time.perf_counter(), os.getloadavg()
    sources = [load(path, m, full, args.max_points) for path, m, full in file_set(args.files)]
    report: dict = {"model": args.model, "votes": args.votes, "torch_threads": torch.get_num_threads(),
                    "cpu": cpu_model(), "load_average_start": load_start, "seed": SEED,
                    "definitions": {
                        "density": "points / occupied area: 2 m cells holding points, doubled until they hold 4 "
                                   "points on average, clipped to the x, y bounding box (pcseg.geometry.xy_density)",
                        "mean": "mean IoU of ground, vegetation and building over those present in the scored truth",
                        "density_reference": "full-density prediction of the same files, all of their points",
                        "edges_reference": "prediction of the whole file, on the same points as the crop",
                        "inputs_reference": "the file as read",
                        "levels": LEVELS, "crop_sizes": CROP_SIZES, "crops_per_anchor_kind": CROPS_PER_ANCHOR,
                        "border_band_m": BAND, "z_shift_m": Z_SHIFT},
                    "files": [{"file": s.name, "class_map": s.map_name, "fully_labelled": s.full,
                               "points_read": s.points_read, "points": len(s.cloud), "density": round(s.density, 3),
                               "per_pulse_gps_time": pulse_ids(s.cloud.fields) is not None} for s in sources]}
    print(f"## {args.model}: robustness (votes {args.votes}, {torch.get_num_threads()} threads, {report['cpu']}, "
          f"load {load_start[0]:.2f})\n")
    for s in report["files"]:
        cut = f" of {s['points_read']:,}" if s["points"] != s["points_read"] else ""
        print(f"- {s['file']} ({s['class_map']}{'' if s['fully_labelled'] else ', ground only'}): "
              f"{s['points']:,} points{cut}, {s['density']:g} pts/m², gps_time "
              f"{'per pulse' if s['per_pulse_gps_time'] else 'not per pulse'}")
    for s in sources:
        s.pred = model(s.cloud)
    for name, run, tables in (("density", density_sweep, density_tables), ("edges", edge_sweep, edge_tables),
                              ("inputs", input_sweep, input_tables)):
        if name in sweeps:
            t = time.perf_counter()
            report[name] = run(model, sources)
            report[name]["seconds"] = round(time.perf_counter() - t, 1)
            print(tables(args.model, report[name]), flush=True)
    report.update(seconds=round(time.perf_counter() - t0, 1), segmentation_seconds=round(model.seconds, 1),
                  segmentations=model.calls, load_average_end=os.getloadavg())
    print(f"\n{model.calls} segmentations, {report['segmentation_seconds']} s of {report['seconds']} s; load "
          f"{report['load_average_end'][0]:.2f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
