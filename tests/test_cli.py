"""The io commands as a user runs them: info, convert, subsample, tile; fast start without torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import laspy
import numpy as np
import pytest

from pcseg.cli.main import main

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "ign_lidarhd_77060_627760.laz")


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert "pcseg" in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("info", "convert", "subsample", "tile"):
        assert cmd in out


@pytest.mark.parametrize("argv", [["--help"], ["info", EXAMPLE], ["subsample", "--help"], ["tile", "--help"],
                                  ["convert", "--help"]])
def test_io_commands_do_not_import_torch(argv):
    code = ("import sys; from pcseg.cli.main import main; rc = main(%r); "
            "sys.exit(3 if 'torch' in sys.modules else rc)" % argv)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_info_json_on_real_tile(capsys):
    assert main(["info", EXAMPLE, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    las = laspy.read(EXAMPLE)
    assert info["points"] == len(las.points)
    assert info["crs"].endswith("(EPSG:2154)")
    assert info["las"]["version"] == "1.4" and info["las"]["point_format"] == 8
    assert info["fields"]["classification"] == "uint8"
    counts = {int(k): v for k, v in info["classes"]["counts"].items()}
    values, n = np.unique(las.classification, return_counts=True)
    assert counts == dict(zip(values.tolist(), n.tolist()))
    assert info["classes"]["names"]["2"] == "ground"
    assert np.allclose(info["bounds"]["min"], [las.x.min(), las.y.min(), las.z.min()])


def test_info_several_files_json_lines(capsys, shared_data):
    ply = str(shared_data / "indoor" / "scannet_scene0000_00.ply")
    assert main(["info", EXAMPLE, ply, "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(l)["format"] for l in lines] == ["laz", "ply"]


def test_convert_las_to_ply_reports_nothing_lost(tmp_path, capsys):
    out = tmp_path / "a.ply"
    assert main(["convert", EXAMPLE, "-o", str(out)]) == 0
    from plyfile import PlyData

    v = PlyData.read(str(out))["vertex"]
    las = laspy.read(EXAMPLE)
    # as viewers read PLY (CloudCompare): scalar_<name> fields, 8-bit colours, the 16-bit ones kept beside them
    assert np.array_equal(v["scalar_classification"], las.classification)
    assert np.allclose(v["x"], las.x, rtol=0, atol=1e-9)
    assert v["red"].dtype == np.uint8 and np.array_equal(v["scalar_red_uint16"], las.red)
    from pcseg.io import read

    back = read(str(out))                      # and pcseg reads its own PLY back exactly
    assert np.array_equal(back.fields["red"], las.red) and np.array_equal(back.fields["classification"],
                                                                           las.classification)


def test_convert_to_bin_says_what_is_dropped(tmp_path, capsys):
    assert main(["convert", EXAMPLE, "-o", str(tmp_path / "a.bin")]) == 0
    err = capsys.readouterr().err
    assert "not written" in err and "classification" in err


def test_subsample_keeps_las_format_and_labels(tmp_path):
    out = tmp_path / "sub.laz"
    assert main(["subsample", EXAMPLE, "-o", str(out), "--cell", "1.0", "--quiet"]) == 0
    a, b = laspy.read(EXAMPLE), laspy.read(out)
    assert b.header.point_format.id == a.header.point_format.id
    assert len(b.points) < len(a.points) / 5
    assert set(np.unique(b.classification)) <= set(np.unique(a.classification))
    # one point per 1 m cell
    cells = np.floor((np.stack([b.x, b.y, b.z], 1) - np.array([a.x.min(), a.y.min(), a.z.min()])) / 1.0)
    assert len(np.unique(cells, axis=0)) == len(b.points)


def test_tile_writes_covering_spheres_and_index(tmp_path):
    out = tmp_path / "tiles"
    assert main(["tile", EXAMPLE, "-o", str(out), "--radius", "10", "--quiet"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["radius"] == 10 and len(index["spheres"]) > 1
    files = sorted(out.glob("*.laz"))
    assert len(files) == len(index["spheres"])
    total = sum(s["points"] for s in index["spheres"])
    assert total >= index["points"]  # overlapping spheres cover every point at least once
    first = laspy.read(files[0])
    c = np.array(index["spheres"][0]["center"])
    d = np.linalg.norm(np.stack([first.x, first.y, first.z], 1) - c, axis=1)
    assert d.max() <= 10 + 0.01


def test_models_list_fits_80_columns_with_whole_names_and_data_set_names(monkeypatch, capsys):
    """`COLUMNS=80 pcseg models list`: whole names, one line of data sets (no paths), the headline quality."""
    from pcseg.models.zoo import shipped

    monkeypatch.setenv("COLUMNS", "80")
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and max(len(line) for line in lines) <= 80
    assert lines[0].split() == ["name", "task", "network", "params", "classes"]
    text = "\n".join(lines)
    assert "\u2026" not in text and "../" not in text and "shared" not in text and ".la" not in text
    cards = shipped()
    for name, card in cards.items():
        row = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
        assert lines[row].split()[1:3] == [card.get("task", "segment"), card["model"]]
        assert lines[row].split()[-1] == str(len(card["classes"]["names"]))
        assert lines[row + 1].startswith("  trained on  ") and lines[row + 2].startswith("  quality     ")
    if "sala-als" in cards:
        row = next(i for i, line in enumerate(lines) if line.split()[:1] == ["sala-als"])
        assert lines[row + 1] == "  trained on  IGN LiDAR HD, AHN3, PDAL samples, lidR/lasR forest: 35 clouds"
        miou = 100 * cards["sala-als"]["quality"]["pooled"]["miou"]
        assert f"mIoU {miou:.1f} pooled over 4 validation clouds" in lines[row + 2]
    if "focals-kitti" in cards:
        row = next(i for i, line in enumerate(lines) if line.split()[:1] == ["focals-kitti"])
        assert "KITTI, SemanticKITTI" in lines[row + 1] and "held-out KITTI frame" in lines[row + 2]
    # --json keeps every file, with the data set counts beside them
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for r in rows.values():
        assert sum(r["data_sets"].values()) == len(r["trained_on"]) and r["headline"] and r["quality"]
    if "sala-als" in rows:
        assert any(f.endswith(".laz") and "/" in f for f in rows["sala-als"]["trained_on"])


def test_models_table_cuts_long_lines_but_never_the_names():
    from pcseg.cli.models_cmds import data_set, models_table

    assert [data_set(f) for f in ("../shared/data/als/test_data_77060_627760_LA93_IGN69.laz", "x/ign_mnx_pont.laz",
                                  "a/ahn3_cropped_1.laz", "autzen_trim.las", "../als_ground/bcts_2.laz",
                                  "KITTI 000000", "../sequences/00/velodyne/000000.bin (front and turned around)",
                                  "synthetic:bank-rooms#3", "indoor/s3dis/Area_3/hallway_3", "my/own_tile.laz")] == [
        "IGN LiDAR HD", "IGN LiDAR HD", "AHN3", "PDAL samples", "lidR/lasR forest", "KITTI", "000000.bin",
        "synthetic rooms", "S3DIS", "own_tile.laz"]
    row = {"name": "a-rather-long-model-name", "task": "segment", "model": "salanet", "params": 1_617_140,
           "classes": ["a", "b"], "data_sets": {"IGN LiDAR HD": 3, "AHN3": 1}, "headline": "mIoU 90.3 " + "x" * 80}
    lines = models_table([row], width=45)
    assert lines[1].split() == ["a-rather-long-model-name", "segment", "salanet", "1.62", "M", "2"]
    assert lines[2] == "  trained on  IGN LiDAR HD, AHN3: 4 clouds"
    assert len(lines[3]) == 45 and lines[3].endswith("\u2026")
