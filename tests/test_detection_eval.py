"""KITTI AP on hand-computed cases: perfect detections, a false positive at a known score, a miss, difficulty
levels, neighbouring classes, DontCare, the per-class overlap, BEV vs 3D, and lidar-frame result folders."""
from __future__ import annotations

import numpy as np
import pytest

from pcseg.engine.detection_eval import (
    LOOSE_OVERLAP, average_precision, evaluate, evaluate_folders, format_results, pool_reliability,
    score_reliability,
)
from pcseg.errors import BadInputError, UsageError
from pcseg.io.kitti import (
    Calibration, KittiObject, format_label_lines, lidar_boxes_to_objects, objects_to_lidar_boxes, read_labels,
)


def obj(x, z, type="Car", score=None, height_px=60.0, occluded=0, truncated=0.0, y=1.6, ry=0.0, hwl=(1.5, 1.6, 3.9)):
    return KittiObject(type, truncated, occluded, 0.0, np.array([100.0, 150.0, 200.0, 150.0 + height_px]),
                       np.array(hwl, float), np.array([x, y, z], float), ry, score)


def det(o: KittiObject, score: float, **changes) -> KittiObject:
    d = KittiObject(o.type, -1.0, -1, o.alpha, o.bbox.copy(), o.dimensions.copy(), o.location.copy(),
                    o.rotation_y, score)
    for k, v in changes.items():
        setattr(d, k, v)
    return d


def ap(result, cls="Car", metric="3d", key="R40", diff="moderate"):
    return result["classes"][cls][metric][key][diff]


def cars(n, z0=10.0):
    return [obj(-6.0 + 4.0 * i, z0 + 3.0 * i, ry=0.3 * i) for i in range(n)]


def test_perfect_detections_score_100():
    truth = {"000001": cars(3), "000002": cars(7, z0=20.0)}
    pred = {f: [det(o, 0.5 + 0.04 * i) for i, o in enumerate(objs)] for f, objs in truth.items()}
    r = evaluate(pred, truth)
    for metric in ("bev", "3d"):
        for key in ("R11", "R40"):
            for diff in ("easy", "moderate", "hard"):
                assert ap(r, "Car", metric, key, diff) == pytest.approx(100.0)
    assert r["classes"]["Car"]["num_gt"] == {"easy": 10, "moderate": 10, "hard": 10}
    assert ap(r, "Pedestrian") is None          # nothing to evaluate
    assert "Car" in format_results(r) and "100.00" in format_results(r)


def test_one_false_positive_at_a_known_score():
    gt = cars(4)
    fp = obj(30.0, 40.0)                         # nowhere near a car
    pred = {"a": [det(gt[0], 0.9), det(gt[1], 0.8), det(fp, 0.7), det(gt[2], 0.6), det(gt[3], 0.5)]}
    r = evaluate(pred, {"a": gt})
    # operating points (recall, precision): (.25, 1) (.5, 1) (.5, 2/3) (.75, 3/4) (1, 4/5)
    # interpolated precision: 1 up to recall 0.5, then 0.8.
    # R40: 20 positions <= 0.5 at 1, 20 at 0.8 -> 90;  R11: 0..0.5 (6) at 1, 0.6..1 (5) at 0.8 -> 10/11
    assert ap(r, key="R40") == pytest.approx(90.0)
    assert ap(r, key="R11") == pytest.approx(100.0 * 10 / 11)
    # scored below every true positive, the same false positive costs nothing: precision 1 is reached at recall 1
    pred = {"a": [det(gt[0], 0.9), det(gt[1], 0.8), det(gt[2], 0.6), det(gt[3], 0.5), det(fp, 0.1)]}
    r = evaluate(pred, {"a": gt})
    assert ap(r, key="R40") == pytest.approx(100.0)


def test_a_missed_object():
    gt = cars(4)
    pred = {"a": [det(gt[0], 0.9), det(gt[1], 0.8), det(gt[2], 0.7)]}
    r = evaluate(pred, {"a": gt})
    # recall reaches 0.75 at precision 1: R40 counts 30 of 40 positions, R11 8 of 11 (0, 0.1, ..., 0.7)
    assert ap(r, key="R40") == pytest.approx(75.0)
    assert ap(r, key="R11") == pytest.approx(100.0 * 8 / 11)
    assert ap(evaluate({"a": []}, {"a": gt}), key="R11") == 0.0


