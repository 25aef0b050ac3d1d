"""Class maps: built-in tables checked against real files, encode/decode, JSON round trip."""
from __future__ import annotations

import json

import laspy
import numpy as np
import plyfile
import pytest

from pcseg.data.classmaps import (
    ASPRS_DEFAULT_CODES, BUILTIN_CLASS_MAPS, IGNORE, S3DIS_NAMES, SCANNET20_NAMES, SCANNET20_NYU40,
    SEMANTICKITTI_LEARNING_MAP, ClassMap, builtin_class_map, load_class_map,
)
from pcseg.errors import BadInputError, UsageError


def _slow_encode(cm: ClassMap, raw) -> np.ndarray:
    def one(v):
        if int(v) in cm.raw_to_set:  # a partial label: -2 - (bit mask of its classes)
            return -2 - sum(1 << c for c in cm.raw_to_set[int(v)])
        return cm.raw_to_train.get(int(v), IGNORE)
    return np.array([one(v) for v in raw], dtype=np.int64)


@pytest.mark.parametrize("name", sorted(BUILTIN_CLASS_MAPS))
def test_builtin_encode_matches_dict_lookup_and_json_round_trip(name):
    cm = builtin_class_map(name)
    rng = np.random.default_rng(0)
    raw = np.concatenate([np.array(sorted(cm.raw_to_train)), rng.integers(-5, 300, 500)])
    np.testing.assert_array_equal(cm.encode(raw), _slow_encode(cm, raw))
    back = ClassMap.from_dict(json.loads(json.dumps(cm.to_dict())))
    assert back == cm
    np.testing.assert_array_equal(back.encode(raw), cm.encode(raw))
    assert cm.color_array.shape == (cm.num_classes, 3) and cm.color_array.dtype == np.uint8


@pytest.mark.parametrize("name", sorted(BUILTIN_CLASS_MAPS))
def test_decode_inverts_encode_on_each_class_code(name):
    cm = builtin_class_map(name)
    ids = np.arange(cm.num_classes)
    codes = cm.decode(ids)
    if name in ("als-ground", "als-ahn3"):  # readers of partially labelled files: they write the als codes
        assert np.array_equal(codes, builtin_class_map("als").decode(ids))
        return
    for i, code in zip(ids, codes):
        if cm.raw_codes[i] is None:
            assert code == cm.unlabelled_raw
        elif code == cm.unlabelled_raw:  # ASPRS 'other' is written as 1 (unclassified), which reads as ignored
            assert name in ("asprs", "als") and cm.names[i] == "other"
        else:
            assert cm.encode([code])[0] == i, (cm.names[i], code)
    assert cm.decode([IGNORE])[0] == cm.unlabelled_raw
    with pytest.raises(ValueError):
        cm.decode([cm.num_classes])


def test_io_reader_uses_the_same_s3dis_order():
    from pcseg.io.s3dis import S3DIS_CLASSES

    assert tuple(S3DIS_CLASSES) == S3DIS_NAMES


def test_asprs_map_on_real_tiles(shared_data):
    cm = builtin_class_map("asprs")
    # ign_mnx_pont: ground, vegetation, water, bridge, IGN 65 artefacts, 66 virtual points, 67 misc. buildings
    raw = np.asarray(laspy.read(shared_data / "als" / "ign_mnx_pont.laz").classification)
    enc = cm.encode(raw)
    assert (enc == cm.index("bridge")).sum() == (raw == 17).sum() > 0
    assert (enc == cm.index("water")).sum() == (raw == 9).sum() > 0
    assert (enc == cm.index("high vegetation")).sum() == (raw == 5).sum()
    assert np.all(enc[np.isin(raw, [1, 65, 66])] == IGNORE)
    assert np.all(enc[raw == 67] == cm.index("other"))
    # standard codes survive a round trip (predictions written back as ASPRS codes)
    known = np.isin(raw, [2, 3, 4, 5, 6, 9, 17])
    np.testing.assert_array_equal(cm.decode(enc[known]), raw[known].astype(np.int64))
    # PDAL sample: 14 (wire conductor) -> other, 31 (user defined) ignored
    raw = np.asarray(laspy.read(shared_data / "als" / "sample_c.las").classification)
    enc = cm.encode(raw)
    assert np.all(enc[raw == 14] == cm.index("other")) and np.all(enc[raw == 31] == IGNORE)
    assert set(ASPRS_DEFAULT_CODES) >= {2, 3, 4, 5, 6, 9, 17, 64, 65, 66, 67}


