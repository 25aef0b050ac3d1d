"""Synthetic street frames built from CAD meshes and scanned by an exact 64-beam ray caster (issue #29 item 2).

:func:`mesh_street_scene` has the output contract of :func:`pcseg.data.detection.synthetic_scene` (points (N, 4)
float32 x, y, z, intensity; boxes (B, 7) in the KITTI lidar frame; names), so the detection engine can pre-train
on either (``DetectTrainConfig.synthetic_source``). Where ``synthetic_scene`` builds every object from opaque
boxes, these frames hold triangle meshes: the CAD cars, people and bicycles of ``../shared/data/cad`` placed in a
street made of large triangles, cast with the HDL-64 pattern of ``synthetic_scene``
(:func:`pcseg.data.detection._hdl64_directions`: 64 beams from +2 to -24.8 degrees, ``azimuth_steps`` per turn)
by :func:`pcseg.geometry.raycast.cast_rays` (the nearest triangle of every ray, exact).

The street (:func:`street_layout`): a road along x with 1-3 lanes each way (the sensor drives in one of the
right-hand lanes, 1.65-1.8 m above the road, which may be tilted: 3 scenes in 10 by up to 2 degrees along x,
the others by up to 0.6 degrees, and up to 0.5 degrees across), dashed lane lines, a solid centre line; on each
side (3 in 4) a parking lane of cars nose to tail with gaps, a kerb of 10-15 cm, a pavement 1.8-4.5 m wide, and
beyond it lots: buildings (facades with recessed windows, side walls into the block), low walls, or open ground;
trees (a hexagonal trunk and a jittered low-poly crown), lamp and sign poles and groups of bollards along the
kerb; moving traffic in the lanes, pedestrians on the pavements, cyclists at the edge of the road or on the
pavement.

Objects and their classes (:func:`cad_role`, decided per catalog record from its file name):

* ``Car`` (labelled): sedans, hatchbacks, coupés and sports cars, taxis, police cars and SUVs (25 of the free
  meshes). KITTI labels vans ``Van`` and lorries and buses ``Truck``, so vans, ambulances, delivery vans and
  minibuses (a "bus" under 6 m) are ``Van`` (8 meshes) and buses, fire engines and garbage trucks ``Truck`` (4):
  they stand in the streets as clutter (12% of the parked vehicles, 15% of the moving ones) and come back with
  those names (boxes the engine does not learn as Car, as in KITTI frames). Left out altogether: pickups
  (Kenney's ``truck`` and ``truck_flat`` too: KITTI's class for them is unclear), tractors, utility vehicles
  (Polaris) and open-wheel racers (Kenney's ``race`` and ``race_future``).
* ``Pedestrian``: the 10 posed people. ``Cyclist``: one of the 2 bicycles with a standing or walking person
  astride it, feet on the ground, at the saddle (there is no seated rider mesh). The decorative high-wheeler on a
  display base (``aws-bookstore__bicycle_01``) and meshes without faces or marked incomplete are left out.

Sizes follow KITTI, not the kits (the Kenney cars are short and tall): every car is scaled per axis so that its
length, width and height are a draw from KITTI's car sizes (``_SIZES['Car']`` of ``detection.py``: mean 3.9 x
1.6 x 1.56 m, spread 0.35, 0.1, 0.1, clipped at 2.5 spreads). A person is scaled to a drawn KITTI pedestrian
height; length and width move toward the drawn KITTI sizes by at most a factor of 1.5 beyond the height's scale,
so that a standing person does not become a 0.8 m thick blob (their boxes are then tighter than KITTI's loose
pedestrian boxes: 0.64 x 0.60 m on average, against KITTI's 0.8 x 0.6). A cyclist's bicycle is scaled to a
drawn KITTI cyclist length, its rider to the drawn height. Vans and trucks draw their own plausible sizes. Every
box is the tight box of the placed mesh in its yaw frame (all vertices inside, each face touched), and objects
stand upright on the road or pavement under their centre.

Surfaces (``SURFACES``): each face has a class and a reflectance. Vehicle faces are paint, glass or dark parts
(tyres, trim), from the face colours: glass is a face in the upper half of the vehicle, not near-horizontal,
whose colour is light cyan or dark grey and is not the vehicle's dominant colour (Kenney's windows are pale
blue-white, Quaternius' cyan or dark grey; found on 24 of the 25 cars, 3-15% of their area); dark parts are
the other dark grey faces. Glass (car windows and the recessed building windows) lets 60% of the rays through
to the next opaque surface (a car's far side from within, a room's wall, or nothing), and of the rays it stops
it returns a quarter (car glass) or half (building glass): car windows mostly give no return or one from
behind them, as in KITTI.

Returns: per hit, the range gets Gaussian noise (``range_noise``, 2 cm, clipped at 4 sigma); a return is
dropped with probability ``dropout`` (2%) + its class's share (foliage 25%, tyres and trim 10%, bicycles 10%)
+ up to 0.3 at grazing incidence (the cosine under 0.05) + 0.2 on very dark surfaces (reflectance under 0.03,
the darkest car paints) + up to 5% at ``max_range``. Intensity is the surface's reflectance times an incidence
falloff, times 1 + N(0, 0.08), plus N(-0.01, 0.01), clipped to [0, 1]: 0.45 + 0.55 cos(incidence) on diffuse
surfaces (KITTI's calibrated intensity falls off slowly: its road stays bright at grazing angles), cos^3 on car
paint and glass (a clear coat sends little back away from its normal). Reflectances are drawn per surface:
road 0.28-0.45, markings 0.6-0.9, kerb 0.3-0.5, pavement 0.28-0.5, ground 0.3-0.55, walls 0.15-0.6, building
glass 0.02-0.1, trunks 0.15-0.35, foliage 0.25-0.5, poles 0.25-0.65, people 0.1-0.4, bicycles 0.15-0.45; car
paint 0-0.15 per car plus 0.15 x the face colour's lightness, car glass 0.02-0.08, tyres 0-0.05. Over 20
frames the median intensity is 0.045 on vehicles (17% zeros), 0.22 on the road and 0.29 on other surfaces
above it; in the 8 KITTI frames here 0.05 in car boxes (48% zeros), 0.25 on the ground and 0.27 elsewhere.

Cost (one thread, ``OMP_NUM_THREADS=1``, this project's 2-core AMD EPYC with other jobs running, ``uptime`` load
average 3.3-3.9): reading the library once 2.3-3.0 s; a frame (about 127,000 triangles, 122,000 returns)
0.69-0.76 s median over 20 frames, twice (0.26-1.13 s): 0.13-0.15 s building the street, 0.55-0.58 s casting and
shading.

Meshes are read once per process (:func:`load_library`, a cache keyed by the catalog file, its size and time);
free objects only unless ``research_only`` (the research-only vehicles and people of the folder are a point set
and incomplete meshes, which are left out anyway). Everything drawn comes from ``rng``: a generator seeded the same
gives the same frame.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInputError
from ..geometry.boxes import intersection_area_bev, wrap_angle
from ..geometry.raycast import cast_rays as cast_mesh_rays
from ..io.mesh import read_mesh
from .detection import _SIZES, _hdl64_directions

__all__ = [
    "mesh_street_scene", "street_layout", "scan_street", "load_library", "default_cad_root", "cad_role",
    "CadModel", "CadLibrary", "StreetScene", "StreetScan", "SURFACES",
]

SURFACES = ("road", "marking", "kerb", "pavement", "ground", "wall", "window", "trunk", "foliage", "pole", "paint",
            "glass", "dark", "person", "bicycle")
(ROAD, MARKING, KERB, PAVEMENT, GROUND, WALL, WINDOW, TRUNK, FOLIAGE, POLE, PAINT, GLASS, DARK, PERSON,
 BICYCLE) = range(len(SURFACES))
# per surface class: reflectance drawn in [low, high], extra dropout, incidence exponent
# per surface class: reflectance drawn in [low, high], extra dropout, specular (intensity ~ cos^3 of the
# incidence angle) or diffuse (0.45 + 0.55 cos: the sensor's calibrated intensity falls off slowly)
_SURFACE = {ROAD: (0.28, 0.45, 0.0, 0), MARKING: (0.6, 0.9, 0.0, 0), KERB: (0.3, 0.5, 0.0, 0),
            PAVEMENT: (0.28, 0.5, 0.0, 0), GROUND: (0.3, 0.55, 0.02, 0), WALL: (0.15, 0.6, 0.0, 0),
            WINDOW: (0.02, 0.1, 0.5, 1), TRUNK: (0.15, 0.35, 0.0, 0), FOLIAGE: (0.25, 0.5, 0.25, 0),
            POLE: (0.25, 0.65, 0.0, 0), PAINT: (0.0, 0.15, 0.0, 1), GLASS: (0.02, 0.08, 0.75, 1),
            DARK: (0.0, 0.05, 0.1, 0), PERSON: (0.1, 0.4, 0.02, 0), BICYCLE: (0.15, 0.45, 0.1, 0)}
_EXTRA_DROP = np.array([_SURFACE[k][2] for k in range(len(SURFACES))])
# glass lets this share of the rays through, to the next opaque surface (the far side of a car, a room)
_TRANSMIT = np.zeros(len(SURFACES))
_TRANSMIT[GLASS], _TRANSMIT[WINDOW] = 0.6, 0.6
_SPECULAR = np.array([bool(_SURFACE[k][3]) for k in range(len(SURFACES))])

# Sizes (l, w, h) mean and spread of the unlabelled vehicles (roughly KITTI's Van and Truck boxes).
_CLUTTER_SIZES = {"van": ((5.0, 1.95, 2.2), (0.4, 0.08, 0.15)),
                  "truck": ((8.0, 2.45, 3.2), (1.5, 0.08, 0.3)),
                  "bus": ((11.5, 2.55, 3.2), (0.8, 0.05, 0.15))}
_SIZE_CLIP = 2.5            # size draws are clipped at this many spreads from the mean
_PERSON_STRETCH = 1.5       # a person's length and width move toward KITTI's by at most this factor

# ---------------------------------------------------------------------------------------------------------------
# CAD library
# ---------------------------------------------------------------------------------------------------------------

_EXCLUDED_NAMES = {"race", "race_future", "truck", "truck_flat"}      # Kenney: open-wheel racers and pickups
_EXCLUDED_WORDS = ("pickup", "polaris", "tractor")
_VAN_WORDS = ("van", "ambulance", "delivery", "minibus")
_TRUCK_WORDS = ("bus", "truck", "fire", "garbage", "lorry")


def default_cad_root() -> Path:
    """``$PCSEG_SHARED_DATA/cad``, else ``../shared/data/cad`` (the project's convention for the real data)."""
    from .object_bank import default_data_root

    return default_data_root() / "cad"


def cad_role(record: dict) -> str | None:
    """What a catalog record becomes in a street: ``"Car"``, ``"Van"``, ``"Truck"`` (unlabelled-class vehicles,
    returned with KITTI's names), ``"Pedestrian"``, ``"Bicycle"`` (a cyclist's bicycle), or None (left out).
    See the module's docstring for the reasons."""
    cls = record.get("class")
    name = Path(record.get("file", "")).stem.split("__")[-1].lower()
    notes = str(record.get("notes", "")).lower()
    if not record.get("faces") or "incomplete" in notes or "decorative" in notes or "partial" in notes:
        return None
    if cls == "pedestrian":
        return "Pedestrian"
    if cls == "cyclist":
        return "Bicycle" if "bicycle" in name or "bike" in name else None
    if cls != "car":
        return None
    if name in _EXCLUDED_NAMES or any(w in name for w in _EXCLUDED_WORDS):
        return None
    if any(w in name for w in _VAN_WORDS):
        return "Van"
    if any(w in name for w in _TRUCK_WORDS):
        length = float(record.get("extent_m", [10.0])[0])
        return "Van" if "bus" in name and length < 6.0 else "Truck"
    return "Car"


@dataclass
class CadModel:
    """One mesh ready to place: triangles with their bounding box centred at x = y = 0 and resting on z = 0."""

    file: str                     # catalog file, relative to the CAD folder
    role: str                     # see cad_role
    triangles: np.ndarray         # (F, 3, 3) float64
    part: np.ndarray              # (F,) int64 surface class (PAINT / GLASS / DARK, PERSON, BICYCLE)
    lightness: np.ndarray         # (F,) float64 face colour lightness 0-1
    extent: np.ndarray            # (3,) l, w, h
    size_kind: str = ""           # "van" / "truck" / "bus" for unlabelled vehicles
    rider: bool = False           # a person that can ride a bicycle (standing or walking pose)


@dataclass
class CadLibrary:
    """The usable meshes of a CAD folder, indexed by role (``riders``: the people that can ride a bicycle)."""

    root: str
    models: list[CadModel]
    by_role: dict[str, list[int]] = field(default_factory=dict)
    riders: list[int] = field(default_factory=list)

    def __post_init__(self):
        self.by_role = {}
        for k, m in enumerate(self.models):
            self.by_role.setdefault(m.role, []).append(k)
        self.riders = [k for k in self.by_role.get("Pedestrian", []) if self.models[k].rider]

    def pick(self, role: str, rng: np.random.Generator) -> CadModel:
        pool = self.by_role.get(role) or []
        if not pool:
            raise BadInputError(f"the CAD catalog has no usable {role} mesh", self.root)
        return self.models[pool[int(rng.integers(len(pool)))]]


def _vehicle_parts(tri: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Surface class of each face of a vehicle: GLASS, DARK or PAINT (see the module's docstring)."""
    h = max(float(tri[..., 2].max()), 1e-9)
    zc = tri[..., 2].mean(1) / h
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area2 = np.linalg.norm(n, axis=1)
    nz = np.abs(n[:, 2]) / np.maximum(area2, 1e-300)
    c = rgb.astype(np.float64)
    mx, mn = c.max(1), c.min(1)
    _, group = np.unique(rgb, axis=0, return_inverse=True)
    group = group.reshape(-1)
    share = np.bincount(group, area2) / max(float(area2.sum()), 1e-300)
    dominant = share[group] >= 0.25
    dark = (mx <= 75) & (mx - mn <= 25)
    cyan = (c[:, 1] >= 200) & (c[:, 2] >= 225) & (c[:, 2] - c[:, 0] >= 15)
    glass = (zc > 0.5) & (nz < 0.9) & ~dominant & (dark | cyan)
    part = np.full(len(tri), PAINT, dtype=np.int64)
    part[dark & ~dominant & ~glass] = DARK
    part[glass] = GLASS
    return part


def _load_model(root: Path, record: dict, role: str) -> CadModel:
    mesh = read_mesh(root / record["file"])
    used = mesh.vertices[np.unique(mesh.faces)]
    lo, hi = used.min(0), used.max(0)
    centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    tri = mesh.vertices[mesh.faces] - centre
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    ok = area > 1e-12
    tri, rgb = tri[ok], mesh.face_rgb[ok]
    if role in ("Car", "Van", "Truck"):
        part = _vehicle_parts(tri, rgb)
    else:
        part = np.full(len(tri), PERSON if role == "Pedestrian" else BICYCLE, dtype=np.int64)
    name = Path(record["file"]).stem.split("__")[-1].lower()
    kind = ""
    if role == "Van":
        kind = "van"
    elif role == "Truck":
        kind = "bus" if "bus" in name else "truck"
    rider = role == "Pedestrian" and ("standing" in name or "walking" in name) and "waving" not in name
    return CadModel(record["file"], role, tri, part, rgb.astype(np.float64).mean(1) / 255.0, hi - lo, kind, rider)


_LIBRARIES: dict[tuple, CadLibrary] = {}


def load_library(cad_root=None, research_only: bool = False) -> CadLibrary:
    """The usable meshes of a CAD folder (``catalog.json`` + PLY files), read once per process: cached by the
    catalog's path, size and modification time. Free objects only unless ``research_only`` (those are read
    from the folder, never copied)."""
    root = Path(cad_root) if cad_root is not None else default_cad_root()
    catalog = root / "catalog.json"
    if not catalog.is_file():
        raise BadInputError("no catalog.json: give the CAD folder of the shared data (../shared/data/cad)", str(root))
    st = catalog.stat()
    key = (str(catalog.resolve()), st.st_size, st.st_mtime_ns, bool(research_only))
    if key not in _LIBRARIES:
        records = json.loads(catalog.read_text())
        models = []
        for rec in records:                      # loop over catalog records
            if rec.get("licence_class") != "free" and not research_only:
                continue
            role = cad_role(rec)
            if role is not None and (root / rec["file"]).is_file():
                models.append(_load_model(root, rec, role))
        lib = CadLibrary(str(root), models)
        missing = [r for r in ("Car", "Pedestrian", "Bicycle") if not lib.by_role.get(r)]
        if missing:
            raise BadInputError(f"the CAD catalog has no usable {', '.join(missing)} mesh", str(root))
        _LIBRARIES[key] = lib
    return _LIBRARIES[key]


# ---------------------------------------------------------------------------------------------------------------
# Scene building
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class StreetScene:
    """A street as triangles, with the objects placed in it.

    ``triangles`` (F, 3, 3), ``face_class`` (F,) surface class (``SURFACES``), ``face_reflectance`` (F,),
    ``face_owner`` (F,) index of the object the face belongs to (-1: the street); per object its tight box
    (K, 7), name (Car, Pedestrian, Cyclist, Van, Truck) and the CAD file(s) it was made of. ``ground``: the road
    plane z = g0 x + g1 y + g2."""

    triangles: np.ndarray
    face_class: np.ndarray
    face_reflectance: np.ndarray
    face_owner: np.ndarray
    boxes: np.ndarray
    names: list[str]
    sources: list[str]
    ground: tuple[float, float, float]

    @property
    def vertices(self) -> np.ndarray:
        return self.triangles.reshape(-1, 3)

    @property
    def faces(self) -> np.ndarray:
        return np.arange(3 * len(self.triangles), dtype=np.int64).reshape(-1, 3)


class _Builder:
    """Collects triangles with their class, reflectance and owner."""

    def __init__(self):
        self.tris, self.cls, self.refl, self.owner = [], [], [], []

    def add(self, tris, cls, refl, owner: int = -1) -> None:
        tris = np.asarray(tris, dtype=np.float64).reshape(-1, 3, 3)
        n = len(tris)
        self.tris.append(tris)
        self.cls.append(np.broadcast_to(np.asarray(cls, dtype=np.int64), (n,)))
        self.refl.append(np.broadcast_to(np.asarray(refl, dtype=np.float64), (n,)))
        self.owner.append(np.full(n, owner, dtype=np.int64))

    def quads(self, corners, cls, refl, owner: int = -1) -> None:
        """(Q, 4, 3) quads, corners in order around the quad: two triangles each."""
        q = np.asarray(corners, dtype=np.float64).reshape(-1, 4, 3)
        self.add(np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]]), cls, refl, owner)

    def arrays(self):
        if not self.tris:
            return np.zeros((0, 3, 3)), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
        return (np.concatenate(self.tris), np.concatenate(self.cls), np.concatenate(self.refl),
                np.concatenate(self.owner))