def test_average_precision_from_operating_points():
    got = average_precision(np.array([0.5, 1.0]), np.array([1.0, 0.5]))
    assert got["R40"] == pytest.approx(100 * (20 * 1.0 + 20 * 0.5) / 40)
    assert got["R11"] == pytest.approx(100 * (6 * 1.0 + 5 * 0.5) / 11)


def test_difficulty_levels_ignore_hard_objects():
    gt = cars(2) + [obj(8.0, 30.0, occluded=2)] + [obj(-8.0, 35.0, height_px=30.0)]
    # easy: the occluded car and the 30 px car are ignored; moderate: the occluded one; hard: none
    all_found = {"a": [det(o, 0.9 - 0.1 * i) for i, o in enumerate(gt)]}
    r = evaluate(all_found, {"a": gt})
    assert r["classes"]["Car"]["num_gt"] == {"easy": 2, "moderate": 3, "hard": 4}
    for diff in ("easy", "moderate", "hard"):   # detections of ignored objects are neither TP nor FP
        assert ap(r, diff=diff) == pytest.approx(100.0)
    missed = {"a": [det(o, 0.9 - 0.1 * i) for i, o in enumerate(gt[:2])]}
    r = evaluate(missed, {"a": gt})
    assert ap(r, diff="easy") == pytest.approx(100.0)       # ignored objects are not missed objects
    assert ap(r, diff="moderate") == pytest.approx(100.0 * 26 / 40)   # recall 2/3: positions 1/40..26/40
    assert ap(r, diff="hard") == pytest.approx(50.0)
    # a detection lower than 25 px (2D box) is ignored too, and so is the car it covers
    small = {"a": [det(gt[0], 0.9), det(gt[1], 0.8, bbox=np.array([0.0, 0.0, 10.0, 24.9]))]}
    r = evaluate(small, {"a": gt[:2]})
    assert ap(r, diff="moderate") == pytest.approx(100.0)


def test_neighbouring_classes_and_other_classes():
    car, van, ped = obj(0.0, 15.0), obj(5.0, 20.0, type="Van"), obj(-4.0, 12.0, type="Pedestrian",
                                                                       hwl=(1.8, 0.6, 0.8))
    truth = {"a": [car, van, ped]}
    # a Car detection on the Van is neither TP nor FP; a Car detection on the pedestrian is a FP
    r = evaluate({"a": [det(car, 0.9), det(van, 0.8, type="Car")]}, truth)
    assert ap(r) == pytest.approx(100.0)
    r = evaluate({"a": [det(car, 0.9), det(ped, 0.95, type="Car", dimensions=car.dimensions)]}, truth)
    assert ap(r, key="R40") == pytest.approx(50.0)     # the only TP comes at precision 1/2
    # detections labelled with another class are not considered at all for Car
    r = evaluate({"a": [det(car, 0.9), det(van, 0.99, type="Truck")]}, truth)
    assert ap(r) == pytest.approx(100.0)


def test_overlap_thresholds_per_class_and_bev_vs_3d():
    car = obj(0.0, 15.0, hwl=(1.5, 1.6, 4.0))
    ped = obj(3.0, 15.0, type="Pedestrian", hwl=(1.8, 1.0, 1.0))
    # rotation_y = 0: the length runs along camera x. Shifted by 1 m along it: BEV IoU 4.8 / 8 = 0.6
    shift = np.array([1.0, 0.0, 0.0])
    r = evaluate({"a": [det(car, 0.9, location=car.location + shift)]}, {"a": [car]})
    assert ap(r, metric="bev") == 0.0                  # 0.6 < 0.7 for cars
    loose = evaluate({"a": [det(car, 0.9, location=car.location + shift)]}, {"a": [car]},
                     min_overlap=LOOSE_OVERLAP)
    assert ap(loose, metric="bev") == pytest.approx(100.0)  # 0.6 > 0.5, the devkit's looser set
    assert loose["min_overlap"]["Car"] == 0.5 and "overlap Car 0.5, Pedestrian 0.25" in format_results(loose)
    pshift = np.array([0.3, 0.0, 0.0])                 # pedestrian: 0.7 / 1.3 = 0.538 > 0.5
    r = evaluate({"a": [det(ped, 0.9, location=ped.location + pshift)]}, {"a": [ped]})
    assert ap(r, "Pedestrian", metric="bev") == pytest.approx(100.0)
    # lifted by half its height: BEV IoU 1, 3D IoU 1/3
    r = evaluate({"a": [det(car, 0.9, location=car.location + np.array([0.0, -0.75, 0.0]))]}, {"a": [car]})
    assert ap(r, metric="bev") == pytest.approx(100.0) and ap(r, metric="3d") == 0.0


