"""Triangle-mesh ray casting against a direct, slow Möller-Trumbore loop, and the PLY mesh reader on the real
CAD meshes of ../shared/data/cad."""
from __future__ import annotations

import json

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from pcseg.errors import BadInputError
from pcseg.geometry.raycast import cast_rays, spherical_directions
from pcseg.io import TriangleMesh, concatenate, read_mesh, transform


def slow_cast(vertices, faces, origin, directions, max_range=np.inf, grow=0.0):
    """Textbook Möller-Trumbore, one ray at a time against every triangle: (t, face, second t) of the nearest
    hit with 0 < t <= max_range (lowest face on equal t), the next nearest hit's t (inf when none).
    ``grow`` widens (> 0) or narrows (< 0) every triangle in barycentric terms: a ray whose answer changes
    between +-1e-9 passes within rounding of an edge, where either answer is right."""
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area2 = np.linalg.norm(np.cross(e1, e2), axis=1)
    tvec = np.asarray(origin, dtype=np.float64) - v0
    q = np.cross(tvec, e1)
    n = len(directions)
    out_t, out_f, out_t2 = np.full(n, np.inf), np.full(n, -1), np.full(n, np.inf)
    for i, d in enumerate(np.asarray(directions, dtype=np.float64)):
        d = d / np.linalg.norm(d)
        p = np.cross(d, e2)
        det = np.einsum("ij,ij->i", e1, p)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.einsum("ij,ij->i", tvec, p) / det
            v = (q @ d) / det
            t = np.einsum("ij,ij->i", e2, q) / det
            ok = ((np.abs(det) > 1e-12 * area2) & (u >= -grow) & (v >= -grow) & (u + v <= 1 + grow) & (t > 0)
                  & (t <= max_range))
        j = np.flatnonzero(ok)
        if len(j):
            j = j[np.lexsort((j, t[j]))]
            out_t[i], out_f[i] = t[j[0]], j[0]
            if len(j) > 1:
                out_t2[i] = t[j[1]]
    return out_t, out_f, out_t2


def assert_matches_slow(vertices, faces, origin, directions, max_range=np.inf, min_unique=0.9):
    """cast_rays against slow_cast: same face and t within 1e-9 (relative) wherever the nearest hit is clear
    (no edge within rounding, next hit more than 1e-7 farther); elsewhere t equals one of the edge readings."""
    t, f = cast_rays(vertices, faces, origin, directions, max_range=max_range)
    wide = slow_cast(vertices, faces, origin, directions, max_range, grow=1e-9)
    narrow = slow_cast(vertices, faces, origin, directions, max_range, grow=-1e-9)
    assert t.dtype == np.float64 and f.dtype == np.int64 and t.shape == f.shape == (len(directions),)

    def close(a, b):
        both_inf = np.isinf(a) & np.isinf(b)
        with np.errstate(invalid="ignore"):
            return both_inf | (np.abs(a - b) <= 1e-9 * np.maximum(np.abs(b), 1e-300))

    clear = (wide[1] == narrow[1]) & close(wide[0], narrow[0])
    unique = clear & ~(np.isfinite(wide[2]) & (wide[2] <= wide[0] * (1 + 1e-7)))
    assert unique.mean() >= min_unique, unique.mean()
    bad = np.flatnonzero(unique & ~((f == narrow[1]) & close(t, narrow[0])))
    assert len(bad) == 0, f"{len(bad)} rays differ, first {bad[:5]}: {t[bad[:5]]} {f[bad[:5]]} vs " \
                          f"{narrow[0][bad[:5]]} {narrow[1][bad[:5]]}"
    rest = ~unique
    assert np.all(close(t[rest], wide[0][rest]) | close(t[rest], narrow[0][rest]))
    assert np.array_equal(f == -1, np.isinf(t))
    return t, f


def aimed_rays(rng, vertices, faces, origin, n, pick=None):
    """Rays from ``origin`` to uniformly random points of random (or the ``pick``) triangles, at random lengths."""
    tri = np.asarray(vertices)[np.asarray(faces)]
    which = rng.integers(0, len(tri), n) if pick is None else rng.choice(np.asarray(pick), n)
    a, b = rng.random(n), rng.random(n)
    flip = a + b > 1
    a[flip], b[flip] = 1 - a[flip], 1 - b[flip]
    points = tri[which, 0] + a[:, None] * (tri[which, 1] - tri[which, 0]) + b[:, None] * (tri[which, 2] - tri[which, 0])
    return (points - origin) * rng.uniform(0.2, 5.0, (n, 1))


