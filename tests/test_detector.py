"""focals-centerpoint: targets and decoding agree, losses match their formulas, checkpoints round-trip, training
runs and resumes, and the `detect` / `eval-detect` commands work on real KITTI frames."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from pcseg.errors import BadInputError, UsageError
from pcseg.models import build
from pcseg.models.detector import gaussian_radius, heatmap_focal_loss

TINY = dict(channels=[4, 8, 8, 8], bev_channels=8, point_range=[0, -12.8, -3, 25.6, 12.8, 1],
            voxel_size=[0.2, 0.2, 0.4])
KITTI = "kitti/training"


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw):
    torch.manual_seed(0)
    return build("focals-centerpoint", **{**TINY, **kw})


def scene_boxes():
    boxes = torch.tensor([[10.3, 2.1, -0.9, 3.9, 1.6, 1.5, 0.3], [5.7, -4.4, -0.8, 0.8, 0.6, 1.7, -2.0],
                          [18.1, 6.6, -1.0, 1.8, 0.6, 1.7, 3.0]])
    return boxes, torch.tensor([0, 1, 2])


def test_forward_shapes_on_real_frame(shared_data):
    pts = np.fromfile(shared_data / KITTI / "velodyne" / "000008.bin", dtype=np.float32).reshape(-1, 4)
    model = tiny().eval()
    with torch.no_grad():
        out = model([torch.from_numpy(pts)])
    assert out["heatmap"].shape == (1, 3, 16, 16) and out["box"].shape == (1, 8, 16, 16)
    assert len(out["focal"]) == 3 and out["focal"][0].importance.shape[1] == 27
    assert out["focal"][1].out.stride == (2, 2, 2)
    with torch.no_grad():
        assert tiny(focal=False)([torch.from_numpy(pts)])["focal"] == []


def test_config_round_trip_is_json():
    model = tiny(top_ratio=0.5)
    cfg = json.loads(json.dumps(model.config()))
    again = build("focals-centerpoint", **cfg)
    assert again.config() == model.config()
    assert list(again.state_dict()) == list(model.state_dict())


def test_bad_range_is_refused():
    with pytest.raises(UsageError):
        build("focals-centerpoint", point_range=[0, -10, -3, 25, 10, 1], voxel_size=[0.2, 0.2, 0.4])


def test_default_is_the_kitti_range_and_voxel():
    model = build("focals-centerpoint")
    assert model.point_range == [0, -40, -3, 70.4, 40, 1] and model.voxel_size == [0.05, 0.05, 0.1]
    assert model.map_size == (200, 176) and model.bev_height == 4


def test_gaussian_radius_is_the_tightest_cornernet_case():
    h, w, o = 5.0, 2.0, 0.1
    r = float(gaussian_radius(torch.tensor(h), torch.tensor(w), o))
    translated = lambda r: (h - r) * (w - r) / (2 * h * w - (h - r) * (w - r))
    shrunk = lambda r: (h - 2 * r) * (w - 2 * r) / (h * w)
    grown = lambda r: h * w / ((h + 2 * r) * (w + 2 * r))
    ious = [translated(r), shrunk(r), grown(r)]
    assert min(abs(v - o) for v in ious) < 1e-5          # the radius sits on one case's boundary...
    assert all(v >= o - 1e-5 for v in ious)              # ...and no case is below the overlap there
    assert min(translated(r * 1.01), shrunk(r * 1.01), grown(r * 1.01)) < o


def test_targets_gaussians_and_perfect_prediction_decodes_to_the_boxes():
    model = tiny().eval()
    boxes, labels = scene_boxes()
    t = model.targets([boxes], [labels])
    heat = t["heatmap"][0]
    cx, cy = model.cell_size
    for b, c in zip(boxes, labels):
        ix, iy = int((b[0] - model.point_range[0]) // cx), int((b[1] - model.point_range[1]) // cy)
        assert heat[c, iy, ix] == 1.0
        r = max(2, int(gaussian_radius(b[3] / cx, b[4] / cy)))
        sigma = (2 * r + 1) / 6
        assert math.isclose(float(heat[c, iy, ix + 1]), math.exp(-1 / (2 * sigma ** 2)), rel_tol=1e-5)
        assert heat[c, iy, min(ix + r + 1, heat.shape[2] - 1)] == 0 or ix + r + 1 >= heat.shape[2]
    assert int((heat == 1).sum()) == 3
    # a network that predicts exactly the targets decodes to exactly the boxes
    logits = torch.where(t["heatmap"] == 1, torch.tensor(8.0), torch.tensor(-8.0))
    box_map = torch.zeros(1, 8, *model.map_size)
    flat = box_map.view(1, 8, -1)
    n = int(t["mask"].sum())
    flat[0, :, t["index"][0, :n]] = t["box"][0, :n].t()
    det = model.decode({"heatmap": logits, "box": box_map}, score_thresh=0.5)[0]
    assert sorted(det.names) == ["Car", "Cyclist", "Pedestrian"]
    for b, name in zip(boxes, ["Car", "Pedestrian", "Cyclist"]):
        got = det.boxes[det.names.index(name)]
        np.testing.assert_allclose(got[:6], b[:6].numpy(), rtol=1e-5, atol=1e-4)
        assert abs(math.remainder(got[6] - float(b[6]), 2 * math.pi)) < 1e-4


def test_iou_head_target_is_the_3d_iou_of_the_regressed_box():
    """iou_head: the loss is L1 between the head at each object's centre cell and 2 IoU - 1, the IoU being that of
    the box regressed at the cell (decoded by hand here) with the object's box (iou_3d of the box module)."""
    from pcseg.geometry.boxes import iou_3d

    model = tiny(iou_head=True).eval()
    boxes, labels = scene_boxes()
    t = model.targets([boxes], [labels])
    gen = torch.Generator().manual_seed(0)
    box_map = torch.randn(1, 8, *model.map_size, generator=gen) * 0.3
    iou_map = torch.rand(1, 1, *model.map_size, generator=gen) * 2 - 1
    out = {"heatmap": torch.zeros(1, 3, *model.map_size), "box": box_map, "iou": iou_map, "focal": []}
    h, w = model.map_size
    cx, cy = model.cell_size
    expected = []
    for b in boxes.numpy():
        ix, iy = int((b[0] - model.point_range[0]) // cx), int((b[1] - model.point_range[1]) // cy)
        code = box_map[0, :, iy, ix].numpy()
        regressed = np.array([(ix + code[0]) * cx + model.point_range[0], (iy + code[1]) * cy + model.point_range[1],
                              code[2], *np.exp(code[3:6]), math.atan2(code[6], code[7])])
        iou = iou_3d(regressed[None], b[None].astype(np.float64))[0, 0]
        expected.append(abs(float(iou_map[0, 0, iy, ix]) - (2 * iou - 1)))
    assert float(model.iou_loss(out, t)) == pytest.approx(np.mean(expected), rel=1e-5)
    # a box regressed exactly has IoU 1: target 1
    flat = box_map.view(1, 8, -1)
    flat[0, :, t["index"][0, :3]] = t["box"][0, :3].t()
    iou_map.fill_(1.0)
    assert float(model.iou_loss(out, t)) == pytest.approx(0.0, abs=1e-4)


def test_iou_head_rectifies_scores():
    """Scores become heat^(1 - alpha) IoU^alpha: a surer peak with a worse box can rank below a better box."""
    model = tiny(iou_head=True, iou_alpha=0.5).eval()
    h, w = model.map_size
    heat = torch.full((1, 3, h, w), -9.0)
    heat[0, 0, 3, 3], heat[0, 0, 12, 12] = 2.0, 1.0          # sigmoid 0.881 and 0.731
    box = torch.zeros(1, 8, h, w)
    box[0, 3:6] = math.log(2.0)
    box[0, 7] = 1.0
    iou = torch.full((1, 1, h, w), -1.0)
    iou[0, 0, 3, 3], iou[0, 0, 12, 12] = -0.6, 0.8          # IoU 0.2 and 0.9
    det = model.decode({"heatmap": heat, "box": box, "iou": iou}, score_thresh=0.05)[0]
    np.testing.assert_allclose(det.scores, [math.sqrt(torch.sigmoid(torch.tensor(1.0)) * 0.9),
                                            math.sqrt(torch.sigmoid(torch.tensor(2.0)) * 0.2)], rtol=1e-5)
    assert det.boxes[0, 0] > det.boxes[1, 0]                  # the better box (x cell 12) comes first
    plain = tiny().eval().decode({"heatmap": heat, "box": box}, score_thresh=0.05)[0]
    assert plain.boxes[0, 0] < plain.boxes[1, 0]              # without the head the surer peak does
    with pytest.raises(UsageError, match="iou_alpha"):
        tiny(iou_head=True, iou_alpha=1.5)


def test_init_with_options_adds_the_iou_head_and_keeps_the_weights():
    from pcseg.engine.detect import _with_options

    base = tiny()
    extended = _with_options(base, {"iou_head": True})
    assert extended.iou_head and not base.iou_head
    old, new = base.state_dict(), extended.state_dict()
    assert set(new) - set(old) and all(k.startswith("iou.") for k in set(new) - set(old))
    assert all(torch.equal(old[k], new[k]) for k in old)
    with pytest.raises(UsageError, match="may only add layers"):
        _with_options(base, {"bev_channels": 16})


def test_heatmap_focal_loss_matches_direct_formula():
    torch.manual_seed(1)
    logits = torch.randn(1, 2, 4, 5)
    target = torch.rand(1, 2, 4, 5) * 0.9
    target[0, 0, 1, 2] = target[0, 1, 3, 4] = 1.0
    total, pos = 0.0, 0
    for p, y in zip(torch.sigmoid(logits).flatten().tolist(), target.flatten().tolist()):
        p = min(max(p, 1e-4), 1 - 1e-4)
        if y == 1:
            total += -math.log(p) * (1 - p) ** 2
            pos += 1
        else:
            total += -math.log(1 - p) * p ** 2 * (1 - y) ** 4
    assert math.isclose(float(heatmap_focal_loss(logits, target)), total / pos, rel_tol=1e-5)


def test_loss_terms_and_training_reduces_loss(shared_data):
    from pcseg.data.detection import KittiFrame

    f = KittiFrame.load(shared_data / KITTI, "000008", fov_only=True)
    model = tiny().train()
    pts = [torch.from_numpy(f.points)]
    boxes = [torch.from_numpy(f.boxes).float()]
    labels = [torch.tensor([0 if n == "Car" else -1 for n in f.names])]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(12):
        losses = model.loss(model(pts), boxes, labels)
        assert set(losses) == {"heatmap", "box", "importance", "total"}
        first = first if first is not None else {k: float(v.detach()) for k, v in losses.items()}
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    last = {k: float(v.detach()) for k, v in losses.items()}
    assert all(last[k] < first[k] for k in first) and last["heatmap"] < 0.6 * first["heatmap"]
    # the importance branch learnt something: voxels in car boxes score higher than the others
    with torch.no_grad():
        res = model(pts)["focal"][0]
    from pcseg.nn.focal import points_in_boxes_torch, voxel_centers

    inside = points_in_boxes_torch(voxel_centers(res.x, model.point_range, model.voxel_size), boxes[0])
    centre = res.importance[:, 13]
    assert inside.any() and centre[inside].mean() > centre[~inside].mean()


# --------------------------------------------------------------------------------------------- commands
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from pcseg.models.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, tiny(), {"model": "focals-centerpoint", "task": "detect"})
    return path