def _prism(cx: float, cy: float, z0: float, z1: float, radius: float, sides: int = 6, phase: float = 0.0):
    """(sides, 4, 3) side quads of a vertical prism (no caps: the lidar sees the sides)."""
    a = phase + 2 * np.pi * np.arange(sides + 1) / sides
    x, y = cx + radius * np.cos(a), cy + radius * np.sin(a)
    lo, hi = np.full(sides, z0), np.full(sides, z1)
    return np.stack([np.stack([x[:-1], y[:-1], lo], -1), np.stack([x[1:], y[1:], lo], -1),
                     np.stack([x[1:], y[1:], hi], -1), np.stack([x[:-1], y[:-1], hi], -1)], axis=1)


def _box_quads(centre, size, yaw: float = 0.0):
    """(6, 4, 3) faces of a box."""
    c = np.array([[sx, sy, sz] for sx in (-0.5, 0.5) for sy in (-0.5, 0.5) for sz in (-0.5, 0.5)]) * size
    cs, sn = np.cos(yaw), np.sin(yaw)
    c = c @ np.array([[cs, -sn, 0], [sn, cs, 0], [0, 0, 1]]).T + np.asarray(centre)
    idx = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    return c[np.array(idx)]


_ICOSPHERE: np.ndarray | None = None


