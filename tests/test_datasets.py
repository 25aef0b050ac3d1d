"""--data strings on the real layouts, labels through class maps, input features and their errors."""
from __future__ import annotations

import shutil

import laspy
import numpy as np
import pytest

from pcseg.data.classmaps import IGNORE, S3DIS_NAMES, builtin_class_map
from pcseg.data.datasets import check_disjoint, resolve_data
from pcseg.data.features import (
    FEATURE_PRESETS, channel_slices, make_features, num_features, parse_channels, scale_color, scale_intensity,
)
from pcseg.errors import BadInputError, UsageError


# ----------------------------------------------------------------------------------------------- features
def test_channel_layout_and_presets():
    assert channel_slices(("one", "rgb", "z")) == {"one": slice(0, 1), "rgb": slice(1, 4), "z": slice(4, 5)}
    assert num_features("one,rgb,z") == 5 and num_features(FEATURE_PRESETS["lidar"]) == 2
    with pytest.raises(UsageError, match="unknown feature channel"):
        parse_channels("one,normals")
    with pytest.raises(UsageError, match="repeated"):
        parse_channels(["one", "one"])


def test_colour_scaling_whatever_the_storage():
    np.testing.assert_allclose(scale_color(np.array([[0, 255]], np.uint8)), [[0, 1]])
    np.testing.assert_allclose(scale_color(np.array([[0, 65535, 32768]], np.uint16)), [[0, 1, 32768 / 65535]])
    np.testing.assert_allclose(scale_color(np.array([[0, 200]], np.uint16)), [[0, 200 / 255]])  # 8-bit in uint16
    np.testing.assert_allclose(scale_color(np.array([[0.0, 0.5]], np.float32)), [[0, 0.5]])
    np.testing.assert_allclose(scale_color(np.array([[0.0, 127.5]])), [[0, 0.5]])


def test_intensity_scaling():
    v = np.arange(1000, dtype=np.uint16)
    s = scale_intensity(v)
    assert s.dtype == np.float32 and s.max() == 1.0 and s.min() == 0.0
    assert s[500] == pytest.approx(500 / np.percentile(v, 99))
    kitti = np.array([0.0, 0.3, 0.99], np.float32)
    np.testing.assert_array_equal(scale_intensity(kitti), kitti)


def test_features_on_real_las_tiles(shared_data):
    path = shared_data / "als" / "autzen_trim.las"  # RGB stored as 8-bit values in uint16 fields
    las = laspy.read(path)
    fields = {n: np.asarray(las[n]) for n in ("red", "green", "blue", "intensity")}
    xyz = np.stack([las.x, las.y, las.z], axis=1)
    f = make_features(fields, xyz, ("one", "rgb", "z", "intensity"), path=str(path))
    assert f.shape == (len(xyz), 6) and f.dtype == np.float32
    np.testing.assert_array_equal(f[:, 0], 1.0)
    assert f[:, 1:4].max() > 0.8 and f[:, 1:4].max() <= 1.0
    np.testing.assert_allclose(f[:, 1], fields["red"] / 255.0, rtol=1e-6)
    assert f[:, 4].min() == 0.0 and f[:, 4].max() == pytest.approx(np.ptp(xyz[:, 2]), rel=1e-5)
    assert 0.0 <= f[:, 5].min() and f[:, 5].max() == 1.0


def test_missing_channel_is_an_error_naming_file_channel_and_fields(shared_data):
    src = resolve_data([str(shared_data / "indoor" / "scannet_scene0000_00.ply")], "one,intensity")[0]
    with pytest.raises(BadInputError) as e:
        src.load()
    msg = str(e.value)
    assert "scannet_scene0000_00.ply" in msg and "'intensity'" in msg and "red" in msg and "nyu40" in msg
    assert "\n" not in msg
    # a LAS tile whose colour dimensions exist but hold zeros: never silent zeros
    src = resolve_data([str(shared_data / "als" / "test_data_77060_627760_LA93_IGN69.laz")], "one,rgb")[0]
    with pytest.raises(BadInputError, match="all zero"):
        src.load()
    # ign_mnx tiles (point format 6) have no colour at all
    src = resolve_data([str(shared_data / "als" / "ign_mnx_crop_3.laz")], "one,rgb")[0]
    with pytest.raises(BadInputError, match="'rgb' needs fields red, green, blue"):
        src.load()


