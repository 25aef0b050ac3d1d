"""`pcseg render` and the picture engine: known points land on known pixels in known colours, the z-buffer
keeps the top / nearest point, --compare marks the wrong points, top views carry a legend, scale bar and north
arrow, a missing Pillow is a one-line usage error, and the command draws the shipped IGN tile."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from pcseg.cli.main import main
from pcseg.data.classmaps import builtin_class_map
from pcseg.engine import render as R
from pcseg.errors import UsageError
from pcseg.geometry.raster import fit_frame, project, rasterize, splat_offsets, zbuffer
from pcseg.io import PointCloud, read, write

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "ign_lidarhd_77060_627760.laz")
GROUND, BUILDING, HIGH_VEG = (165, 124, 82), (220, 60, 50), (20, 110, 30)  # ASPRS 2, 6, 5
BG = R.BACKGROUND
# With render's MARGIN of 8 px, a 10 x 10 m square in a 117 x 117 map is 10 px per metre: col = 8 + 10 x,
# row = 8 + 10 (10 - y).
SIZE = (117, 117)


def px(x, y):
    return int(round(8 + 10 * x)), int(round(8 + 10 * (10 - y)))  # (col, row) of a point of the 10 m square in a SIZE map


def square(extra_xyz, extra_codes):
    """Corners of a 10 m square (ground, code 2) plus the given points."""
    xyz = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [10, 10, 0]] + list(extra_xyz), dtype=np.float64)
    codes = np.array([2, 2, 2, 2] + list(extra_codes), dtype=np.uint8)
    return PointCloud(xyz + [770600.0, 6277550.0, 20.0], {"classification": codes}, {"format": "las"})


# --------------------------------------------------------------------------------------------------------
# rasteriser


def test_top_view_pixels_and_frame():
    xyz = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [10, 10, 0], [3, 7, 1]], dtype=np.float64) + 7e5
    index, frame, lo, hi = rasterize(xyz, "top", 101, 101, radius=0)
    assert frame.scale == pytest.approx(10.0)
    assert index[100, 0] == 0 and index[100, 100] == 1 and index[0, 0] == 2 and index[0, 100] == 3
    assert index[30, 30] == 4
    assert np.count_nonzero(index >= 0) == 5


def test_side_view_keeps_nearest_and_top_view_keeps_highest():
    # two points on one vertical: the top view sees the higher; two on one line of sight from the south
    # (same x and z, different y): the side view sees the one with the smaller y
    xyz = np.array([[0, 0, 0], [10, 10, 10], [5, 5, 2], [5, 5, 8], [2, 1, 4], [2, 9, 4]], dtype=np.float64)
    top, frame, _, _ = rasterize(xyz, "top", 101, 101, radius=0)
    assert top[50, 50] == 3  # (5, 5): z 8 beats z 2
    side, frame, _, _ = rasterize(xyz, "side", 101, 101, radius=0)
    assert frame.scale == pytest.approx(10.0)
    assert side[60, 20] == 4  # (x 2, z 4): y 1 hides y 9
    assert side[20, 50] == 3 and side[80, 50] == 2  # the two points at x 5 seen at their heights


def test_zbuffer_splat_matches_brute_force():
    rng = np.random.default_rng(0)
    n, w, h, r = 3000, 60, 40, 2
    cols, rows = rng.integers(-3, w + 3, n), rng.integers(-3, h + 3, n)
    prio = rng.random(n).astype(np.float32)
    got = zbuffer(cols, rows, prio, w, h, radius=r)
    # brute force: every point inside the image on every pixel of its disc, the largest priority per pixel
    # (points outside the image are skipped: they do not splat into it)
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    assert not inside.all()
    off = splat_offsets(r)
    c = (cols[inside, None] + off[None, :, 0]).ravel()
    rr = (rows[inside, None] + off[None, :, 1]).ravel()
    p = np.repeat(prio[inside], len(off))
    ok = (c >= 0) & (c < w) & (rr >= 0) & (rr < h)
    best = np.full(w * h, -np.inf, np.float32)
    np.maximum.at(best, (rr * w + c)[ok], p[ok])
    best = best.reshape(h, w)
    filled = got >= 0
    assert np.array_equal(filled, np.isfinite(best))
    assert np.array_equal(prio[got[filled]], best[filled])
    assert len(off) == 21 and tuple(off[0]) == (0, 0) and len(splat_offsets(1)) == 9 and len(splat_offsets(0)) == 1


def test_perspective_camera_above_the_south_west_corner():
    g = np.stack(np.meshgrid(np.arange(0, 11.0, 5), np.arange(0, 11.0, 5)), -1).reshape(-1, 2)
    xyz = np.concatenate([np.c_[g, np.zeros(len(g))], np.c_[g, np.full(len(g), 10.0)]]) + [7e5, 6e6, 50]
    uv, prio, lo, hi = project(xyz, "persp")
    n = len(g)
    assert np.all(uv[n:, 1] > uv[:n, 1])          # higher points are higher in the picture
    assert np.all(prio[n:] > prio[:n])            # and nearer to a camera above the cloud
    sw, ne = 0, n - 1                             # (0, 0) and (10, 10) on the ground
    assert prio[sw] > prio[ne]                    # the south-west corner is nearest
    assert uv[sw, 1] < uv[ne, 1] and abs(uv[sw, 0] - uv[ne, 0]) < 1e-6  # on the picture's vertical axis


def test_perspective_projects_every_point_in_front():
    xyz = read(EXAMPLE).xyz
    uv, prio, lo, hi = project(xyz, "persp")
    assert np.all(prio < 0) and np.all(np.isfinite(uv))
    assert np.allclose(lo, uv.min(axis=0)) and np.allclose(hi, uv.max(axis=0))
    frame = fit_frame(lo, hi, 300, 200, 4)
    cols, rows = frame.pixels(uv)
    assert cols.min() >= 4 and cols.max() <= 295 and rows.min() >= 4 and rows.max() <= 195


# --------------------------------------------------------------------------------------------------------
# pictures


def test_known_colours_at_known_pixels_top_view():
    cloud = square([[3, 7, 5], [3, 7, 1], [6, 2, 0]], [6, 5, 2])  # a roof above a tree at (3, 7)
    img = R.render_cloud(cloud, "classification", "top", size=SIZE, point_size=0, annotate=False)
    assert img.shape == (117, 117, 3)
    c, r = px(3, 7)
    assert tuple(img[r, c]) == BUILDING  # the z-buffer keeps the highest point
    for x, y in [(0, 0), (10, 0), (0, 10), (10, 10), (6, 2)]:
        c, r = px(x, y)
        assert tuple(img[r, c]) == GROUND
    assert np.count_nonzero(np.any(img != BG, axis=2)) == 6  # one pixel per visible point, nothing else
    # the splat radius paints the neighbours of each point, the highest point winning where they overlap
    img = R.render_cloud(cloud, "classification", "top", size=SIZE, point_size=1, annotate=False)
    c, r = px(3, 7)
    assert {tuple(v) for v in img[r - 1:r + 2, c - 1:c + 2].reshape(-1, 3)} == {BUILDING}


def test_known_colours_side_view():
    cloud = square([[3, 2, 5], [3, 8, 5]], [6, 5])  # seen from the south, the building (y 2) hides the tree
    img = R.render_cloud(cloud, "classification", "side", size=SIZE, point_size=0, annotate=False)
    # side: u = x, v = z; the z extent is 0..5, centred vertically in the 10 px/m frame
    scale = 10.0
    top_row = 8 + (100 - 5 * scale) / 2
    assert tuple(img[int(top_row), 8 + 30]) == BUILDING
    assert tuple(img[int(top_row + 5 * scale), 8]) == GROUND
    assert HIGH_VEG not in {tuple(v) for v in img.reshape(-1, 3)}


def test_class_field_uses_the_class_map_colours():
    als = builtin_class_map("als")
    cloud = PointCloud(np.array([[0, 0, 0], [10, 10, 0], [5, 5, 0]], np.float64),
                       {"class": np.array([0, 1, 2], np.uint8)})
    img = R.render_cloud(cloud, "class", size=SIZE, point_size=0, annotate=False, class_map=als)
    assert tuple(img[px(5, 5)[::-1]]) == als.colors[2]
    named = R.render_cloud(cloud, "class", size=SIZE, point_size=0, annotate=False, class_names=["a", "b", "c"],
                           class_colors=[(1, 2, 3), (4, 5, 6), (7, 8, 9)])
    assert tuple(named[px(0, 0)[::-1]]) == (1, 2, 3) and tuple(named[px(5, 5)[::-1]]) == (7, 8, 9)
    # a file written by pcseg segment for an als model (height_above_ground) implies the als map
    implied = cloud.with_fields(height_above_ground=np.zeros(3, np.float32))
    img = R.render_cloud(implied, "auto", size=SIZE, point_size=0, annotate=False)
    assert tuple(img[px(10, 10)[::-1]]) == als.colors[1]


def test_confidence_ramp_from_0_to_1():
    cloud = PointCloud(np.array([[0, 0, 0], [10, 10, 0], [5, 5, 0]], np.float64),
                       {"confidence": np.array([0.0, 1.0, 0.5], np.float32)})
    img = R.render_cloud(cloud, "confidence", size=SIZE, point_size=0, annotate=False)
    lo, hi, mid = img[px(0, 0)[::-1]], img[px(10, 10)[::-1]], img[px(5, 5)[::-1]]
    assert tuple(lo) == (68, 1, 84) and tuple(hi) == (253, 231, 37)  # viridis ends
    assert tuple(mid) == tuple(R.ramp(np.array([0.5]), 0.0, 1.0)[0])


def test_compare_puts_the_error_colour_where_truth_and_prediction_differ():
    # truth: ASPRS codes; prediction: als class ids (ground 0, vegetation 1, building 2)
    xyz = np.array([[0, 0, 0], [10, 10, 0], [2, 8, 0], [8, 2, 0], [5, 5, 0]], np.float64)
    truth = np.array([2, 2, 6, 5, 1], np.uint8)     # code 1 (unclassified) is not an als class
    pred = np.array([0, 2, 2, 1, 0], np.uint8)      # the second point is wrong
    cloud = PointCloud(xyz, {"classification": truth, "class": pred})
    w = 3 * 117
    img = R.render_compare(cloud, "classification", view="top", class_map=builtin_class_map("als"),
                           size=(w, 117), point_size=0, annotate=False)
    errors = img[:, 2 * 117:]
    at = lambda panel, x, y: tuple(panel[px(x, y)[1], px(x, y)[0]])
    assert at(errors, 10, 10) == R.WRONG
    assert at(errors, 0, 0) == at(errors, 2, 8) == at(errors, 8, 2) == R.CORRECT
    assert at(errors, 5, 5) == R.UNLABELLED
    assert np.count_nonzero(np.all(errors == R.WRONG, axis=2)) == 1
    truth_panel, pred_panel = img[:, :117], img[:, 117:234]
    assert at(truth_panel, 10, 10) == GROUND and at(pred_panel, 10, 10) == BUILDING
    # ASPRS codes against class ids need a class map: a one-line usage error says how to give it
    with pytest.raises(UsageError, match="--model"):
        R.render_compare(cloud, "classification", annotate=False)


def test_top_view_has_legend_scale_bar_and_north_arrow():
    cloud = square([[3, 7, 5]], [6])
    w, h = 600, 400
    img = R.render_cloud(cloud, "classification", "top", size=(w, h), point_size=2)
    legend = img[:, w - 110:]  # the legend panel is at least 110 px wide, and the square map stays left of it
    for colour in (GROUND, BUILDING):
        assert np.count_nonzero(np.all(legend == colour, axis=2)) >= 100  # a swatch per class
    assert np.count_nonzero(np.all(legend < 80, axis=2)) > 50            # class names
    bare = R.render_cloud(cloud, "classification", "top", size=(w, h), point_size=2, annotate=False)
    assert np.all(bare[:, w - 100:] == BG)  # the bare map is centred in the whole width
    # no legend for true colours: the map spans the picture; arrow top right, scale bar bottom left
    rgb = cloud.with_fields(red=np.full(5, 200, np.uint16), green=np.full(5, 200, np.uint16),
                            blue=np.full(5, 200, np.uint16))
    dark = lambda a: np.count_nonzero(np.all(a < 60, axis=2))
    top = R.render_cloud(rgb, "rgb", "top", size=(w, h))
    side = R.render_cloud(rgb, "rgb", "side", size=(w, h))
    persp = R.render_cloud(rgb, "rgb", "persp", size=(w, h))
    arrow, bar = (slice(8, 40), slice(w - 32, w - 10)), (slice(h - 16, h - 8), slice(10, 120))
    assert dark(top[arrow]) > 20 and dark(side[arrow]) == 0 and dark(persp[arrow]) == 0
    assert dark(top[bar]) > 50 and dark(side[bar]) > 50 and dark(persp[bar]) == 0


def test_boxes_drawn_as_rectangles_with_heading():
    pts = np.array([[0, 0, 0, 0.1], [10, 10, 0, 0.2]], np.float32)
    boxes = np.array([[5, 5, 1, 4, 2, 1.5, 0.0]])  # 4 m along x, 2 m along y, heading +x
    img = R.render_boxes_top(pts, boxes, ["Car"], [0.8], size=SIZE, point_size=0, annotate=False)
    car = R.BOX_COLORS["car"]
    c, r = px(5, 6)  # middle of the left (+y) edge
    assert car in {tuple(v) for v in img[r - 1:r + 2, c].reshape(-1, 3)}
    c, r = px(6.5, 5)  # on the heading line, centre -> front edge
    assert car in {tuple(v) for v in img[r - 1:r + 2, c].reshape(-1, 3)}
    c, r = px(4, 5)  # behind the centre: inside the box, no line
    assert tuple(img[r, c]) == BG


def test_save_png_round_trip(tmp_path):
    img = np.zeros((7, 9, 3), np.uint8)
    img[2, 3] = (10, 20, 30)
    path = tmp_path / "a.png"
    R.save_png(img, str(path))
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), img)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left


# --------------------------------------------------------------------------------------------------------
# the command


def test_cli_renders_the_shipped_tile_by_classification(tmp_path, capsys):
    out = tmp_path / "tile.png"
    assert main(["render", EXAMPLE, "-o", str(out), "--by", "classification", "--size", "640x480", "-q"]) == 0
    pic = np.asarray(Image.open(out).convert("RGB"))
    assert pic.shape == (480, 640, 3)
    colours = {tuple(v) for v in pic.reshape(-1, 3)}
    assert {GROUND, BUILDING, HIGH_VEG} <= colours


def test_cli_compare_on_a_segmented_tile(tmp_path, capsys):
    # what `pcseg segment --model sala-als` writes: class (als ids) and height_above_ground beside the original
    # classification; here the prediction is the truth mapped to als ids, with every 10th labelled point wrong
    cloud = read(EXAMPLE)
    als = builtin_class_map("als")
    ids = als.encode(cloud.fields["classification"])
    pred = np.where(ids < 0, 5, ids)
    wrong = np.zeros(len(ids), bool)
    wrong[np.flatnonzero(ids >= 0)[::10]] = True
    pred[wrong] = (pred[wrong] + 1) % 3
    seg = tmp_path / "seg.las"
    write(cloud.with_fields(**{"class": pred.astype(np.uint8),
                               "height_above_ground": np.zeros(len(ids), np.float32)}), str(seg))
    out = tmp_path / "cmp.png"
    assert main(["render", str(seg), "-o", str(out), "--compare", "classification"]) == 0
    assert "'als' class map" in capsys.readouterr().err
    pic = np.asarray(Image.open(out).convert("RGB"))
    assert pic.shape == (700, 1800, 3)
    red = np.all(pic == R.WRONG, axis=2)
    cols = np.flatnonzero(red.any(axis=0))
    assert red.sum() > 500 and cols.min() > 1000  # wrong points in the third panel only
    # --pred names the prediction; the same field as the truth is refused
    assert main(["render", str(seg), "-o", str(out), "--compare", "classification", "--pred", "classification"]) == 2


def test_cli_missing_pillow_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    for name in ("PIL", "PIL.Image", "PIL.ImageDraw", "PIL.ImageFont"):
        monkeypatch.setitem(sys.modules, name, None)  # import PIL raises ImportError
    out = tmp_path / "x.png"
    assert main(["render", EXAMPLE, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'pcseg[render]'" in err[0]
    assert not out.exists()


def test_cli_usage_errors(tmp_path, capsys):
    assert main(["render", EXAMPLE, "-o", str(tmp_path / "x.jpg")]) == 2
    assert main(["render", EXAMPLE, "-o", str(tmp_path / "x.png"), "--view", "front"]) == 2
    assert main(["render", EXAMPLE, "-o", str(tmp_path / "x.png"), "--size", "big"]) == 2
    assert main(["render", EXAMPLE, "-o", str(tmp_path / "x.png"), "--by", "nope"]) == 3
    assert "no field 'nope'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_render_command_does_not_import_torch(tmp_path):
    out = tmp_path / "rgb.png"
    code = ("import sys; from pcseg.cli.main import main; rc = main(%r); "
            "sys.exit(3 if 'torch' in sys.modules else rc)" % ["render", EXAMPLE, "-o", str(out), "--by", "rgb", "-q"])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (1200, 900)