def test_dontcare_regions():
    car = obj(0.0, 15.0)
    extra = obj(6.0, 30.0)
    dc_kitti = KittiObject("DontCare", -1, -1, -10, np.array([500.0, 170.0, 590.0, 190.0]),
                           np.array([-1.0, -1.0, -1.0]), np.array([-1000.0, -1000.0, -1000.0]), -10)
    # KITTI DontCare labels have no 3D box: in BEV/3D a detection there stays a false positive (as the devkit)
    r = evaluate({"a": [det(extra, 0.95), det(car, 0.9)]}, {"a": [car, dc_kitti]})
    assert ap(r, key="R40") == pytest.approx(50.0)
    # a DontCare region with a 3D extent absorbs the detection inside it
    dc_box = det(extra, None, type="DontCare", dimensions=np.array([2.0, 3.0, 5.0]))
    r = evaluate({"a": [det(extra, 0.95), det(car, 0.9)]}, {"a": [car, dc_box]})
    assert ap(r, key="R40") == pytest.approx(100.0)


def test_score_reliability_by_hand():
    """Three frames: two cars found at 0.95 and 0.8, a duplicate of the first at 0.85 (unmatched: its car is
    taken), a box 3 m off the second car at 0.6 (no overlap), a hard car (tiny, occluded) found at 0.4 (any
    difficulty counts); a frame without cars holding boxes at 0.75 and 0.2 and a pedestrian; a frame with a car
    and no box."""
    g = cars(2)
    hard = obj(8.0, 40.0, height_px=10.0, occluded=2)
    pred = {
        "a": [det(g[0], 0.95), det(g[0], 0.85), det(g[1], 0.8), det(g[1], 0.6, location=g[1].location + [3.0, 0, 0]),
              det(hard, 0.4)],
        "b": [det(obj(0.0, 20.0), 0.75), det(obj(5.0, 30.0), 0.2), det(obj(2.0, 15.0, type="Pedestrian"), 0.9)],
        "c": [],
    }
    truth = {"a": g + [hard], "b": [obj(2.0, 15.0, type="Pedestrian")], "c": [obj(0.0, 12.0)]}
    r = score_reliability(pred, truth)
    by_bin = {(b["from"], b["to"]): (b["boxes"], b["matched_share"]) for b in r["bins"]}
    assert by_bin[(0.9, 1.0)] == (1, 1.0)
    assert by_bin[(0.7, 0.9)] == (3, pytest.approx(1 / 3))      # 0.85 duplicate, 0.8 found, 0.75 on a carless frame
    assert by_bin[(0.5, 0.7)] == (1, 0.0)                        # the box 3 m off
    assert by_bin[(0.3, 0.5)] == (1, 1.0)                        # the hard car
    assert by_bin[(0.1, 0.3)] == (1, 0.0)
    assert r["frames_without"] == 1 and r["boxes_at_0.5_in_frames_without"] == 1
    # the pedestrian class on its own
    p = score_reliability(pred, truth, cls="Pedestrian")
    assert [b["boxes"] for b in p["bins"]] == [0, 0, 0, 0, 1] and p["bins"][-1]["matched_share"] == 1.0
    assert p["frames_without"] == 2 and p["boxes_at_0.5_in_frames_without"] == 0
    # folds pool by summing: frame by frame equals all at once
    parts = [score_reliability({k: pred[k]}, {k: truth[k]}) for k in pred]
    assert pool_reliability(parts) == score_reliability(pred, truth)


def test_bad_calls():
    with pytest.raises(BadInputError, match="no ground truth for frame b"):
        evaluate({"b": []}, {"a": []})
    with pytest.raises(UsageError, match="Truck"):
        evaluate({"a": []}, {"a": []}, classes=("Truck",))
    with pytest.raises(UsageError, match="calibration"):
        evaluate({"a": []}, {"a": []}, pred_frame="lidar")