# ----------------------------------------------------------------------------------------------- layouts
def test_s3dis_room_and_root(shared_data, tmp_path):
    room = shared_data / "indoor" / "s3dis" / "Area_3" / "hallway_3"
    (src,) = resolve_data([str(room)], "one,rgb,z")
    assert src.kind == "s3dis" and src.class_map.name == "s3dis" and src.label_field == "class"
    assert len(src.files) == 12
    cloud = src.load()
    assert cloud.features.shape == (len(cloud), 5)
    assert cloud.features[:, 4].min() == 0.0  # height above the lowest point
    # labels follow the annotation file names
    present = {S3DIS_NAMES[i] for i in np.unique(cloud.labels)}
    assert present == {"ceiling", "clutter", "door", "floor", "wall"}
    n_door = sum(len(np.loadtxt(f)) for f in (room / "Annotations").glob("door_*.txt"))
    assert (cloud.labels == S3DIS_NAMES.index("door")).sum() == n_door
    # the root: Area_3 trains; Area 5 is held out for validation, and this root has none
    root = shared_data / "indoor" / "s3dis"
    assert [s.path for s in resolve_data([str(root)], "one")] == [str(room)]
    with pytest.raises(BadInputError, match="Area_5"):
        resolve_data([str(root)], "one", role="val")
    assert [s.path for s in resolve_data([str(root)], "one", role="val", s3dis_val_area=3)] == [str(room)]
    assert len(resolve_data([str(root / "Area_3")], "one")) == 1


def test_scannet_ply(shared_data):
    files = sorted(str(p) for p in (shared_data / "indoor").glob("scannet_*.ply"))
    srcs = resolve_data([str(shared_data / "indoor" / "scannet_scene0000_0[01].ply")], "one,rgb")
    assert [s.path for s in srcs] == files[:2]
    assert all(s.kind == "scannet" and s.class_map.name == "scannet20" for s in srcs)
    cloud = srcs[0].load()
    assert cloud.labels.min() == IGNORE and cloud.labels.max() <= 19
    # S3DIS classes from ScanNet: the cross map, from the nyu40 field with nyu40-to-s3dis
    (s,) = resolve_data([files[0]], "one,rgb", class_map="nyu40-to-s3dis")
    assert s.label_field == "nyu40"
    lab = s.load().labels
    assert (lab == S3DIS_NAMES.index("floor")).sum() > 1000


def test_mixing_class_maps(shared_data):
    room = str(shared_data / "indoor" / "s3dis" / "Area_3" / "hallway_3")
    scan = str(shared_data / "indoor" / "scannet_scene0000_00.ply")
    with pytest.raises(UsageError, match="different class maps"):
        resolve_data([room, scan], "one,rgb")
    srcs = resolve_data([room, scan], "one,rgb", class_map="scannet20-to-s3dis")
    assert [s.class_map.name for s in srcs] == ["s3dis", "scannet20-to-s3dis"]  # each read in its own codes
    assert len({s.class_map.names for s in srcs}) == 1
    with pytest.raises(UsageError, match="ASPRS"):
        resolve_data([scan], "one", class_map="asprs")


def test_semantickitti_sequence(shared_data, tmp_path):
    seq = shared_data / "lidarseg" / "semantickitti" / "sequences" / "00"
    (src,) = resolve_data([str(seq)], "one,intensity")
    assert src.kind == "semantickitti" and src.label_field == "semantic" and len(src.files) == 2
    cloud = src.load()
    raw = np.fromfile(seq / "labels" / "000000.label", dtype="<u4") & 0xFFFF
    np.testing.assert_array_equal(cloud.labels, builtin_class_map("semantickitti").encode(raw))
    assert 0 < cloud.features[:, 1].max() <= 1.0
    # the sequences root uses the standard split: 00 trains, 08 validates
    assert len(resolve_data([str(seq.parent)], "one")) == 1
    with pytest.raises(BadInputError, match="08"):
        resolve_data([str(seq.parent)], "one", role="val")
    # a scan without its labels file
    lone = tmp_path / "seq" / "velodyne"
    lone.mkdir(parents=True)
    shutil.copy(seq / "velodyne" / "000000.bin", lone)
    with pytest.raises(BadInputError, match="labels"):
        resolve_data([str(lone / "000000.bin")], "one")