def triangle_soup(rng):
    """Random triangles around the origin plus the cases the angular boxes must get right; the index ranges
    of the special ones are returned by name."""
    parts, names = [], {}

    def add(name, tris):
        start = sum(len(p) for p in parts)
        parts.append(np.asarray(tris, dtype=np.float64).reshape(-1, 3, 3))
        names[name] = np.arange(start, start + len(parts[-1]))

    centre = rng.normal(size=(150, 1, 3)) * 4
    add("random", centre + rng.normal(size=(150, 3, 3)) * rng.uniform(0.05, 2.0, (150, 1, 1)))
    # poles: over and under the origin (x, y projection holds it), at several heights
    add("pole", [[[-0.3, -0.3, 2], [0.4, -0.2, 2.1], [0.0, 0.4, 1.9]], [[-0.4, -0.3, -1], [0.5, -0.2, -1.1],
                 [0.1, 0.5, -0.9]], [[0.001, -1, 3], [0.001, 1, 3], [1, 0, 3.2]]])
    # the highest / lowest point inside an edge or the face, not at a vertex: long triangles passing close by
    add("edge-extreme", [[[-6, 0.3, 1.0], [6, 0.3, 1.2], [6, 2, 1.1]],
                         [[-4, -0.2, -0.7], [5, -0.25, -0.7], [0, -3, -0.6]], [[0.4, -5, 3], [0.5, 5, 3], [2, 0, 0.0]]])
    # across the -x axis (vertex azimuths on both sides of +-pi), near and far, and one touching the axis
    add("seam", [[[-3, -0.2, 0], [-3, 0.3, 1], [-2.5, 0.1, -1]], [[-20, -4, -1], [-20, 3, 2], [-25, 0.5, 0]],
                 [[-1, 0, 0.5], [-2, 0.8, -0.5], [-1.5, -0.01, -0.3]], [[-4, 0.5, 3], [-4, -1, 1.5], [-4, 2, 1.5]]])
    # a huge floor under the scanner (holds the origin's x, y) and a huge wall
    add("huge", [[[-500, -500, -1.5], [500, -500, -1.5], [0, 600, -1.5]],
                 [[30, -400, -300], [30, 400, -300], [30, 0, 400]]])
    # tiny far triangles, in the upper half where nothing huge hides them
    far = rng.normal(size=(20, 1, 3))
    far[..., 2] = np.abs(far[..., 2]) + 0.5
    far = 25 * far / np.linalg.norm(far, axis=2, keepdims=True)
    add("tiny", far + rng.normal(size=(20, 3, 3)) * 1e-3)
    tris = np.concatenate(parts)
    # shuffle vertex order, so that no special case relies on the first corner
    order = np.argsort(rng.random((len(tris), 3)), axis=1)
    tris = np.take_along_axis(tris, order[:, :, None], axis=1)
    return tris.reshape(-1, 3), np.arange(3 * len(tris)).reshape(-1, 3), names


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cast_rays_matches_slow_loop_on_triangle_soups(seed):
    rng = np.random.default_rng(seed)
    vertices, faces, names = triangle_soup(rng)
    origin = np.zeros(3) if seed == 0 else rng.normal(size=3) * 0.05
    special = np.concatenate([names[k] for k in ("pole", "edge-extreme", "seam", "huge", "tiny")])
    dirs = np.concatenate([
        rng.normal(size=(1000, 3)),
        aimed_rays(rng, vertices, faces, origin, 1000),
        aimed_rays(rng, vertices, faces, origin, 1000, pick=special),
        [[0, 0, 1], [0, 0, -1], [0, 0, 3.5], [-1, 0, 0], [-1, 1e-17, 0], [-1, -1e-17, 0.1], [-2, 0, -0.4]],
    ])
    t, f = assert_matches_slow(vertices, faces, origin, dirs)
    # the special cases alone (the random triangles hide some of them): every one of them is hit
    alone = faces[special]
    t_alone, f_alone = assert_matches_slow(vertices, alone, origin, dirs[2000:])
    hit = np.isin(np.arange(len(special)), f_alone)
    tiny = np.isin(special, names["tiny"])
    assert hit[~tiny].all() and hit[tiny].sum() >= 5  # tiny ones can hide behind the others
    hits = np.unique(t[np.isfinite(t)])
    cut = float(hits[len(hits) // 2: len(hits) // 2 + 2].mean())  # between two hits: no tie at max_range
    t_cut, f_cut = assert_matches_slow(vertices, faces, origin, dirs, max_range=cut)
    assert np.all(t_cut[np.isfinite(t_cut)] <= cut) and np.isinf(t_cut).sum() > np.isinf(t).sum()


def test_block_size_does_not_change_the_result():
    rng = np.random.default_rng(5)
    vertices, faces, _ = triangle_soup(rng)
    dirs = np.concatenate([rng.normal(size=(500, 3)), aimed_rays(rng, vertices, faces, np.zeros(3), 500)])
    t, f = cast_rays(vertices, faces, np.zeros(3), dirs)
    assert np.isfinite(t).sum() > 500
    for chunk in (1, 7, 1000):
        t2, f2 = cast_rays(vertices, faces, np.zeros(3), dirs, chunk=chunk)
        assert np.array_equal(t, t2) and np.array_equal(f, f2)


def test_angular_box_cases_one_by_one():
    # The highest point of this triangle is inside its near edge, 73 degrees up; its corners are at most 30.
    v = np.array([[-6, 0.3, 1.0], [6, 0.3, 1.0], [0, 3, 1.0]])
    t, f = cast_rays(v, [[0, 1, 2]], np.zeros(3), [[0, 0.3001, 1.0]])
    assert f[0] == 0 and t[0] == pytest.approx(np.hypot(0.3001, 1.0))
    # Straight above and below: the projection holds the origin, every azimuth and +-90 degrees.
    v = np.array([[-1, -1, 2], [2, -1, 2], [0, 2, 2], [-1, -1, -3], [2, -1, -3], [0, 2, -3]])
    t, f = cast_rays(v, [[0, 1, 2], [3, 4, 5]], np.zeros(3), [[0, 0, 1], [0, 0, -2], [1e-9, 0, 1], [0.3, -0.2, 1]])
    assert f.tolist() == [0, 1, 0, 0] and t[:2].tolist() == [2.0, 3.0]
    # Across the -x axis: corner azimuths +170 and -170 degrees; rays at exactly +-pi and just either side.
    v = np.array([[-5, 0.9, -1], [-5, -0.9, -1], [-5, 0.0, 1]])
    dirs = [[-1, 0, 0], [-1, -0.0, 0], [-1, 1e-12, 0], [-1, -1e-12, 0], [-1, 0.17, -0.19], [1, 0, 0]]
    t, f = cast_rays(v, [[0, 1, 2]], np.zeros(3), dirs)
    assert f.tolist() == [0, 0, 0, 0, 0, -1] and t[0] == pytest.approx(5.0)
    # Behind the origin (t < 0) and in the plane of the ray: no hit; t counts metres along the unit direction.
    v = np.array([[1, -1, -1], [1, 1, -1], [1, 0, 1]])
    t, f = cast_rays(v, [[0, 1, 2]], [0.0, 0, 0], [[-1, 0, 0], [10, 0, 0], [0, 1, 0]], max_range=50)
    assert f.tolist() == [-1, 0, -1] and t[1] == 1.0
    t, f = cast_rays(v, [[0, 1, 2]], [0.0, 0, 0], [[10, 0, 0]], max_range=0.999)
    assert f.tolist() == [-1] and np.isinf(t[0])
    # Every ray the same (one cell of the image): each one still hits.
    t, f = cast_rays(v, [[0, 1, 2]], [0.0, 0, 0], np.tile([[10.0, 0.1, 0.2]], (300, 1)))
    assert np.all(f == 0) and np.allclose(t, np.hypot(1, np.hypot(0.01, 0.02)))
    with pytest.raises(ValueError, match="zero"):
        cast_rays(v, [[0, 1, 2]], np.zeros(3), [[1, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="max_range"):
        cast_rays(v, [[0, 1, 2]], np.zeros(3), [[1, 0, 0]], max_range=0)
    with pytest.raises(ValueError, match="face indices"):
        cast_rays(v, [[0, 1, 3]], np.zeros(3), [[1, 0, 0]])
    t, f = cast_rays(v, np.zeros((0, 3), np.int64), np.zeros(3), [[1, 0, 0]])
    assert f.tolist() == [-1] and np.isinf(t[0])


def box_mesh(lo, hi) -> TriangleMesh:
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    v = np.array([[x, y, z] for z in (lo[2], hi[2]) for y in (lo[1], hi[1]) for x in (lo[0], hi[0])])
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 5, 7], [4, 7, 6], [0, 1, 5], [0, 5, 4],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 3, 7], [1, 7, 5]])
    return TriangleMesh(v, f, np.full((12, 3), 200, np.uint8))


