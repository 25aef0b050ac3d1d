"""PLY results open in CloudCompare with every new field as a scalar field (issue #30): LAS/LAZ in, and PLY in
with plain property names (ScanNet, the shipped synthetic room). The rule CloudCompare applies in silent mode
is replayed by benchmarks/check_viewer_ply.py; where CloudCompare and xvfb-run are installed, the real viewer
loads the result too."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from pcseg.cli.main import main
from pcseg.io import read

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "ign_lidarhd_77060_627760.laz"
ROOM = REPO / "examples" / "synthetic_room.ply"
_spec = importlib.util.spec_from_file_location("check_viewer_ply", REPO / "benchmarks" / "check_viewer_ply.py")
CHECK = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(CHECK)
FAST = ("--votes", "1", "--threads", "1")


def _vertex(props: list[str], colour_first: bool = False) -> list[tuple[str, str, str]]:
    head = ["x", "y", "z"] + (["red", "green", "blue"] if colour_first else [])
    return [("vertex", p, "u1") for p in head + props]


def test_replayed_rule_matches_what_cloudcompare_does():
    """What CloudCompare 2.11.3 did, run headless on such files: a name with SCAL is a scalar field, a plain
    name is dropped, a colour or normal word anywhere wins over SCAL while that channel is free."""
    roles = CHECK.cloudcompare_roles(_vertex(["class", "scalar_class", "nyu40", "scalar_pred_class"]))
    assert roles["class"] == "unassigned" and roles["scalar_class"] == "scalar field"
    assert roles["nyu40"] == "ny"                      # ScanNet's own property: CloudCompare takes it as a normal
    assert roles["scalar_pred_class"] == "red"         # no red before it: the red channel
    roles = CHECK.cloudcompare_roles(_vertex(["scalar_pred_class", "scalar_pr-ed_class"], colour_first=True))
    assert roles["scalar_pred_class"] == "scalar field" and roles["red"] == "red"
    assert CHECK.cloudcompare_roles(_vertex(["scalar_pr-ed_class"]))["scalar_pr-ed_class"] == "scalar field"


def test_new_fields_stay_scalar_fields_where_cloudcompare_would_take_them_as_colours_or_normals(tmp_path):
    """No colours or normals in the file: names with RED, GREEN, NY, NORM...X get a '-' inside the word, a header
    comment names their fields, and pcseg reads and writes them back under their own names."""
    from pcseg.io import write

    arr = np.zeros(30, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("class", "u1")])
    arr["x"] = np.arange(30)
    PlyData([PlyElement.describe(arr, "vertex")], comments=["mine"]).write(str(tmp_path / "in.ply"))
    cloud = read(str(tmp_path / "in.ply"))
    new = {"pred_class": np.ones(30, np.uint8), "greenness": np.zeros(30, np.float32),
           "nyu40": np.arange(30, dtype=np.uint8), "normal_max": np.ones(30, np.float32),
           "confidence": np.full(30, 0.5, np.float32)}
    write(cloud.with_fields(**new), str(tmp_path / "out.ply"))
    props, roles = CHECK.viewer_view(tmp_path / "out.ply")
    names = [p for _, p, _ in props]
    assert names == ["x", "y", "z", "class", "scalar_pr-ed_class", "scalar_g-reenness", "scalar_n-yu40",
                     "scalar_n-ormal_max", "scalar_confidence"]
    assert all(roles[n] == "scalar field" for n in names[4:])
    back = read(str(tmp_path / "out.ply"))
    assert list(back.fields) == ["class", *new]
    for name, values in new.items():
        assert np.array_equal(back.fields[name], values), name
    write(back, str(tmp_path / "again.ply"))  # the same file again, the comment once
    a, b = PlyData.read(str(tmp_path / "out.ply")), PlyData.read(str(tmp_path / "again.ply"))
    assert np.array_equal(a["vertex"].data, b["vertex"].data) and a.comments == b.comments
    assert b.comments == ["mine", "pcseg field names: scalar_pr-ed_class=pred_class scalar_g-reenness=greenness "
                                  "scalar_n-yu40=nyu40 scalar_n-ormal_max=normal_max"]


def test_las_in_ply_out_opens_with_every_field(tmp_path):
    assert CHECK.check(EXAMPLE, tmp_path) == []


@pytest.mark.parametrize("name", ["ign_870000_6618000_subset.laz", "sample_c.las", "autzen_trim.las"])
def test_las_in_ply_out_real_tiles(shared_data, tmp_path, name):
    assert CHECK.check(shared_data / "als" / name, tmp_path) == []


def test_ply_in_ply_out_real_scannet_scan(shared_data, tmp_path):
    src = shared_data / "indoor" / "scannet_scene0000_02.ply"
    out = tmp_path / "room.ply"
    assert CHECK.check_segmented_ply(src, out, "sala-s3dis", FAST) == []
    props, roles = CHECK.viewer_view(out)
    names = [p for _, p, _ in props]
    # the scan's own properties as they were; every new one a scalar field, read back under its plain name
    assert names[:8] == ["x", "y", "z", "red", "green", "blue", "class", "nyu40"]
    assert roles["scalar_pred_class"] == roles["scalar_confidence"] == roles["scalar_prob_chair"] == "scalar field"
    back, scan = read(str(out)), read(str(src))
    assert np.array_equal(back.fields["class"], scan.fields["class"])
    assert back.fields["pred_class"].max() < 13 and back.fields["confidence"].dtype == np.float32


def _room_crop(path: Path, colour: bool) -> Path:
    """A corner of the shipped synthetic room as a PLY with plain property names (with or without colour)."""
    v = PlyData.read(str(ROOM))["vertex"].data
    keep = (v["x"] < np.quantile(v["x"], 0.3)) & (v["y"] < np.quantile(v["y"], 0.5))
    names = ["x", "y", "z"] + (["red", "green", "blue"] if colour else []) + ["class"]
    arr = np.empty(int(keep.sum()), dtype=[(n, v.dtype[n]) for n in names])
    for n in names:
        arr[n] = v[n][keep]
    PlyData([PlyElement.describe(arr, "vertex")], comments=["a corner of pcseg's synthetic room"]).write(str(path))
    return path


@pytest.mark.parametrize("colour", [True, False])
def test_ply_in_ply_out_synthetic_room(tmp_path, colour, capsys):
    src = _room_crop(tmp_path / "in.ply", colour)
    out = tmp_path / "out.ply"
    assert CHECK.check_segmented_ply(src, out, "sala-s3dis", FAST + ("--eval", "class")) == []
    props, roles = CHECK.viewer_view(out)
    ply = PlyData.read(str(out))
    if colour:
        assert roles["scalar_pred_class"] == "scalar field"
    else:  # no colour: CloudCompare would make scalar_pred_class the red channel, so the word is broken
        assert "scalar_pred_class" not in roles and roles["scalar_pr-ed_class"] == "scalar field"
        assert "pcseg field names: scalar_pr-ed_class=pred_class" in ply.comments
    assert ply.comments[0] == "a corner of pcseg's synthetic room"
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    fields = json.loads(capsys.readouterr().out)["fields"]
    assert {"class", "pred_class", "confidence", "prob_chair"} <= set(fields)
    # the segmented file segments again, scored against its own class, under the same names
    again = tmp_path / "again.ply"
    assert main(["segment", str(out), "-m", "sala-s3dis", "-o", str(again), "-q", *FAST, "--eval", "class"]) == 0
    assert [p.name for p in PlyData.read(str(again))["vertex"].properties] == [p for _, p, _ in props]


@pytest.mark.skipif(not (shutil.which("CloudCompare") and shutil.which("xvfb-run")),
                    reason="needs CloudCompare and xvfb-run (apt-get install cloudcompare xvfb)")
@pytest.mark.parametrize("colour", [True, False])
def test_real_cloudcompare_loads_the_new_fields(tmp_path, colour):
    src = _room_crop(tmp_path / "in.ply", colour)
    out = tmp_path / "out.ply"
    assert main(["segment", str(src), "-m", "sala-s3dis", "-o", str(out), "--confidence", "-q", *FAST]) == 0
    r = subprocess.run(["xvfb-run", "-a", "CloudCompare", "-SILENT", "-O", str(out), "-C_EXPORT_FMT", "ASC",
                        "-ADD_HEADER", "-SAVE_CLOUDS"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:]
    asc = [p for p in tmp_path.iterdir() if p.suffix == ".asc"]
    assert len(asc) == 1, r.stdout[-2000:]
    header = asc[0].open().readline().lstrip("/").split()
    assert header[:3] == ["X", "Y", "Z"]
    assert ("R" in header) == colour                  # colours only where the input had them
    assert "confidence" in header
    assert ("pred_class" if colour else "pr-ed_class") in header