def test_lidar_frame_result_folder_on_real_labels(shared_data, tmp_path):
    root = shared_data / "kitti" / "training"
    if not (root / "label_2").is_dir():
        pytest.skip("no KITTI labels")
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for fid in ("000006", "000007", "000008"):
        calib = Calibration.from_file(root / "calib" / f"{fid}.txt")
        boxes, names = objects_to_lidar_boxes(read_labels(root / "label_2" / f"{fid}.txt"), calib)
        dets = lidar_boxes_to_objects(boxes, names, np.linspace(0.9, 0.5, len(names)))   # no calib: lidar frame
        (pred_dir / f"{fid}.txt").write_text(format_label_lines(dets, frame="lidar"))
    r = evaluate_folders(pred_dir, root / "label_2")
    assert r["frames"] == 3 and r["classes"]["Car"]["num_gt"]["moderate"] >= 5
    for metric in ("bev", "3d"):
        assert ap(r, "Car", metric, "R40", "moderate") == pytest.approx(100.0)
    with pytest.raises(UsageError, match="calibration"):
        evaluate_folders(pred_dir, root / "label_2", calib_dir=tmp_path)


def _devkit_ap(pred, truth, level=1, metric="3d", cls="Car"):
    """The official devkit's scheme, slow and literal: thresholds from true-positive scores picked at ~i/40
    recall (getThresholds), precision read at threshold *index* i, R11 = indices 0, 4, ..., 40 / 11,
    R40 = indices 1..40 / 40."""
    from pcseg.engine import detection_eval as E

    frames, scores_tp, n_gt = [], [], 0
    for fid in sorted(pred):
        gts, dets = truth[fid], pred[fid]
        ov = E._overlaps(E._camera_boxes(dets), E._camera_boxes(gts), metric)
        ig, idt = E._ignore_flags(cls, level, gts, dets)
        sc = np.array([d.score for d in dets])
        frames.append((ov, ig, idt, sc))
        n_gt += int((ig == 0).sum())
        assigned = np.zeros(len(sc), bool)
        for i in range(len(ig)):                     # first pass: each object takes its best-scored detection
            if ig[i] == -1:
                continue
            best = max((j for j in range(len(sc)) if idt[j] != -1 and not assigned[j]
                        and ov[j, i] > E.MIN_OVERLAP[cls]), key=lambda j: sc[j], default=None)
            if best is not None:
                assigned[best] = True
                if ig[i] == 0 and idt[best] == 0:
                    scores_tp.append(sc[best])
    v, thresholds, current = sorted(scores_tp, reverse=True), [], 0.0
    for i, s in enumerate(v):
        left, right = (i + 1) / n_gt, ((i + 2) / n_gt if i < len(v) - 1 else (i + 1) / n_gt)
        if right - current < current - left and i < len(v) - 1:
            continue
        thresholds.append(s)
        current += 1 / 40
    prec = np.zeros(41)
    for k, t in enumerate(thresholds):
        tp = fp = 0
        for ov, ig, idt, sc in frames:
            a, b, _ = E._statistics(ov, ig, idt, sc, np.zeros((len(sc), 0)), E.MIN_OVERLAP[cls], t)
            tp, fp = tp + a, fp + b
        prec[k] = tp / (tp + fp)
    for k in range(len(thresholds)):
        prec[k] = prec[k:].max()
    return 100 * prec[0::4].sum() / 11, 100 * prec[1:].sum() / 40


def test_agrees_with_the_devkit_scheme_on_many_objects():
    # with hundreds of objects the devkit's 41 sampled thresholds approximate the full curve well
    rng = np.random.default_rng(0)
    truth, pred = {}, {}
    for f in range(60):
        objs = [obj(rng.uniform(-20, 20), rng.uniform(5, 60), height_px=rng.uniform(20, 80),
                    occluded=int(rng.integers(0, 3)), ry=rng.uniform(-3, 3)) for _ in range(8)]
        dets = [det(o, rng.random(), location=o.location + [rng.normal(0, 0.1), 0, rng.normal(0, 0.1)])
                for o in objs if rng.random() < 0.85]
        dets += [det(obj(rng.uniform(-20, 20), rng.uniform(5, 60)), 0.7 * rng.random()) for _ in range(3)]
        truth[str(f)], pred[str(f)] = objs, dets
    r = evaluate(pred, truth)
    r11, r40 = _devkit_ap(pred, truth)
    assert r["classes"]["Car"]["num_gt"]["moderate"] > 200
    assert ap(r, key="R11") == pytest.approx(r11, abs=2.5)
    assert ap(r, key="R40") == pytest.approx(r40, abs=2.5)