def test_closed_box_seen_from_inside():
    box = box_mesh([-3, -2.5, 0], [3, 2.5, 3])
    origin = np.array([0.7, -0.4, 1.6])
    el = np.linspace(-np.pi / 2, np.pi / 2, 181)  # includes both poles: rays straight up and down
    dirs = spherical_directions(360, el)          # includes azimuth -pi exactly
    assert dirs.shape == (181 * 360, 3) and np.allclose(np.linalg.norm(dirs, axis=1), 1)
    scale = np.random.default_rng(0).uniform(0.01, 100, (len(dirs), 1))
    t, f = cast_rays(box.vertices, box.faces, origin, dirs * scale)
    assert np.all(f >= 0) and np.all(np.isfinite(t))
    p = origin + t[:, None] * dirs
    assert np.all(p >= np.array([-3, -2.5, 0]) - 1e-9) and np.all(p <= np.array([3, 2.5, 3]) + 1e-9)
    # on the plane of the face that was hit: that face's constant coordinate
    tri = box.vertices[box.faces[f]]
    axis = np.argmax(np.ptp(tri, axis=1) == 0, axis=1)
    rows = np.arange(len(p))
    assert np.all(np.ptp(tri, axis=1)[rows, axis] == 0)
    assert np.abs(p[rows, axis] - tri[rows, 0, axis]).max() < 1e-9
    # the farthest point is a corner, the nearest the closest wall
    assert t.max() <= np.linalg.norm(np.maximum(np.abs(origin - [-3, -2.5, 0]), np.abs(origin - [3, 2.5, 3]))) + 1e-9
    assert t.min() >= 1.4 - 1e-9
    # a narrow cone around -x (across the seam) alone gives the same answers as inside the full scan
    cone = np.concatenate([[[-1.0, 0.0, 0.0]], np.random.default_rng(1).normal([-1, 0, 0], 0.05, (500, 3))])
    tc, fc = cast_rays(box.vertices, box.faces, origin, cone)
    tn, fn = cast_rays(box.vertices, box.faces, origin, np.concatenate([cone, dirs]))
    assert np.array_equal(tc, tn[:len(cone)]) and np.array_equal(fc, fn[:len(cone)])
    assert np.allclose(origin[0] + tc * cone[:, 0] / np.linalg.norm(cone, axis=1), -3)


