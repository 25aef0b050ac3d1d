"""Readers and writers: lossless round trips on the real files in ../shared/data, precision, new fields."""
from __future__ import annotations

import io
import os

import laspy
import numpy as np
import pytest

from pcseg.io import PointCloud, read, write


def test_las_roundtrip_is_lossless_on_every_real_tile(als_files, tmp_path):
    for path in als_files:
        cloud = read(str(path))
        out = tmp_path / path.name
        write(cloud, str(out))
        a, b = laspy.read(path), laspy.read(out)
        assert b.header.version == a.header.version, path.name
        assert b.header.point_format.id == a.header.point_format.id, path.name
        assert np.array_equal(b.header.scales, a.header.scales) and np.array_equal(b.header.offsets, a.header.offsets)
        assert [(v.user_id, v.record_id) for v in b.header.vlrs] == [(v.user_id, v.record_id) for v in a.header.vlrs]
        assert b.header.are_points_compressed == a.header.are_points_compressed
        # Identical raw point records: X/Y/Z integers, every standard dimension and every extra byte.
        assert a.points.array.dtype == b.points.array.dtype, path.name
        assert np.array_equal(a.points.array, b.points.array), path.name
        assert [d.name for d in a.point_format.extra_dimensions] == [d.name for d in b.point_format.extra_dimensions]


def test_georeferenced_coordinates_keep_full_precision(als_files):
    path = next(p for p in als_files if "LA93" in p.name)
    cloud = read(str(path))
    las = laspy.read(path)
    assert cloud.xyz.dtype == np.float64
    assert cloud.xyz[:, 0].min() > 1e5 and cloud.xyz[:, 1].min() > 6e6  # Lambert-93
    raw = np.round((cloud.xyz - las.header.offsets) / las.header.scales).astype(np.int64)
    assert np.array_equal(raw[:, 0], las.X) and np.array_equal(raw[:, 1], las.Y) and np.array_equal(raw[:, 2], las.Z)
    local = cloud.local_xyz()
    assert local.dtype == np.float32
    # float32 relative to the float64 origin keeps millimetres over a tile.
    assert np.abs(local.astype(np.float64) + cloud.origin - cloud.xyz).max() < 1e-3


def test_new_fields_go_to_extra_bytes_and_originals_stay(als_files, tmp_path):
    path = next(p for p in als_files if p.name.startswith("test_data_77060_627760"))
    cloud = read(str(path))
    pred = (np.arange(len(cloud)) % 7).astype(np.uint8)
    conf = np.linspace(0, 1, len(cloud)).astype(np.float32)
    write(cloud.with_fields(pred_class=pred, confidence=conf), str(tmp_path / "out.laz"))
    a, b = laspy.read(path), laspy.read(tmp_path / "out.laz")
    for name in a.point_format.dimension_names:
        assert np.array_equal(np.asarray(a[name]), np.asarray(b[name])), name
    assert np.array_equal(np.asarray(b["pred_class"]), pred)
    assert np.array_equal(np.asarray(b["confidence"]), conf)


def test_classification_replaced_when_values_fit_and_refused_when_not(als_files, tmp_path):
    from pcseg.errors import BadInputError

    path = next(p for p in als_files if p.name.startswith("test_data_77060_627760"))
    cloud = read(str(path))
    codes = np.where(cloud.fields["classification"] == 2, 2, 6).astype(np.uint8)
    write(cloud.with_fields(classification=codes), str(tmp_path / "c.laz"))
    assert np.array_equal(np.asarray(laspy.read(tmp_path / "c.laz").classification), codes)
    # LAS 1.2 point format 1 classification holds 5 bits: 40 does not fit.
    sample = next(p for p in als_files if p.name == "mvk-thin.las")
    old = read(str(sample))
    with pytest.raises(BadInputError, match="do not fit"):
        write(old.with_fields(classification=np.full(len(old), 40, np.uint8)), str(tmp_path / "bad.las"))
    assert not (tmp_path / "bad.las").exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".pcseg-")]  # no temporary file left


def test_ply_roundtrip_real_scannet(shared_data, tmp_path):
    from plyfile import PlyData

    src = shared_data / "indoor" / "scannet_scene0000_01.ply"
    cloud = read(str(src))
    assert {"red", "green", "blue", "class", "nyu40"} <= set(cloud.fields)
    write(cloud, str(tmp_path / "a.ply"))
    a, b = PlyData.read(str(src)), PlyData.read(str(tmp_path / "a.ply"))
    assert a["vertex"].data.dtype == b["vertex"].data.dtype
    assert np.array_equal(a["vertex"].data, b["vertex"].data)
    assert [e.name for e in a.elements] == [e.name for e in b.elements]
    assert a.text == b.text and a.byte_order == b.byte_order and a.comments == b.comments


@pytest.mark.parametrize("text,byte_order", [(True, "="), (False, "<"), (False, ">")])
def test_ply_encodings_roundtrip(tmp_path, text, byte_order):
    from plyfile import PlyData, PlyElement

    rng = np.random.default_rng(0)
    arr = np.zeros(50, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "u2"), ("label", "i4")])
    for c in "xyz":
        arr[c] = rng.normal(size=50)
    arr["intensity"] = rng.integers(0, 60000, 50)
    arr["label"] = rng.integers(-1, 10, 50)
    path = tmp_path / "in.ply"
    PlyData([PlyElement.describe(arr, "vertex")], text=text, byte_order=byte_order, comments=["hello"]).write(str(path))
    cloud = read(str(path))
    write(cloud.with_fields(score=np.arange(50, dtype=np.uint8)), str(tmp_path / "out.ply"))
    out = PlyData.read(str(tmp_path / "out.ply"))
    assert out.text == text and out.comments == ["hello"]
    for name in arr.dtype.names:
        assert np.array_equal(out["vertex"][name], arr[name])
    # a new field is a CloudCompare scalar field whatever the file's naming, and reads back under its name
    assert [p.name for p in out["vertex"].properties] == list(arr.dtype.names) + ["scalar_score"]
    assert np.array_equal(out["vertex"]["scalar_score"], np.arange(50))
    assert np.array_equal(read(str(tmp_path / "out.ply")).fields["score"], np.arange(50))