def test_scannet20_ids_agree_with_the_files_nyu40_ids(shared_data):
    v = plyfile.PlyData.read(str(shared_data / "indoor" / "scannet_scene0000_00.ply"))["vertex"].data
    cls, nyu = np.asarray(v["class"]).astype(int), np.asarray(v["nyu40"]).astype(int)
    labelled = cls > 0
    # every ScanNet-20 id k in the file carries the NYU40 id listed for class k
    np.testing.assert_array_equal(nyu[labelled], np.array(SCANNET20_NYU40)[cls[labelled] - 1])
    cm = builtin_class_map("scannet20")
    enc = cm.encode(cls)
    assert np.all(enc[~labelled] == IGNORE)
    assert np.all(enc[labelled] == cls[labelled] - 1)
    assert cm.names[cm.encode([1])[0]] == "wall" and len(SCANNET20_NAMES) == 20

    # the same room read as S3DIS classes, from either field
    s20 = builtin_class_map("scannet20-to-s3dis").encode(cls)
    s40 = builtin_class_map("nyu40-to-s3dis").encode(nyu)
    floor = S3DIS_NAMES.index("floor")
    assert np.all(s20[cls == 2] == floor) and np.all(s40[nyu == 2] == floor)
    raw_id = {n: i + 1 for i, n in enumerate(SCANNET20_NAMES)}
    assert np.all(s20[cls == raw_id["cabinet"]] == IGNORE)  # ambiguous: ignored
    assert (cls == raw_id["desk"]).any() and np.all(s20[cls == raw_id["desk"]] == S3DIS_NAMES.index("table"))
    # where both are defined on ScanNet-20 points, the two maps agree
    both = (s20 >= 0) & (s40 >= 0) & labelled
    np.testing.assert_array_equal(s20[both], s40[both])


def test_semantickitti_learning_map_on_real_scan(shared_data):
    seq = shared_data / "lidarseg" / "semantickitti" / "sequences" / "00"
    raw = np.fromfile(seq / "labels" / "000000.label", dtype="<u4") & 0xFFFF
    cm = builtin_class_map("semantickitti")
    enc = cm.encode(raw)
    assert cm.num_classes == 19
    for r, name in SEMANTICKITTI_LEARNING_MAP.items():
        sel = raw == r
        if sel.any():
            assert np.all(enc[sel] == (IGNORE if name is None else cm.index(name)))
    assert (enc == cm.index("road")).sum() == np.isin(raw, [40, 60]).sum() > 0
    assert np.all(enc[np.isin(raw, [0, 1, 52, 99])] == IGNORE)
    assert cm.encode([252, 254, 259]).tolist() == [cm.index("car"), cm.index("person"), cm.index("other-vehicle")]
    # the 19+1 training-id files: 0 unlabelled, 1 car ... 19 traffic-sign
    train = builtin_class_map("semantickitti-train")
    assert train.encode([0, 1, 19]).tolist() == [IGNORE, 0, 18]
    lab = np.load(shared_data / "lidarseg" / "xyz_only" / "semkitti_000700_labels.npy").reshape(-1)
    assert train.encode(lab).max() <= 18 and (train.encode(lab) >= 0).any()


def test_custom_map_from_minimal_dict_and_json_file(tmp_path):
    cm = ClassMap.from_dict({"names": ["ground", "tree"], "raw_to_train": {"2": 0, "5": 1, "1": -1}})
    assert cm.encode([2, 5, 1, 7]).tolist() == [0, 1, IGNORE, IGNORE]
    assert cm.decode([0, 1, -1]).tolist() == [2, 5, 0]
    assert cm.ignored_raw == (1,)
    path = tmp_path / "map.json"
    path.write_text(json.dumps(cm.to_dict()))
    assert load_class_map(path) == cm
    ident = ClassMap.from_dict({"names": ["a", "b", "c"]})
    assert ident.encode([0, 1, 2, 3]).tolist() == [0, 1, 2, IGNORE]


def test_bad_class_maps_are_one_line_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown class map"):
        load_class_map("nonsense")
    with pytest.raises(BadInputError, match="not found"):
        load_class_map(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"names": ["a"], "raw_to_train": {"3": 4}}')
    with pytest.raises(BadInputError, match="out of range"):
        load_class_map(bad)
    with pytest.raises(ValueError, match="integers"):
        builtin_class_map("s3dis").encode(np.array([0.5]))