def test_concatenate_and_transform_place_meshes_and_own_their_faces():
    box = box_mesh([-0.5, -0.5, 0], [0.5, 0.5, 1])
    moved = transform(box, np.pi / 2, (2.0, 1.0, 1.0), (10, 0, 0))
    # scale in the mesh's own axes first (x doubled), then yaw 90 degrees (x -> y), then translation
    assert np.allclose(moved.vertices.min(axis=0), [9.5, -1, 0])
    assert np.allclose(moved.vertices.max(axis=0), [10.5, 1, 1])
    scene, owner = concatenate([box, moved, transform(box, 0.0, 3.0, (0, 20, 0))])
    assert len(scene.faces) == 36 and owner.tolist() == [0] * 12 + [1] * 12 + [2] * 12
    assert scene.faces.max() == len(scene.vertices) - 1 and scene.face_rgb.shape == (36, 3)
    t, f = cast_rays(scene.vertices, scene.faces, [5.0, 0, 0.5], [[1, 0, 0], [-1, 0, 0], [-5, 20, 0]])
    assert owner[f].tolist() == [1, 0, 2] and t[:2].tolist() == [4.5, 4.5]


@pytest.fixture(scope="module")
def cad_catalog(shared_data):
    root = shared_data / "cad"
    if not (root / "catalog.json").is_file():
        pytest.skip("no ../shared/data/cad/catalog.json")
    return root, json.loads((root / "catalog.json").read_text())


def test_cast_rays_matches_slow_loop_on_a_cad_chair_from_outside(cad_catalog):
    root, _ = cad_catalog
    chair = read_mesh(root / "chair" / "aws-smallhouse__chair_a_01.ply")
    rng = np.random.default_rng(3)
    lo, hi = chair.vertices.min(axis=0), chair.vertices.max(axis=0)
    for origin in ([2.0, 0.1, 0.5], [-1.2, 1.4, 1.3], [0.05, -0.02, 2.5], [0.3, -1.8, 0.05]):
        origin = np.asarray(origin)
        dirs = np.concatenate([aimed_rays(rng, chair.vertices, chair.faces, origin, 500),
                               rng.uniform(lo, hi, (300, 3)) - origin])  # many of these pass through the frame
        t, f = assert_matches_slow(chair.vertices, chair.faces, origin, dirs, min_unique=0.8)
        assert np.isfinite(t[:500]).all()  # every ray aimed at a face hits the chair (maybe nearer)