def test_las_to_ply_to_las_keeps_coordinates(als_files, tmp_path):
    path = next(p for p in als_files if "LA93" in p.name)
    cloud = read(str(path))
    write(cloud, str(tmp_path / "a.ply"))
    back = read(str(tmp_path / "a.ply"))
    assert np.array_equal(back.xyz, cloud.xyz)  # PLY written as double: georeferenced values exact
    write(back, str(tmp_path / "b.las"))
    again = read(str(tmp_path / "b.las"))
    assert np.abs(again.xyz - cloud.xyz).max() < 1e-6 + 5e-4  # new LAS header: 1 mm scale
    assert np.array_equal(again.fields["classification"], cloud.fields["classification"])


def test_kitti_bin_roundtrip(shared_data, tmp_path):
    src = shared_data / "kitti" / "training" / "velodyne" / "000000.bin"
    cloud = read(str(src))
    assert list(cloud.fields) == ["intensity"]
    assert len(cloud) == os.path.getsize(src) // 16
    write(cloud, str(tmp_path / "a.bin"))
    assert (tmp_path / "a.bin").read_bytes() == src.read_bytes()


def test_semantickitti_labels(shared_data):
    seq = shared_data / "lidarseg" / "semantickitti" / "sequences" / "00"
    scan = next((seq / "velodyne").glob("*.bin"))
    label = seq / "labels" / (scan.stem + ".label")
    cloud = read(str(scan), labels=str(label))
    raw = np.fromfile(label, dtype="<u4")
    assert np.array_equal(cloud.fields["semantic"], raw & 0xFFFF)
    assert 40 in set(np.unique(cloud.fields["semantic"]).tolist())  # road


def test_npy_and_text_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    cloud = PointCloud(rng.normal(size=(100, 3)) * 1000 + [770000.123456789, 6.6e6, 12.5],
                       {"intensity": rng.random(100).astype(np.float32), "class": rng.integers(0, 5, 100).astype(np.int64)})
    for ext in ("npy", "txt"):
        write(cloud, str(tmp_path / f"a.{ext}"))
        back = read(str(tmp_path / f"a.{ext}"))
        assert np.array_equal(back.xyz, cloud.xyz), ext
        assert np.array_equal(back.fields["class"], cloud.fields["class"]), ext
        # Text carries no dtypes: float32 values are written with 9 significant digits and come back exactly.
        assert np.array_equal(back.fields["intensity"].astype(np.float32), cloud.fields["intensity"]), ext


def test_text_with_column_spec(tmp_path):
    (tmp_path / "a.xyz").write_text("1 2 3 7 0.5\n4 5 6 8 0.25\n")
    cloud = read(str(tmp_path / "a.xyz"), columns="x,y,z,class,intensity")
    assert np.array_equal(cloud.xyz, [[1, 2, 3], [4, 5, 6]])
    assert cloud.fields["class"].tolist() == [7, 8] and cloud.fields["intensity"].tolist() == [0.5, 0.25]


def test_s3dis_room(shared_data):
    room = shared_data / "indoor" / "s3dis" / "Area_3" / "hallway_3"
    cloud = read(str(room))
    files = sorted((room / "Annotations").glob("*.txt"))
    total = sum(sum(1 for _ in open(f)) for f in files)
    assert len(cloud) == total
    names = cloud.meta["class_names"]
    assert set(names[c] for c in np.unique(cloud.fields["class"])) == {"ceiling", "clutter", "door", "floor", "wall"}
    assert cloud.fields["instance"].max() == len(files) - 1
    assert cloud.fields["red"].dtype == np.uint8


def test_pcd_binary_compressed_real(shared_data, tmp_path):
    src = shared_data / "indoor" / "osd_tabletop" / "test0.pcd"
    cloud = read(str(src))
    assert 100_000 < len(cloud) < 307_200
    assert cloud.meta["pcd_dropped"] == 640 * 480 - len(cloud)
    assert {"label", "red", "green", "blue"} <= set(cloud.fields)
    assert np.isfinite(cloud.xyz).all() and np.abs(cloud.xyz).max() < 10  # metres from a Kinect
    write(cloud, str(tmp_path / "a.pcd"))
    back = read(str(tmp_path / "a.pcd"))
    assert np.array_equal(back.xyz, cloud.xyz)
    for k, v in cloud.fields.items():
        assert np.array_equal(back.fields[k], v), k


def test_lzf_matches_known_stream():
    from pcseg.io.pcd import lzf_decompress

    # literal "abc" (ctrl 2), then back reference length 3+2=5? (ctrl (3<<5)|0, offset 2 -> ref = op-3) repeats
    stream = bytes([2]) + b"abc" + bytes([(3 << 5) | 0, 2])
    assert lzf_decompress(stream, 8) == b"abcabcab"


def test_stdin_stdout_pipeline(als_files, tmp_path):
    import subprocess
    import sys

    src = next(p for p in als_files if p.name.startswith("test_data_77060_627760"))
    cmd = [sys.executable, "-m", "pcseg", "subsample", "-", "--cell", "0.5", "-o", "-", "--format", "laz"]
    r = subprocess.run(cmd, input=src.read_bytes(), capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    out = laspy.read(io.BytesIO(r.stdout))
    assert out.header.are_points_compressed and 1000 < len(out.points) < len(laspy.read(src).points)
