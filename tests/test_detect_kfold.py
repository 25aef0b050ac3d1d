"""k-fold validation of the detector (issue #29 item 1): fold assignment, the data a fold trains on, the scoring
of held-out SemanticKITTI scans on their fitted boxes, the aggregate over folds, and the refusal of an init that
has seen a held-out frame. No training: the engine's data is inspected, detections are given."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pcseg.engine.detect_folds import (
    aggregate, all_frames, check_init, fold_config, kfold_frames, list_scans, scan_frame_id, training_ids,
)
from pcseg.errors import UsageError

KITTI = "kitti/training"
SEQUENCES = "lidarseg/semantickitti/sequences"
IDS = [f"kitti:{i:06d}" for i in (0, 1, 2, 6, 7, 8, 16, 134, 4139)] + ["semantickitti:00/000000",
                                                                       "semantickitti:00b/000000"]


@pytest.fixture(scope="module")
def sources(shared_data):
    kitti = shared_data / KITTI
    scans = list_scans(shared_data / SEQUENCES)
    if not (kitti / "velodyne").is_dir() or len(scans) < 2:
        pytest.skip("KITTI frames or SemanticKITTI scans missing")
    return str(kitti), scans


# ---------------------------------------------------------------------------------------------------------------
# folds
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 5, 11, 12])
def test_folds_partition_the_frames_in_balanced_sizes(n):
    frames = [f"kitti:{i:06d}" for i in range(n)]
    for k in range(2, n + 1):
        folds = kfold_frames(frames, k, seed=0)
        assert len(folds) == k
        flat = [f for fold in folds for f in fold]
        assert sorted(flat) == sorted(frames) and len(flat) == len(set(flat))   # each frame in exactly one fold
        sizes = [len(f) for f in folds]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_folds_are_deterministic_and_the_seed_changes_them():
    a = kfold_frames(IDS, 4, seed=0)
    assert a == kfold_frames(IDS, 4, seed=0)
    assert a == kfold_frames(list(reversed(IDS)), 4, seed=0)      # the input's order does not matter
    assert [len(f) for f in a] == [3, 3, 3, 2]
    others = [kfold_frames(IDS, 4, seed=s) for s in range(1, 6)]
    assert any(o != a for o in others)
    assert kfold_frames(IDS, 4, seed=1) != a


def test_bad_fold_requests_are_usage_errors():
    with pytest.raises(UsageError):
        kfold_frames(IDS, 1, 0)
    with pytest.raises(UsageError):
        kfold_frames(IDS, len(IDS) + 1, 0)
    with pytest.raises(UsageError):
        kfold_frames(IDS + IDS[:1], 4, 0)


def test_frame_ids_cover_kitti_frames_and_scans(sources):
    kitti, scans = sources
    assert scan_frame_id("/x/sequences/00b/velodyne/000000.bin") == "semantickitti:00b/000000"
    assert all_frames(kitti, scans) == IDS


# ---------------------------------------------------------------------------------------------------------------
# the data a fold trains on
# ---------------------------------------------------------------------------------------------------------------

def test_a_fold_trains_on_no_held_out_frame(sources):
    from pcseg.engine.detect import DetectTrainConfig, _Data

    kitti, scans = sources
    frames = all_frames(kitti, scans)
    recipe = DetectTrainConfig(scan_frames=True, gt_sampling=True, steps=1)
    folds = kfold_frames(frames, 4, seed=0)
    assert any(any(f.startswith("semantickitti:") for f in fold) for fold in folds)
    for fold in folds:
        cfg = fold_config(recipe, fold, frames, kitti, scans)
        data = _Data(cfg)                                   # what train_detector would load: no training
        ids = training_ids(data)
        rest = sorted(set(frames) - set(fold))
        assert ids["held_out"] == fold
        assert ids["frames"] == rest                         # whole training frames: every other frame
        assert ids["database"] == rest                       # ground-truth sampling: the same, none held out
        assert not {scan_frame_id(s) for s in cfg.gt_scans} & set(fold)
        assert sorted(scan_frame_id(s) for s in cfg.val_scans) == [f for f in fold if f.startswith("semantickitti:")]
        assert sorted({f.frame_id for f in data.val_scans}) == [f for f in fold if f.startswith("semantickitti:")]
        assert sorted(f.half for f in data.val_scans) == sorted(["front", "rear"] * len(cfg.val_scans))
    # a scan both trained on and held out is refused; the defaults train on every frame but 004139
    with pytest.raises(UsageError, match="held out"):
        _Data(dataclasses.replace(recipe, kitti=kitti, gt_scans=scans[:1], val_scans=scans[:1]))
    default = training_ids(_Data(DetectTrainConfig(kitti=kitti, gt_sampling=False)))
    assert default["held_out"] == ["kitti:004139"]
    assert default["frames"] == [f for f in frames if f.startswith("kitti:") and f != "kitti:004139"]


# ---------------------------------------------------------------------------------------------------------------
# held-out scans are scored on their fitted boxes
# ---------------------------------------------------------------------------------------------------------------

class _GivenDetections:
    """A stand-in detector: ``detect_points`` is patched to return what the test gives for each frame."""

    training = False
    point_range = [0.0, -32.0, -3.0, 64.0, 32.0, 1.0]
    fusion = False

    def eval(self):
        return self

    def train(self, mode=True):
        return self


def test_a_held_out_scan_is_scored_on_its_fitted_boxes(sources, monkeypatch):
    from pcseg.data.detection import semantickitti_objects
    from pcseg.engine import detect
    from pcseg.engine.detect_folds import evaluate_fold
    from pcseg.models.detector import Detections

    _, scans = sources
    frames = detect.scan_eval_frames(scans)
    assert [f.eval_id for f in frames] == [f"{scan_frame_id(s)}#{h}" for s in scans for h in ("front", "rear")]
    given = {}
    monkeypatch.setattr(detect, "detect_points", lambda model, points, *a, **k: given[id(points)])

    def run(make):
        given.clear()
        for f in frames:
            given[id(f.points)] = make(f)
        return evaluate_fold(_GivenDetections(), frames)[0]

    from pcseg.engine.detect_folds import figures

    # perfect: the fitted boxes themselves (plus a pedestrian, which a scan cannot score and is dropped)
    def perfect(f):
        boxes = np.concatenate([f.boxes, [[10.0, 0.0, -1.0, 0.8, 0.6, 1.7, 0.0]]]).astype(np.float32)
        return Detections(boxes, np.linspace(0.9, 0.5, len(boxes)), list(f.names) + ["Pedestrian"])

    best = figures(run(perfect))
    for key in ("Car_bev_moderate@0.7", "Car_3d_moderate@0.7", "Car_3d_moderate@0.5", "Car_bev_all@0.7",
                "Car_3d_all@0.7", "Car_3d_all@0.5"):
        assert best[key] == pytest.approx(100.0), key
    assert best["Pedestrian_3d_moderate@0.5"] is None        # no pedestrian boxes on scans, and none counted
    # every fitted box inside the detector's x-y range counts once, from the half that has it in front
    expected = 0
    for s in scans:
        _, boxes, _ = semantickitti_objects(s)
        for sign in (1, -1):
            x, y = sign * boxes[:, 0], sign * boxes[:, 1]
            expected += int(((x >= 0) & (x < 64) & (y >= -32) & (y < 32)).sum())
    assert best["Car_gt_all"] == expected > 0
    assert 0 < best["Car_gt_moderate"] <= expected
    # nothing detected: AP 0 (not None: there are cars to find)
    empty = figures(run(lambda f: Detections(np.zeros((0, 7), np.float32), np.zeros(0), [])))
    assert empty["Car_3d_moderate@0.7"] == 0.0 and empty["Car_bev_all@0.5"] == 0.0
    # boxes moved 1.5 m sideways: no longer above 0.5 BEV IoU
    def shifted(f):
        b = f.boxes.astype(np.float32).copy()
        b[:, 1] += 1.5
        return Detections(b, np.full(len(b), 0.9), list(f.names))

    assert figures(run(shifted))["Car_bev_moderate@0.5"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# aggregate over folds
# ---------------------------------------------------------------------------------------------------------------

def test_aggregate_matches_a_direct_computation():
    values = [45.0, None, 50.0, 12.5, 100.0]
    a = aggregate(values)
    v = np.array([45.0, 50.0, 12.5, 100.0])
    assert a["n"] == 4
    assert a["mean"] == pytest.approx(v.mean())
    assert a["std"] == pytest.approx(np.sqrt(((v - v.mean()) ** 2).sum() / 3))
    assert (a["min"], a["max"]) == (12.5, 100.0)
    assert aggregate([7.0]) == {"n": 1, "mean": 7.0, "std": None, "min": 7.0, "max": 7.0}
    assert aggregate([None, None])["mean"] is None


# ---------------------------------------------------------------------------------------------------------------
# the init may not have seen the held-out frames
# ---------------------------------------------------------------------------------------------------------------

def _checkpoint(path: Path, training: dict) -> str:
    from pcseg.models import build
    from pcseg.models.checkpoint import save_checkpoint

    model = build("focals-centerpoint", point_range=[0.0, -32.0, -3.0, 64.0, 32.0, 1.0], voxel_size=[0.4, 0.4, 0.4],
                  channels=[4, 4, 4, 4], bev_channels=4)
    save_checkpoint(path, model, {"model": "focals-centerpoint", "task": "detect", "training": training})
    return str(path)


def test_an_init_that_saw_a_held_out_frame_is_refused(tmp_path):
    from pcseg.models import zoo

    if "focals-kitti" not in zoo.shipped():
        pytest.skip("focals-kitti is not shipped here")
    with pytest.raises(UsageError) as e:
        check_init("focals-kitti", ["kitti:000001", "semantickitti:00/000000"], fold=2)
    msg = str(e.value)
    assert "\n" not in msg and "kitti:000001" in msg and "semantickitti:00/000000" in msg and "fold 2" in msg
    # focals-kitti never trained on 004139, but a k-fold holding out only that frame is still checked by card:
    assert "focals-kitti" in check_init("focals-kitti", ["kitti:004139"])
    # pre-trained on synthetic scenes only: accepted, and said so
    synthetic = _checkpoint(tmp_path / "synthetic.safetensors", {
        "kitti_frames": [], "held_out": [], "synthetic_steps": 500, "steps": 500,
        "config": {"gt_scans": [], "init": None}})
    assert "500 synthetic steps" in check_init(synthetic, IDS)
    # one that started from focals-kitti has seen its frames, even with no frame of its own
    child = _checkpoint(tmp_path / "child.safetensors", {
        "kitti_frames": [], "held_out": [], "synthetic_steps": 0, "steps": 10,
        "config": {"gt_scans": [], "init": "focals-kitti"}})
    with pytest.raises(UsageError, match="kitti:000008"):
        check_init(child, ["kitti:000008"])
    # a card that lists no training frames cannot be checked
    blind = _checkpoint(tmp_path / "blind.safetensors", {"steps": 10})
    with pytest.raises(UsageError, match="cannot be checked"):
        check_init(blind, ["kitti:000008"])
    # scans in the ground-truth database count as seen
    db = _checkpoint(tmp_path / "db.safetensors", {
        "kitti_frames": ["000002"], "held_out": [], "synthetic_steps": 0, "steps": 10,
        "config": {"gt_scans": ["../shared/data/lidarseg/semantickitti/sequences/00b/velodyne/000000.bin"],
                   "init": None}})
    with pytest.raises(UsageError, match="semantickitti:00b/000000"):
        check_init(db, ["semantickitti:00b/000000"])