def test_read_mesh_on_every_free_cad_file(cad_catalog):
    root, catalog = cad_catalog
    records = [r for r in catalog if r["licence_class"] == "free" and r["faces"] > 0]
    assert len(records) >= 170
    for r in records:
        mesh = read_mesh(root / r["file"])
        assert mesh.vertices.dtype == np.float64 and mesh.vertices.shape == (r["vertices"], 3), r["file"]
        assert mesh.faces.dtype == np.int64 and mesh.faces.shape == (r["faces"], 3), r["file"]
        assert mesh.face_rgb.dtype == np.uint8 and mesh.face_rgb.shape == (r["faces"], 3), r["file"]
        assert mesh.faces.min() >= 0 and mesh.faces.max() < len(mesh.vertices), r["file"]
        assert np.allclose(mesh.extent(), r["extent_m"], rtol=0, atol=1e-3), r["file"]
        assert abs(mesh.vertices[:, 2].min()) < 1e-3, r["file"]  # rests on z = 0


def test_face_colour_is_the_mean_of_its_vertex_colours(tmp_path):
    vertex = np.array([(0, 0, 0, 10, 0, 255), (1, 0, 0, 20, 1, 255), (0, 1, 0, 31, 1, 0), (1, 1, 0, 0, 0, 0)],
                      dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    face = np.array([([0, 1, 2],), ([1, 3, 2],)], dtype=[("vertex_indices", "i4", (3,))])
    for text in (False, True):
        path = tmp_path / f"m{int(text)}.ply"
        PlyData([PlyElement.describe(vertex, "vertex"), PlyElement.describe(face, "face")], text=text).write(path)
        mesh = read_mesh(path)
        assert mesh.faces.tolist() == [[0, 1, 2], [1, 3, 2]]
        assert mesh.face_rgb.tolist() == [[20, 1, 170], [17, 1, 85]]
    plain = tmp_path / "plain.ply"
    xyz = np.array(vertex[["x", "y", "z"]].tolist(), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(xyz, "vertex"), PlyElement.describe(face, "face")]).write(plain)
    assert read_mesh(plain).face_rgb.tolist() == [[180, 180, 180]] * 2


def test_read_mesh_bad_inputs(tmp_path, shared_data):
    vertex = np.array([(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    points = tmp_path / "points.ply"
    PlyData([PlyElement.describe(vertex, "vertex")]).write(points)
    with pytest.raises(BadInputError, match="no face element"):
        read_mesh(points)
    quads = tmp_path / "quads.ply"
    face = np.empty(1, dtype=[("vertex_indices", object)])
    face[0] = (np.array([0, 1, 3, 2], np.int32),)
    PlyData([PlyElement.describe(vertex, "vertex"), PlyElement.describe(face, "face")]).write(quads)
    with pytest.raises(BadInputError, match="triangle"):
        read_mesh(quads)
    out_of_range = tmp_path / "range.ply"
    tri = np.array([([0, 1, 4],)], dtype=[("vertex_indices", "i4", (3,))])
    PlyData([PlyElement.describe(vertex, "vertex"), PlyElement.describe(tri, "face")]).write(out_of_range)
    with pytest.raises(BadInputError, match="indices run from 0 to 4"):
        read_mesh(out_of_range)
    with pytest.raises(BadInputError, match="no such file"):
        read_mesh(tmp_path / "missing.ply")
    (tmp_path / "text.ply").write_text("not a mesh\n")
    with pytest.raises(BadInputError, match="not a PLY"):
        read_mesh(tmp_path / "text.ply")
    real = shared_data / "cad" / "chair" / "kenney__chair.ply"
    if not real.is_file():
        pytest.skip("no CAD chair in ../shared/data/cad")
    data = real.read_bytes()
    for cut in (len(data) - 5, len(data) // 2, data.find(b"end_header") + 20):
        truncated = tmp_path / f"cut{cut}.ply"
        truncated.write_bytes(data[:cut])
        with pytest.raises(BadInputError, match="truncated") as err:
            read_mesh(truncated)
        assert "\n" not in str(err.value) and str(truncated) in str(err.value)