def _icosphere() -> np.ndarray:
    """(80, 3, 3) unit icosphere triangles (an icosahedron subdivided once)."""
    global _ICOSPHERE
    if _ICOSPHERE is None:
        t = (1 + 5 ** 0.5) / 2
        v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                      [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=np.float64)
        f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
                      [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
                      [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
        tri = v[f]
        a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
        ab, bc, ca = (a + b) / 2, (b + c) / 2, (c + a) / 2
        sub = np.concatenate([np.stack(x, 1) for x in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
        _ICOSPHERE = sub / np.linalg.norm(sub, axis=-1, keepdims=True)
    return _ICOSPHERE


def _draw_size(rng: np.random.Generator, mean, spread) -> np.ndarray:
    mean, spread = np.asarray(mean, float), np.asarray(spread, float)
    return mean + np.clip(rng.normal(0.0, 1.0, 3), -_SIZE_CLIP, _SIZE_CLIP) * spread


def _tight_box(tris: np.ndarray, x: float, y: float, yaw: float) -> np.ndarray:
    """Tight box of placed triangles in the yaw frame about (x, y)."""
    v = tris.reshape(-1, 3)
    c, s = np.cos(yaw), np.sin(yaw)
    dx, dy = v[:, 0] - x, v[:, 1] - y
    lx, ly = c * dx + s * dy, -s * dx + c * dy
    lo = np.array([lx.min(), ly.min(), v[:, 2].min()])
    hi = np.array([lx.max(), ly.max(), v[:, 2].max()])
    mid = (lo + hi) / 2
    return np.array([x + c * mid[0] - s * mid[1], y + s * mid[0] + c * mid[1], mid[2], *(hi - lo), wrap_angle(yaw)])


def _place(model: CadModel, scale, x: float, y: float, z: float, yaw: float, dx: float = 0.0) -> np.ndarray:
    """The model's triangles scaled per axis, shifted by ``dx`` along its own x, turned by ``yaw`` and set at
    (x, y) with its bottom at z."""
    v = model.triangles * np.asarray(scale, dtype=np.float64)
    v[..., 0] += dx
    c, s = np.cos(yaw), np.sin(yaw)
    out = np.empty_like(v)
    out[..., 0] = c * v[..., 0] - s * v[..., 1] + x
    out[..., 1] = s * v[..., 0] + c * v[..., 1] + y
    out[..., 2] = v[..., 2] + z
    return out


class _Street:
    """The random street being built (see :func:`street_layout`)."""

    def __init__(self, rng, lib: CadLibrary, extent: float):
        self.rng, self.lib, self.extent = rng, lib, extent
        self.b = _Builder()
        self.boxes, self.names, self.sources = [], [], []
        self.taken: list[np.ndarray] = []          # BEV footprints of everything that stands (collision tests)
        self.g = (0.0, 0.0, -1.73)                 # the road plane z = g0 x + g1 y + g2 (street_layout draws it)

    def gz(self, x, y):
        g = self.g
        return g[0] * np.asarray(x) + g[1] * np.asarray(y) + g[2]

    def free(self, box: np.ndarray, margin: float = 0.2) -> bool:
        if abs(box[0]) < 3.0 + box[3] / 2 and abs(box[1]) < 1.3 + box[4] / 2:     # the ego car
            return False
        if not self.taken:
            return True
        grown = np.array(box, dtype=np.float64)
        grown[3:5] += 2 * margin
        return float(intersection_area_bev(grown[None], np.array(self.taken)).max()) <= 0.0

    def refl(self, cls: int) -> float:
        lo, hi = _SURFACE[cls][:2]
        return float(self.rng.uniform(lo, hi))

    # -------------------------------------------------------------- objects
    def object_faces(self, model: CadModel, tris: np.ndarray, owner: int, paint: float) -> None:
        rng = self.rng
        refl = np.empty(len(tris))
        part = model.part
        refl[part == PAINT] = np.clip(paint + 0.15 * model.lightness[part == PAINT], 0.0, 1.0)
        for cls in (GLASS, DARK, PERSON, BICYCLE):
            m = part == cls
            if m.any():
                refl[m] = rng.uniform(*_SURFACE[cls][:2])
        self.b.add(tris, part, refl, owner)

    def draw_vehicle(self, role: str) -> tuple[CadModel, np.ndarray]:
        """A mesh of ``role`` and the (l, w, h) it will be scaled to."""
        model = self.lib.pick(role, self.rng)
        mean, spread = _SIZES["Car"] if role == "Car" else _CLUTTER_SIZES[model.size_kind]
        return model, _draw_size(self.rng, mean, spread)

    def vehicle(self, model: CadModel, size: np.ndarray, x: float, y: float, yaw: float) -> bool:
        """Place a drawn vehicle centred at (x, y) when it fits."""
        if not self.free(np.array([x, y, 0.0, size[0], size[1], size[2], yaw])):
            return False
        tris = _place(model, size / model.extent, x, y, float(self.gz(x, y)), yaw)
        k = len(self.boxes)
        self.boxes.append(_tight_box(tris, x, y, yaw))
        self.names.append(model.role)
        self.sources.append(model.file)
        self.taken.append(self.boxes[-1])
        self.object_faces(model, tris, k, float(self.rng.uniform(*_SURFACE[PAINT][:2])))
        return True

    def person(self, x: float, y: float, z: float, yaw: float) -> bool:
        rng = self.rng
        model = self.lib.pick("Pedestrian", rng)
        size = _draw_size(rng, *_SIZES["Pedestrian"])
        iso = size[2] / model.extent[2]
        scale = np.array([np.clip(size[0] / model.extent[0], iso / _PERSON_STRETCH, iso * _PERSON_STRETCH),
                          np.clip(size[1] / model.extent[1], iso / _PERSON_STRETCH, iso * _PERSON_STRETCH), iso])
        fp = model.extent * scale
        if not self.free(np.array([x, y, 0.0, fp[0], fp[1], fp[2], yaw]), 0.3):
            return False
        tris = _place(model, scale, x, y, z, yaw)
        k = len(self.boxes)
        self.boxes.append(_tight_box(tris, x, y, yaw))
        self.names.append("Pedestrian")
        self.sources.append(model.file)
        self.taken.append(self.boxes[-1])
        self.object_faces(model, tris, k, 0.0)
        return True

    def cyclist(self, x: float, y: float, z: float, yaw: float) -> bool:
        rng, lib = self.rng, self.lib
        bike = lib.pick("Bicycle", rng)
        rider = lib.models[lib.riders[int(rng.integers(len(lib.riders)))]] if lib.riders else \
            lib.pick("Pedestrian", rng)
        size = _draw_size(rng, *_SIZES["Cyclist"])
        s_bike = size[0] / bike.extent[0]
        s_rider = size[2] / rider.extent[2]
        if not self.free(np.array([x, y, 0.0, size[0], max(size[1], 0.6), size[2], yaw]), 0.3):
            return False
        tris_b = _place(bike, s_bike, x, y, z, yaw)
        tris_r = _place(rider, s_rider, x, y, z, yaw, dx=-0.12 * size[0])
        k = len(self.boxes)
        self.boxes.append(_tight_box(np.concatenate([tris_b, tris_r]), x, y, yaw))
        self.names.append("Cyclist")
        self.sources.append(f"{bike.file} + {rider.file}")
        self.taken.append(self.boxes[-1])
        self.object_faces(bike, tris_b, k, 0.0)
        self.object_faces(rider, tris_r, k, 0.0)
        return True

    # -------------------------------------------------------------- street furniture
    def tree(self, x: float, y: float, z: float) -> None:
        rng = self.rng
        r_trunk, h_trunk = rng.uniform(0.1, 0.25), rng.uniform(1.8, 3.5)
        rx, rz = rng.uniform(1.2, 3.0), rng.uniform(1.0, 2.5)
        box = np.array([x, y, 0, 2 * r_trunk, 2 * r_trunk, 1, 0.0])
        if not self.free(box, 0.3):
            return
        self.taken.append(box)
        self.b.quads(_prism(x, y, z - 0.1, z + h_trunk + 0.5 * rz, r_trunk, 6, rng.uniform(0, np.pi)), TRUNK,
                     self.refl(TRUNK))
        # jitter the 42 vertices of the crown (each shared by several triangles) by a radial factor
        flat = _icosphere().reshape(-1, 3)
        keys = np.round(flat * 1e6).astype(np.int64)
        _, inv = np.unique(keys, axis=0, return_inverse=True)
        jitter = rng.uniform(0.8, 1.2, inv.max() + 1)[inv.reshape(-1)]
        flat = flat * jitter[:, None] * np.array([rx, rx * rng.uniform(0.8, 1.2), rz])
        flat += np.array([x, y, z + h_trunk + 0.7 * rz])
        self.b.add(flat.reshape(-1, 3, 3), FOLIAGE, self.refl(FOLIAGE))

    def pole(self, x: float, y: float, z: float, towards_road: float) -> None:
        rng = self.rng
        lamp = rng.random() < 0.5
        r = rng.uniform(0.06, 0.12) if lamp else rng.uniform(0.04, 0.07)
        h = rng.uniform(6.0, 9.0) if lamp else rng.uniform(2.2, 3.5)
        box = np.array([x, y, 0, 2 * r, 2 * r, 1, 0.0])
        if not self.free(box, 0.3):
            return
        self.taken.append(box)
        refl = self.refl(POLE)
        self.b.quads(_prism(x, y, z - 0.1, z + h, r, 6), POLE, refl)
        if lamp:                                 # an arm over the road
            arm = rng.uniform(1.0, 2.5)
            self.b.quads(_box_quads([x, y + towards_road * arm / 2, z + h - 0.1], [0.15, arm, 0.12]), POLE, refl)
        else:                                    # a sign
            w = rng.uniform(0.5, 0.9)
            yaw = rng.uniform(-np.pi, np.pi)
            self.b.quads(_box_quads([x, y, z + h - w / 2], [0.03, w, w], yaw), POLE, self.refl(POLE) + 0.2)

    def bollards(self, x0: float, y: float, z_of, count: int) -> None:
        rng = self.rng
        refl = self.refl(POLE)
        r, h = rng.uniform(0.06, 0.12), rng.uniform(0.7, 1.1)
        for i in range(count):                   # loop over bollards
            x = x0 + 1.5 * i
            box = np.array([x, y, 0, 2 * r, 2 * r, 1, 0.0])
            if self.free(box, 0.2):
                self.taken.append(box)
                self.b.quads(_prism(x, y, z_of(x) - 0.1, z_of(x) + h, r, 6), POLE, refl)

    def facade(self, x0: float, x1: float, y: float, side: float, z_base: float, height: float, windows: bool) -> None:
        """A building front from x0 to x1 in the plane y, on the ``side`` of the road (+1: left, the front faces
        -y), standing ``z_base`` above the road plane, with rows of recessed windows (glass at the back) when
        ``windows``, and side walls going back into the block."""
        rng = self.rng
        wall = self.refl(WALL)
        depth = rng.uniform(8.0, 15.0)

        def z_of(x):
            return float(self.gz(x, y)) + z_base

        def upright(xa, xb, za, zb, ya, yb):
            """A vertical quad from (xa, ya) to (xb, yb), za to zb above the ground (z follows the slope)."""
            return [[xa, ya, z_of(xa) + za], [xb, yb, z_of(xb) + za], [xb, yb, z_of(xb) + zb], [xa, ya, z_of(xa) + zb]]

        bottom, top = -0.3, height
        quads = [upright(xe, xe, bottom, top, y, y + side * depth) for xe in (x0, x1)]   # side walls
        floor_h = rng.uniform(2.8, 3.6)
        n_floors = max(1, int(height // floor_h))
        ww, wh, sill = rng.uniform(0.8, 1.6), rng.uniform(1.0, 1.6), rng.uniform(0.6, 1.0)
        wh = min(wh, floor_h - sill - 0.3)
        pitch = ww + rng.uniform(0.8, 2.5)
        n_win = int((x1 - x0 - 1.0) // pitch)
        recess = rng.uniform(0.1, 0.3)
        if not windows or n_win < 1:
            quads.append(upright(x0, x1, bottom, top, y, y))
            self.b.quads(np.array(quads), WALL, wall)
            return
        margin = (x1 - x0 - n_win * pitch) / 2
        edges = [bottom]                         # bands: wall, window row, wall, ..., wall
        for f in range(n_floors):                # loop over floors
            edges += [f * floor_h + sill, f * floor_h + sill + wh]
        edges.append(top)
        for k in range(0, len(edges) - 1, 2):    # full-width wall bands
            quads.append(upright(x0, x1, edges[k], edges[k + 1], y, y))
        yr = y + side * recess
        xs = [x0] + [x0 + margin + i * pitch + off for i in range(n_win)
                     for off in ((pitch - ww) / 2, (pitch + ww) / 2)] + [x1]
        glass = []
        for k in range(1, len(edges) - 1, 2):    # window rows: piers, then recessed windows
            za, zb = edges[k], edges[k + 1]
            quads += [upright(xs[i], xs[i + 1], za, zb, y, y) for i in range(0, len(xs), 2)]
            for i in range(1, len(xs) - 1, 2):   # glass at the back, four reveals
                xa, xb = xs[i], xs[i + 1]
                glass.append(upright(xa, xb, za, zb, yr, yr))
                quads += [upright(xe, xe, za, zb, y, yr) for xe in (xa, xb)]
                quads += [[[xa, y, z_of(xa) + ze], [xb, y, z_of(xb) + ze], [xb, yr, z_of(xb) + ze],
                           [xa, yr, z_of(xa) + ze]] for ze in (za, zb)]
        self.b.quads(np.array(quads), WALL, wall)
        self.b.quads(np.array(glass), WINDOW, self.refl(WINDOW))


def street_layout(rng: np.random.Generator, library: CadLibrary | None = None, extent: float = 80.0,
                  lanes=(1, 3), parked: float = 0.75, n_traffic=(0, 4), n_pedestrians=(0, 8), n_cyclists=(0, 3),
                  slope: float = 0.3) -> StreetScene:
    """A random street (see the module's docstring) from ``extent`` metres behind the sensor to ``extent`` ahead.

    ``lanes``: (low, high) lanes each way; ``parked``: probability of a parked row on each side;
    ``n_traffic``: (low, high) moving vehicles per lane; ``n_pedestrians`` and ``n_cyclists``: (low, high) per
    frame (fewer when they do not fit); ``slope``: probability that the road is tilted by up to 2 degrees
    along x (otherwise up to 0.6)."""
    lib = library if library is not None else load_library()
    s = _Street(rng, lib, extent)
    b = s.b
    pitch = np.deg2rad(rng.uniform(-2.0, 2.0) if rng.random() < slope else rng.uniform(-0.6, 0.6))
    roll = np.deg2rad(rng.uniform(-0.5, 0.5))
    s.g = (float(np.tan(pitch)), float(np.tan(roll)), -float(rng.uniform(1.65, 1.8)))
    X = extent + 10.0
    n_lanes = int(rng.integers(lanes[0], lanes[1] + 1))
    lane_w = float(rng.uniform(3.0, 3.6))
    ego_lane = int(rng.integers(n_lanes))
    y_c = (ego_lane + 0.5) * lane_w              # the centre line; lanes going +x are at y < y_c
    kerb_h = float(rng.uniform(0.10, 0.15))
    sides = {}
    for side in (-1.0, 1.0):                     # -1: right of the sensor (y < 0), +1: left
        park = rng.random() < parked
        park_w = float(rng.uniform(2.0, 2.5)) if park else 0.0
        gutter = 0.0 if park else float(rng.uniform(0.3, 0.8))
        y_kerb = y_c + side * (n_lanes * lane_w + park_w + gutter)
        pav_w = float(rng.uniform(1.8, 4.5))
        sides[side] = dict(park=park, park_w=park_w, y_kerb=y_kerb, y_out=y_kerb + side * pav_w, pav_w=pav_w)

    # road, markings, kerbs, pavements, ground beyond
    yr, yl = sides[-1.0]["y_kerb"], sides[1.0]["y_kerb"]

    def flat(x0, x1, y0, y1, dz):
        return [[x0, y0, s.gz(x0, y0) + dz], [x1, y0, s.gz(x1, y0) + dz], [x1, y1, s.gz(x1, y1) + dz],
                [x0, y1, s.gz(x0, y1) + dz]]

    b.quads(np.array([flat(-X, X, yr, yl, 0.0)]), ROAD, s.refl(ROAD))
    marks = []
    lw = 0.12
    for side in (-1.0, 1.0):
        for k in range(1, n_lanes):              # dashed lines between lanes of one direction
            ym = y_c + side * k * lane_w
            x = -X + rng.uniform(0, 9.0)
            while x < X:
                marks.append(flat(x, min(x + 3.0, X), ym - lw / 2, ym + lw / 2, 0.005))
                x += 9.0
        ye = y_c + side * n_lanes * lane_w       # edge line
        marks.append(flat(-X, X, ye - lw / 2, ye + lw / 2, 0.005))
    marks.append(flat(-X, X, y_c - lw / 2, y_c + lw / 2, 0.005))
    b.quads(np.array(marks), MARKING, s.refl(MARKING))
    pav = s.refl(PAVEMENT)
    for side, sd in sides.items():
        yk, yo = sd["y_kerb"], sd["y_out"]
        b.quads(np.array([[[-X, yk, s.gz(-X, yk)], [X, yk, s.gz(X, yk)], [X, yk, s.gz(X, yk) + kerb_h],
                           [-X, yk, s.gz(-X, yk) + kerb_h]]]), KERB, s.refl(KERB))
        b.quads(np.array([flat(-X, X, yk, yk + side * 0.25, kerb_h)]), KERB, s.refl(KERB))
        b.quads(np.array([flat(-X, X, yk + side * 0.25, yo, kerb_h)]), PAVEMENT, pav)
        b.quads(np.array([flat(-X, X, yo, yo + side * 60.0, kerb_h)]), GROUND, s.refl(GROUND))

    # lots beyond the pavements: buildings, low walls, open ground (with trees)
    for side, sd in sides.items():
        yo = sd["y_out"]
        x = -X + rng.uniform(-10.0, 0.0)
        while x < X:
            length = float(rng.uniform(8.0, 35.0))
            x0, x1 = x, min(x + length, X + 5.0)
            kind = rng.random()
            if kind < 0.65:
                setback = 0.0 if rng.random() < 0.6 else float(rng.uniform(0.5, 5.0))
                s.facade(x0, x1, yo + side * setback, side, kerb_h, float(rng.uniform(4.0, 20.0)), rng.random() < 0.75)
                s.taken.append(np.array([(x0 + x1) / 2, yo + side * (setback + 6.0), 0, x1 - x0, 12.0, 1, 0.0]))
            elif kind < 0.8:
                h, t = float(rng.uniform(0.6, 2.2)), 0.25
                yw = yo + side * rng.uniform(0.0, 2.0)
                zc = float(s.gz((x0 + x1) / 2, yw)) + kerb_h
                b.quads(_box_quads([(x0 + x1) / 2, yw + side * t / 2, zc + h / 2 - 0.15], [x1 - x0, t, h + 0.3]),
                        WALL, s.refl(WALL))
                s.taken.append(np.array([(x0 + x1) / 2, yw + side * t / 2, 0, x1 - x0, t, 1, 0.0]))
            else:
                for _ in range(int(rng.integers(0, 4))):
                    tx, ty = rng.uniform(x0, x1), yo + side * rng.uniform(2.0, 15.0)
                    s.tree(tx, ty, float(s.gz(tx, ty)) + kerb_h)
            x = x1 + (rng.uniform(1.0, 4.0) if rng.random() < 0.3 else 0.0)

    def z_pav(x, y):
        return float(s.gz(x, y)) + kerb_h

    # street furniture along the kerb
    for side, sd in sides.items():
        yk = sd["y_kerb"]
        if rng.random() < 0.5:
            x = -X + rng.uniform(0, 10.0)
            y_t = yk + side * rng.uniform(0.6, 1.2)
            while x < X:
                s.tree(x, y_t, z_pav(x, y_t))
                x += rng.uniform(7.0, 15.0)
        if rng.random() < 0.8:
            x = -X + rng.uniform(0, 20.0)
            while x < X:
                yp = yk + side * rng.uniform(0.3, 0.6)
                s.pole(x, yp, z_pav(x, yp), -side)
                x += rng.uniform(15.0, 40.0)
        if rng.random() < 0.3:
            x0 = rng.uniform(-0.6 * X, 0.6 * X)
            yb = yk + side * 0.3
            s.bollards(x0, yb, lambda x, yb=yb: z_pav(x, yb), int(rng.integers(3, 9)))

    # parked rows
    for side, sd in sides.items():
        if not sd["park"]:
            continue
        heading = 0.0 if side < 0 else np.pi     # driving on the right
        x = -X + rng.uniform(0.0, 5.0)
        while x < X:
            role = "Car" if rng.random() < 0.88 else ("Van" if rng.random() < 0.7 else "Truck")
            yaw = heading + (np.pi if rng.random() < 0.15 else 0.0) + np.deg2rad(rng.normal(0, 2.0))
            y_lane = sd["y_kerb"] - side * (sd["park_w"] / 2 + rng.uniform(-0.2, 0.1))
            model, size = s.draw_vehicle(role)
            s.vehicle(model, size, x + size[0] / 2, y_lane, float(wrap_angle(yaw)))
            step = float(size[0])
            x += step + rng.uniform(0.4, 1.5)
            if rng.random() < 0.15:              # an empty stretch
                x += rng.uniform(5.0, 20.0)

    # moving traffic
    for side in (-1.0, 1.0):
        heading = 0.0 if side < 0 else np.pi
        for k in range(n_lanes):                 # loop over lanes
            y_lane = y_c + side * (k + 0.5) * lane_w
            for _ in range(int(rng.integers(n_traffic[0], n_traffic[1] + 1))):
                x = rng.uniform(-extent, extent)
                if abs(y_lane) < lane_w / 2 and abs(x) < 7.0:
                    continue                     # keep clear of the ego car and its headway
                role = "Car" if rng.random() < 0.85 else ("Van" if rng.random() < 0.7 else "Truck")
                yaw = heading + np.deg2rad(rng.normal(0, 1.5))
                model, size = s.draw_vehicle(role)
                s.vehicle(model, size, x, y_lane + rng.normal(0, 0.2), float(wrap_angle(yaw)))

    # pedestrians on the pavements
    for _ in range(int(rng.integers(n_pedestrians[0], n_pedestrians[1] + 1))):
        side = float(rng.choice([-1.0, 1.0]))
        sd = sides[side]
        x = rng.uniform(-0.7 * extent, 0.7 * extent)
        y = sd["y_kerb"] + side * rng.uniform(0.4, max(sd["pav_w"] - 0.3, 0.5))
        yaw = rng.choice([0.0, np.pi]) + rng.normal(0, 0.2) if rng.random() < 0.6 else rng.uniform(-np.pi, np.pi)
        for _attempt in range(5):
            if s.person(x, y, float(s.gz(x, y)) + kerb_h, float(wrap_angle(yaw))):
                break
            x = rng.uniform(-0.7 * extent, 0.7 * extent)

    # cyclists at the edge of the road (or on the pavement)
    for _ in range(int(rng.integers(n_cyclists[0], n_cyclists[1] + 1))):
        side = float(rng.choice([-1.0, 1.0]))
        sd = sides[side]
        heading = 0.0 if side < 0 else np.pi
        for _attempt in range(5):
            x = rng.uniform(-0.7 * extent, 0.7 * extent)
            if rng.random() < 0.75:
                y, z = y_c + side * (n_lanes * lane_w - rng.uniform(0.5, 1.0)), None
            else:
                y, z = sd["y_kerb"] + side * rng.uniform(0.5, max(sd["pav_w"] - 0.5, 0.6)), kerb_h
            zz = float(s.gz(x, y)) + (z or 0.0)
            if s.cyclist(x, y, zz, float(wrap_angle(heading + rng.normal(0, 0.1)))):
                break

    tris, cls, refl, owner = b.arrays()
    return StreetScene(tris, cls, refl, owner, np.array(s.boxes, dtype=np.float64).reshape(-1, 7), list(s.names),
                       list(s.sources), tuple(float(v) for v in s.g))


# ---------------------------------------------------------------------------------------------------------------
# Scanning
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class StreetScan:
    """A scan of a :class:`StreetScene`: ``points`` (N, 4) float32 and, per point, the ray (index into the
    ``_hdl64_directions`` pattern), the face hit, its surface class and its object (-1: the street);
    ``counts`` (K,) returns per object."""

    points: np.ndarray
    ray: np.ndarray
    face: np.ndarray
    surface: np.ndarray
    owner: np.ndarray
    counts: np.ndarray


def scan_street(scene: StreetScene, rng: np.random.Generator, azimuth_steps: int = 2048, max_range: float = 80.0,
                range_noise: float = 0.02, dropout: float = 0.02) -> StreetScan:
    """Cast the 64-beam pattern from the origin onto the scene (nearest triangle per ray, exact), then noise,
    dropout and intensity per return (see the module's docstring)."""
    dirs, _ = _hdl64_directions(azimuth_steps)
    t, face = cast_mesh_rays(scene.vertices, scene.faces, np.zeros(3), dirs, max_range)
    # rays through glass: cast again against the opaque faces only
    through = (face >= 0) & (rng.random(len(face)) < _TRANSMIT[scene.face_class[np.maximum(face, 0)]])
    if through.any():
        opaque = np.flatnonzero(_TRANSMIT[scene.face_class] == 0)
        t2, f2 = cast_mesh_rays(scene.vertices, scene.faces[opaque], np.zeros(3), dirs[through], max_range)
        t[through], face[through] = t2, np.where(f2 >= 0, opaque[np.maximum(f2, 0)], -1)
    ray = np.flatnonzero(face >= 0)
    f, t, d = face[ray], t[ray], dirs[ray]
    tri = scene.triangles[f]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)
    cos = np.clip(np.abs(np.einsum("ij,ij->i", n, d)), 0.0, 1.0)
    cls = scene.face_class[f]
    refl = scene.face_reflectance[f]
    p = (dropout + _EXTRA_DROP[cls] + 0.3 * np.clip((0.05 - cos) / 0.05, 0.0, 1.0) + 0.2 * (refl < 0.03)
         + 0.05 * (t / max_range) ** 2)
    u = rng.random(len(t))
    noise = np.clip(rng.normal(0.0, 1.0, len(t)), -4.0, 4.0) * range_noise
    gain = 1.0 + rng.normal(0.0, 0.08, len(t))
    offset = rng.normal(-0.01, 0.01, len(t))
    keep = u >= p
    r = t + noise
    falloff = np.where(_SPECULAR[cls], cos ** 3, 0.45 + 0.55 * cos)
    intensity = np.clip(refl * falloff * gain + offset, 0.0, 1.0)
    xyz = d * r[:, None]
    points = np.concatenate([xyz, intensity[:, None]], 1)[keep].astype(np.float32)
    owner = scene.face_owner[f][keep]
    counts = np.bincount(owner[owner >= 0], minlength=len(scene.boxes))
    return StreetScan(points, ray[keep], f[keep], cls[keep], owner, counts)


def mesh_street_scene(rng: np.random.Generator, azimuth_steps: int = 2048, max_range: float = 80.0,
                      range_noise: float = 0.02, min_points: int = 5, dropout: float = 0.02, cad=None,
                      research_only: bool = False, details: bool = False, **layout_options):
    """A synthetic lidar frame of a street of CAD meshes: (points (N, 4) float32 x, y, z, intensity, boxes (B, 7),
    names), like :func:`pcseg.data.detection.synthetic_scene`.

    :func:`street_layout` builds the street (``layout_options`` go to it), :func:`scan_street` scans it. Objects
    hit by fewer than ``min_points`` returns are not labelled (their points stay); the names are Car,
    Pedestrian, Cyclist and, for the unlabelled-class vehicles, Van and Truck. ``cad``: the CAD folder (default
    :func:`default_cad_root`). ``details``: also return the :class:`StreetScene` and :class:`StreetScan` (the
    boxes and names then are those of the labelled objects, ``scene`` holds all)."""
    lib = load_library(cad, research_only)
    scene = street_layout(rng, lib, **layout_options)
    scan = scan_street(scene, rng, azimuth_steps, max_range, range_noise, dropout)
    labelled = scan.counts >= min_points
    boxes = scene.boxes[labelled]
    names = [n for n, k in zip(scene.names, labelled) if k]
    if details:
        return scan.points, boxes, names, (scene, scan)
    return scan.points, boxes, names