def test_als_glob_and_folder(shared_data, als_files, tmp_path):
    srcs = resolve_data([str(shared_data / "als" / "test_data_*.laz")], "one,intensity")
    assert len(srcs) == 6 and all(s.kind == "als" and s.label_field == "classification" for s in srcs)
    assert len(resolve_data([str(shared_data / "als")], "one")) == len(als_files)
    cloud = resolve_data([str(shared_data / "als" / "ahn3_cropped_2.laz")], "one,intensity")[0].load()
    cm = cloud.class_map
    raw = np.asarray(laspy.read(shared_data / "als" / "ahn3_cropped_2.laz").classification)
    assert (cloud.labels == cm.index("building")).sum() == (raw == 6).sum()
    assert (cloud.labels == IGNORE).sum() == np.isin(raw, [1, 26]).sum()  # AHN3's 1 and 26: ignored
    with pytest.raises(BadInputError, match="matches no file"):
        resolve_data([str(tmp_path / "*.laz")], "one")
    with pytest.raises(BadInputError, match="no such file"):
        resolve_data([str(tmp_path / "missing.las")], "one")
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(BadInputError, match="no point cloud file"):
        resolve_data([str(tmp_path)], "one")


def test_label_field_and_generic_files(shared_data, tmp_path):
    tile = str(shared_data / "als" / "warsaw_small.las")
    (src,) = resolve_data([tile], "one", label_field="user_data")
    with pytest.raises(BadInputError, match="no label field 'nonexistent'"):
        resolve_data([tile], "one", label_field="nonexistent")[0].load()
    np.testing.assert_array_equal(src.load().labels,
                                  src.class_map.encode(np.asarray(laspy.read(tile).user_data)))
    # a generic file needs a class map
    fragment = tmp_path / "frag.txt"
    rng = np.random.default_rng(0)
    np.savetxt(fragment, np.column_stack([rng.random((50, 3)), rng.integers(0, 3, 50)]), fmt="%.4f")
    with pytest.raises(UsageError, match="--class-map"):
        resolve_data([str(fragment)], "one")
    (src,) = resolve_data([str(fragment)], "one,z", class_map="s3dis", columns="x,y,z,class")
    cloud = src.load()
    assert src.kind == "generic" and cloud.labels.tolist() == np.loadtxt(fragment)[:, 3].astype(int).tolist()


def test_synthetic_rooms_and_disjoint_splits():
    train = resolve_data(["synthetic:rooms:2"], "one,rgb,z")
    val = resolve_data(["synthetic:rooms:1"], "one,rgb,z", role="val")
    assert [s.path for s in train] == ["synthetic:rooms#0", "synthetic:rooms#1"]
    assert train[0].class_map.name == "s3dis" and train[0].files == ()
    check_disjoint(train, val)
    with pytest.raises(UsageError, match="both a training and a validation"):
        check_disjoint(train, train[:1])
    with pytest.raises(UsageError):
        resolve_data(["synthetic:rooms:x"], "one")
    assert len(resolve_data(["synthetic:rooms"], "one")) == 8
    assert train[0].fingerprint() != train[1].fingerprint()


def test_color_optional_reads_a_cloud_without_colour_as_zero_colour(shared_data):
    """A model trained with colour dropped to zero (card ``color_drop``) reads a colourless cloud as zero colour,
    the input it learnt; every other model still refuses it."""
    path = shared_data / "als" / "autzen_trim.las"
    las = laspy.read(path)
    xyz = np.stack([las.x, las.y, las.z], axis=1)
    coloured = {n: np.asarray(las[n]) for n in ("red", "green", "blue")}
    for fields in ({}, {k: np.zeros_like(v) for k, v in coloured.items()}):  # no colour fields / all zero
        f = make_features(fields, xyz, ("one", "rgb", "z"), color_optional=True)
        assert f.shape == (len(xyz), 5)
        np.testing.assert_array_equal(f[:, 1:4], 0.0)
        np.testing.assert_allclose(f[:, 4], xyz[:, 2] - xyz[:, 2].min(), rtol=1e-5)
        with pytest.raises(BadInputError):
            make_features(fields, xyz, ("one", "rgb", "z"))
    # colour that is there is read as always
    np.testing.assert_array_equal(make_features(coloured, xyz, ("one", "rgb"), color_optional=True),
                                  make_features(coloured, xyz, ("one", "rgb")))
