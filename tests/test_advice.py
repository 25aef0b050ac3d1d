"""Density advice from a model's card (pcseg.engine.advice): which densities earn a warning, which shipped model
it names, and that `segment_points` and the chunked path log it for a sparse real tile."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pcseg.engine.advice import ADVICE_DROP, density_advice
from pcseg.geometry import thin_to_density, xy_density

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ign_lidarhd_77060_627760.laz"
CLASSES = {"names": ["ground", "vegetation", "building"]}


def card(name, rows, classes=CLASSES):
    density = [{"thinning": "none", "target": None, "mean": 90.0}]
    density += [{"thinning": "random", "target": t, "mean": m, "delta_mean": d} for t, m, d in rows]
    # pulse rows are not read
    density += [{"thinning": "pulse", "target": 0.3, "mean": 0.0, "delta_mean": -90.0}]
    return {"name": name, "classes": classes, "robustness_validation": {"density": density}}


DENSE = card("dense", [(10.0, 89.0, -1.0), (3.0, 80.0, -10.0), (1.0, 50.0, -40.0), (0.3, 30.0, -60.0)])
SPARSE = card("sparse", [(10.0, 75.0, -1.0), (3.0, 74.0, -2.0), (1.0, 70.0, -6.0), (0.3, 60.0, -16.0)])
OTHER_CLASSES = card("indoor", [(0.3, 99.0, 0.0)], classes={"names": ["floor", "wall"]})


def test_no_advice_where_the_card_holds_up_or_has_no_figures():
    assert density_advice(DENSE, 20.0, "f.laz", {}) is None          # denser than every level
    assert density_advice(DENSE, 10.0, "f.laz", {}) is None          # 1 point below: within ADVICE_DROP
    assert density_advice(SPARSE, 2.0, "f.laz", {}) is None          # nearest level 3 points/m2: -2
    assert density_advice(SPARSE, 1.5, "f.laz", {}) is not None      # nearest level 1 point/m2: -6
    assert density_advice({"name": "x"}, 0.1, "f.laz", {}) is None
    assert density_advice(DENSE, 0.0, "f.laz", {}) is None and density_advice(DENSE, np.inf, "f.laz", {}) is None
    assert density_advice(DENSE, 0.05, "f.laz", {}) is not None      # sparser than every level: the sparsest row


def test_advice_quotes_the_nearest_level_and_names_a_better_model():
    shipped = {"dense": DENSE, "sparse": SPARSE, "indoor": OTHER_CLASSES}
    line = density_advice(DENSE, 0.8, "f.laz", shipped)
    assert line.startswith("f.laz holds about 0.8 points/m²: dense's card measures mean IoU 50.0 at 1 points/m²")
    assert "40.0 below full density" in line and line.endswith("sparse's card measures 70.0 there (--model sparse)")
    # the sparse model loses 16 points at 0.3: it is told so, and no model of other classes is offered
    line = density_advice(SPARSE, 0.3, "f.laz", shipped)
    assert "mean IoU 60.0 at 0.3 points/m², 16.0 below" in line and "--model" not in line
    # an alternative must beat the model by ADVICE_DROP at the same level
    # a model reading return numbers is not offered for a file without them
    echo = {**SPARSE, "features": ["one", "terrain", "echo"]}
    assert "--model" not in density_advice(DENSE, 0.8, "f.laz", {"sparse": echo}, has_echo=False)
    assert "--model sparse" in density_advice(DENSE, 0.8, "f.laz", {"sparse": echo}, has_echo=True)
    close = card("close", [(1.0, 50.0 + ADVICE_DROP - 0.1, -30.0)])
    assert "--model" not in density_advice(DENSE, 0.8, "f.laz", {"close": close})


def test_segment_points_warns_on_a_sparse_real_tile(caplog):
    from pcseg.engine.infer import segment_points
    from pcseg.io import read
    from pcseg.models import zoo

    cloud = read(EXAMPLE)
    keep = thin_to_density(cloud.xyz, 0.3, np.random.default_rng(0))
    sparse = cloud.select(keep)
    assert xy_density(sparse.xyz) < 0.35
    ck = zoo.load("sala-als")
    with caplog.at_level(logging.WARNING):
        segment_points(ck, sparse, votes=1)
    lines = [r.getMessage() for r in caplog.records if "points/m²" in r.getMessage()]
    assert len(lines) == 1 and "sala-als's card measures" in lines[0] and "--model sala-als-terrain" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        segment_points(ck, cloud, votes=1)                        # the tile as shipped: dense, no advice
    assert not [r for r in caplog.records if "points/m²" in r.getMessage()]


def test_the_chunked_path_warns_too(tmp_path, caplog):
    """A LAS file over ``tile_points`` goes through pcseg.engine.chunked, which reads the density of its first
    chunk."""
    import dataclasses

    from pcseg.engine.options import SegmentOptions
    from pcseg.engine.segment import segment_file
    from pcseg.io import read, write
    from pcseg.models import zoo

    cloud = read(EXAMPLE)
    src = tmp_path / "sparse.laz"
    write(cloud.select(thin_to_density(cloud.xyz, 0.3, np.random.default_rng(1))), str(src))
    opts = dataclasses.replace(SegmentOptions(), votes=1, tile_points=100)
    with caplog.at_level(logging.WARNING):
        summary = segment_file(zoo.load("sala-als"), str(src), str(tmp_path / "out.laz"), opts)
    assert summary["points"] < 1000
    lines = [r.getMessage() for r in caplog.records if "points/m²" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(f"{src} holds about 0.3"), lines
    assert "sala-als's card measures" in lines[0] and lines[0].endswith("(--model sala-als-terrain)")