def app():
    from pcseg.cli.detect_cmds import register

    a = typer.Typer()
    register(a)
    return a


def test_checkpoint_round_trip(checkpoint, shared_data):
    from pcseg.engine.detect import load_detector

    model, card = load_detector(str(checkpoint))
    ref = tiny().eval()
    pts = torch.from_numpy(np.fromfile(shared_data / KITTI / "velodyne" / "000001.bin", np.float32).reshape(-1, 4))
    with torch.no_grad():
        torch.testing.assert_close(model([pts])["heatmap"], ref([pts])["heatmap"])
    assert card["task"] == "detect"


def test_detect_command_formats(checkpoint, shared_data, tmp_path):
    frame = str(shared_data / KITTI / "velodyne" / "000001.bin")
    calib = str(shared_data / KITTI / "calib" / "000001.txt")
    runner = CliRunner()
    r = runner.invoke(app(), ["detect", frame, "--model", str(checkpoint), "--score-thresh", "0.0"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("# frame: lidar")
    lines = [ln for ln in r.stdout.splitlines() if not ln.startswith("#")]
    assert lines and all(len(ln.split()) == 16 for ln in lines)
    out = tmp_path / "cam.txt"
    r = runner.invoke(app(), ["detect", frame, "-m", str(checkpoint), "--calib", calib, "-o", str(out),
                              "--score-thresh", "0.0"])
    assert r.exit_code == 0, r.output
    cam = [ln.split() for ln in out.read_text().splitlines()]
    assert not out.read_text().startswith("#") and len(cam) <= len(lines)
    assert all(float(c[13]) > 0 for c in cam)          # in front of the camera (location z = depth)
    r = runner.invoke(app(), ["detect", frame, "-m", str(checkpoint), "-f", "json", "--score-thresh", "0.0"])
    data = json.loads(r.stdout)
    assert data["frame"] == "000001" and len(data["boxes"]) == len(lines)
    ply = tmp_path / "boxes.ply"
    r = runner.invoke(app(), ["detect", frame, "-m", str(checkpoint), "-f", "ply", "-o", str(ply),
                              "--score-thresh", "0.0"])
    assert r.exit_code == 0, r.output
    from plyfile import PlyData

    v = PlyData.read(str(ply))["vertex"]   # viewers' convention: fields as scalar_<name> (CloudCompare)
    assert len(v["x"]) == 0 + len(np.fromfile(frame, np.float32)) // 4 and v["scalar_box_id"].max() < len(lines)
    from pcseg.io import read

    assert np.array_equal(read(str(ply)).fields["box_id"], np.asarray(v["scalar_box_id"]))
    # stdin
    with open(frame, "rb") as fh:
        r = runner.invoke(app(), ["detect", "-", "-m", str(checkpoint), "--score-thresh", "0.0"], input=fh.read())
    assert r.exit_code == 0 and len([ln for ln in r.stdout.splitlines() if not ln.startswith("#")]) == len(lines)


def test_detect_command_errors(checkpoint, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app(), ["detect", str(tmp_path / "nope.bin"), "-m", str(checkpoint)])
    assert isinstance(r.exception, BadInputError)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00" * 10)
    r = runner.invoke(app(), ["detect", str(bad), "-m", str(checkpoint)])
    assert isinstance(r.exception, BadInputError) and "multiple" in str(r.exception)
    r = runner.invoke(app(), ["detect", str(bad), "-m", str(checkpoint), "-f", "xml"])
    assert isinstance(r.exception, UsageError)
    r = runner.invoke(app(), ["detect", str(bad), "-m", "no-such-model"])
    assert isinstance(r.exception, (UsageError, BadInputError))


def test_eval_detect_perfect_predictions(shared_data, tmp_path):
    import shutil

    for fid in ("000000", "000008"):
        shutil.copy(shared_data / KITTI / "label_2" / f"{fid}.txt", tmp_path / f"{fid}.txt")
        text = (tmp_path / f"{fid}.txt").read_text().splitlines()
        (tmp_path / f"{fid}.txt").write_text("".join(ln + " 0.9\n" for ln in text))
    r = CliRunner().invoke(app(), ["eval-detect", "--pred", str(tmp_path), "--truth", str(shared_data / KITTI / "label_2"),
                                   "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["classes"]["Car"]["3d"]["R40"]["moderate"] == pytest.approx(100.0)


def test_train_detect_runs_and_resumes(shared_data, tmp_path):
    from pcseg.cli.detect_cmds import train_detect

    run = tmp_path / "run"
    opts = [f"model_options.{k}={json.dumps(v)}" for k, v in TINY.items()]
    train_detect(opts + ["synthetic_steps=1", "batch_size=1", "log_every=1", "val_every=2", "checkpoint_every=1"],
                 data=[str(shared_data / KITTI)], max_steps=1, run_dir=run, quiet=True)
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in recs if "phase" in r] == ["synthetic", "kitti"]
    assert any("val" in r for r in recs) and (run / "last.safetensors").is_file() and (run / "best.safetensors").is_file()
    with pytest.raises(UsageError):
        train_detect(opts, data=[str(shared_data / KITTI)], max_steps=1, run_dir=run, quiet=True)
    train_detect([], max_steps=2, run_dir=run, resume=True, quiet=True)     # settings come from the run
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "phase" in r] == [1, 2, 3]


def test_detect_folder_then_eval_detect_in_lidar_frame(checkpoint, shared_data, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for fid in ("000006", "000007"):
        (frames / f"{fid}.bin").symlink_to(shared_data / KITTI / "velodyne" / f"{fid}.bin")
    out = tmp_path / "pred"
    runner = CliRunner()
    r = runner.invoke(app(), ["detect", str(frames), "-m", str(checkpoint), "-o", str(out), "--score-thresh", "0.0"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["000006.txt", "000007.txt"]
    r = runner.invoke(app(), ["eval-detect", "--pred", str(out), "--truth", str(shared_data / KITTI / "label_2"),
                              "--calib", str(shared_data / KITTI / "calib"), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["frames"] == 2 and res["classes"]["Car"]["num_gt"]["hard"] > 0


def test_scale_intensity_reads_the_sensor_range():
    from pcseg.engine.detect import scale_intensity

    assert np.allclose(scale_intensity(np.array([0.0, 0.5, 1.0])), [0, 0.5, 1])
    assert np.allclose(scale_intensity(np.array([0, 51, 255], np.uint16)), [0, 0.2, 1])      # 8-bit in a uint16
    assert np.allclose(scale_intensity(np.array([0, 13107, 65535], np.uint16)), [0, 0.2, 1])
    assert np.allclose(scale_intensity(np.array([0, 300.0])), [0, 300 / 65535])


def test_a_frame_from_another_sensor_height_gives_the_same_boxes_in_its_own_frame(checkpoint, shared_data, tmp_path):
    """A KITTI frame moved to a lidar mounted 0.5 m higher (z - 0.5, 8-bit intensity, written as PLY) and given
    --sensor-height 2.23 finds the same boxes, 0.5 m lower."""
    from pcseg.cli.main import main
    from pcseg.io import PointCloud, write

    frame = str(shared_data / "kitti" / "training" / "velodyne" / "000001.bin")
    pts = np.fromfile(frame, np.float32).reshape(-1, 4)
    other = tmp_path / "frame.ply"
    write(PointCloud(pts[:, :3].astype(np.float64) - [0, 0, 0.5],
                     {"intensity": np.round(pts[:, 3] * 255).astype(np.uint8)}), str(other))
    outs = []
    for args in ([frame], [str(other), "--sensor-height", "2.23"]):
        out = tmp_path / f"{len(outs)}.json"
        assert main(["detect", *args, "-m", str(checkpoint), "-f", "json", "-o", str(out), "--score-thresh", "0.0",
                     "-q"]) == 0
        outs.append(json.loads(out.read_text())["boxes"])
    assert len(outs[0]) == len(outs[1]) > 0
    for a, b in zip(outs[0], outs[1]):
        assert a["class"] == b["class"] and abs(a["score"] - b["score"]) < 0.05
        assert abs((a["box"]["z"] - 0.5) - b["box"]["z"]) < 0.02 and abs(a["box"]["x"] - b["box"]["x"]) < 0.05
    assert main(["detect", str(other), "-m", str(checkpoint), "--sensor-height", "-1"]) == 2
