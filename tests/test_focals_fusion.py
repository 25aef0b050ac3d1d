"""Focals Conv-F (multi-modal focal sparse convolution, §3.3): the lidar -> image projection against a direct
per-point computation with the real KITTI calibrations, bilinear sampling against its formula and grid_sample,
no image features outside the image, the fusion layer against a direct implementation of its two fusions,
gradients into the 2D backbone, shapes on the real frames 000000-000002 with their images, image-aligned
augmentation, training and the `detect` command."""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pcseg.errors import BadInputError, UsageError
from pcseg.geometry.camera import in_image, lidar_to_image_matrix, project_to_image
from pcseg.models import build
from pcseg.nn.focal import FocalSparseConv3d, FocalSparseConv3dFusion
from pcseg.nn.image import ImageFeatures, sample_bilinear
from pcseg.nn.sparse import SparseTensor, SubMConv3d, kernel_offsets, pack_coords, sorted_cache

KITTI = "kitti/training"
FRAMES = ("000000", "000001", "000002")           # the frames with an image_2 here
TINY = dict(channels=[4, 8, 8, 8], bev_channels=8, point_range=[0, -12.8, -3, 25.6, 12.8, 1],
            voxel_size=[0.2, 0.2, 0.4], fusion=True, image_width=4)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw):
    torch.manual_seed(0)
    return build("focals-centerpoint", **{**TINY, **kw})


def calib(shared_data, fid):
    from pcseg.io.kitti import Calibration

    return Calibration.from_file(shared_data / KITTI / "calib" / f"{fid}.txt")


def projection(c, undo=None):
    return lidar_to_image_matrix(c.P2, c.R0_rect, c.Tr_velo_to_cam, undo)


def frame(shared_data, fid, crop=True):
    """(points, image, calib) of a real frame; ``crop`` keeps the points within the TINY range (fewer voxels)."""
    from pcseg.io.image import read_image
    from pcseg.io.kitti import read_velodyne

    pts = read_velodyne(shared_data / KITTI / "velodyne" / f"{fid}.bin")
    if crop:
        lo, hi = np.array(TINY["point_range"][:3]), np.array(TINY["point_range"][3:])
        pts = pts[((pts[:, :3] >= lo) & (pts[:, :3] < hi)).all(1)]
    return pts, read_image(shared_data / KITTI / "image_2" / f"{fid}.png"), calib(shared_data, fid)


def direct_projection(c, x):
    """Slow reference: lidar -> camera (Tr_velo_to_cam), rectified (R0_rect), image 2 (P2), one point."""
    cam = [sum(c.Tr_velo_to_cam[r][k] * x[k] for k in range(3)) + c.Tr_velo_to_cam[r][3] for r in range(3)]
    rect = [sum(c.R0_rect[r][k] * cam[k] for k in range(3)) for r in range(3)]
    p = [sum(c.P2[r][k] * rect[k] for k in range(3)) + c.P2[r][3] for r in range(3)]
    return p[0] / p[2], p[1] / p[2], p[2]


def direct_bilinear(fmap, fx, fy):
    """Slow reference: bilinear interpolation of (C, H, W) at map coordinates clamped to the map."""
    c, h, w = fmap.shape
    fx, fy = min(max(fx, 0.0), w - 1.0), min(max(fy, 0.0), h - 1.0)
    x0, y0 = min(int(math.floor(fx)), w - 2), min(int(math.floor(fy)), h - 2)
    ax, ay = fx - x0, fy - y0
    return ((1 - ax) * (1 - ay) * fmap[:, y0, x0] + ax * (1 - ay) * fmap[:, y0, x0 + 1]
            + (1 - ax) * ay * fmap[:, y0 + 1, x0] + ax * ay * fmap[:, y0 + 1, x0 + 1])


# --------------------------------------------------------------------------------------------- projection
def test_projection_matches_direct_computation_on_real_calibrations(shared_data):
    rng = np.random.default_rng(0)
    for fid in FRAMES + ("004139",):
        c = calib(shared_data, fid)
        pts = np.concatenate([rng.uniform([-10, -20, -3], [60, 20, 2], (12, 3)),
                              [[10.0, 0.0, -1.0], [-5.0, 1.0, 0.0], [3.0, 12.0, 0.0]]])
        m = projection(c)
        uv, depth = project_to_image(pts, m)
        uv_t, depth_t = project_to_image(torch.from_numpy(pts), torch.from_numpy(m))   # same code on tensors
        for i, x in enumerate(pts):                                                    # slow reference
            u, v, d = direct_projection(c, x)
            assert math.isclose(depth[i], d, rel_tol=1e-9, abs_tol=1e-9)
            if d > 0:
                assert math.isclose(uv[i, 0], u, rel_tol=1e-9) and math.isclose(uv[i, 1], v, rel_tol=1e-9)
        torch.testing.assert_close(uv_t.numpy(), uv)
        torch.testing.assert_close(depth_t.numpy(), depth)
        assert np.isfinite(uv).all()
        # inside the image = KITTI's field of view test of the io reader
        assert np.array_equal(in_image(uv, depth, 1242, 375), c.fov_mask(pts))
    c = calib(shared_data, "000001")
    assert in_image(*project_to_image(np.array([[10.0, 0, -1]]), projection(c)), 1242, 375)[0]
    assert not in_image(*project_to_image(np.array([[-10.0, 0, -1]]), projection(c)), 1242, 375)[0]   # behind


def test_undo_matrix_is_applied_before_the_calibration(shared_data):
    c = calib(shared_data, "000002")
    theta, s = 0.3, 1.04
    a = s * np.array([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
    a = a @ np.diag([1.0, -1.0, 1.0])
    pts = np.random.default_rng(1).uniform([5, -5, -2], [30, 5, 1], (20, 3))
    uv0, d0 = project_to_image(pts, projection(c))
    uv1, d1 = project_to_image(pts @ a.T, projection(c, np.linalg.inv(a)))
    np.testing.assert_allclose(uv1, uv0, rtol=1e-9)
    np.testing.assert_allclose(d1, d0, rtol=1e-9)


# --------------------------------------------------------------------------------------------- sampling
def test_bilinear_sampling_matches_formula_and_grid_sample():
    torch.manual_seed(0)
    maps = torch.randn(2, 3, 5, 7)
    batch = torch.tensor([0, 1, 1, 0, 1, 0])
    fx = torch.tensor([0.0, 2.5, 6.0, 3.25, -1.0, 6.7])
    fy = torch.tensor([0.0, 1.5, 4.0, 0.75, 2.0, 4.9])
    got = sample_bilinear(maps, batch, fx, fy)
    for i in range(len(batch)):
        torch.testing.assert_close(got[i], direct_bilinear(maps[batch[i]], float(fx[i]), float(fy[i])))
    for b in range(2):
        rows = batch == b
        grid = torch.stack([2 * fx[rows] / 6 - 1, 2 * fy[rows] / 4 - 1], -1)[None, None]
        ref = F.grid_sample(maps[b:b + 1], grid, align_corners=True, padding_mode="border")[0, :, 0].t()
        torch.testing.assert_close(got[rows], ref)
    torch.testing.assert_close(got[0], maps[0, :, 0, 0])          # on a cell: that cell


def test_points_outside_the_image_get_no_image_features(shared_data):
    c = calib(shared_data, "000001")
    maps = torch.ones(1, 2, 94, 311)
    feats = ImageFeatures(maps, torch.from_numpy(projection(c)).float()[None], torch.tensor([[1242.0, 375.0]]), 4)
    pts = torch.tensor([[10.0, 0.0, -1.0],       # ahead: inside
                        [-10.0, 0.0, -1.0],      # behind the camera
                        [0.1, 0.0, 0.0],         # beside the lidar, behind camera 2 (about 0.3 m ahead of it)
                        [5.0, 20.0, 0.0],        # far left of the picture
                        [5.0, 0.0, 30.0],        # above it
                        [20.0, -3.0, -1.5]])     # inside
    x, inside = feats.sample(pts, torch.zeros(len(pts), dtype=torch.long))
    assert inside.tolist() == [True, False, False, False, False, True]
    assert torch.equal(x[~inside], torch.zeros(4, 2)) and torch.equal(x[inside], torch.ones(2, 2))
    np.testing.assert_array_equal(inside.numpy(), c.fov_mask(pts.numpy()))


# --------------------------------------------------------------------------------------------- the fusion layer
def fusion_setup(shared_data):
    """A stage-1 sparse tensor whose voxels lie ahead of, beside and behind camera 2 of frame 000001."""
    rng = np.random.default_rng(0)
    point_range, voxel = [-4.0, -8.0, -2.0, 12.0, 8.0, 2.0], [1.0, 1.0, 1.0]
    shape = (4, 16, 16)                                    # z, y, x cells
    cells = rng.choice(np.prod(shape), size=160, replace=False)
    zyx = np.stack(np.unravel_index(np.sort(cells), shape), 1)
    coords = torch.from_numpy(np.concatenate([np.zeros((len(zyx), 1), np.int64), zyx], 1))
    keys = pack_coords(coords, shape)
    order = torch.argsort(keys)
    torch.manual_seed(0)
    x = SparseTensor(torch.randn(len(coords), 3), coords[order], shape, 1, cache=sorted_cache(keys[order]))
    c = calib(shared_data, "000001")
    maps = torch.randn(1, 3, 94, 311)
    image = ImageFeatures(maps, torch.from_numpy(projection(c)).float()[None], torch.tensor([[1242.0, 375.0]]), 4)
    layer = FocalSparseConv3dFusion(3, point_range, voxel).eval()
    return x, image, layer, c, point_range, voxel


def direct_image_features(c, maps, coords, point_range, voxel):
    """Per voxel: project its centre (direct formula), bilinear sample at pixel / 4, zero outside the image."""
    out = torch.zeros(len(coords), maps.shape[1])
    for i, (_, z, y, x) in enumerate(coords.tolist()):
        centre = [point_range[a] + (v + 0.5) * voxel[a] for a, v in enumerate((x, y, z))]
        u, v, d = direct_projection(c, centre)
        if d > 0 and 0 <= u < 1242 and 0 <= v < 375:
            out[i] = direct_bilinear(maps[0], u / 4, v / 4)
    return out


def test_fusion_layer_matches_a_direct_implementation(shared_data):
    x, image, layer, c, point_range, voxel = fusion_setup(shared_data)
    with torch.no_grad():
        layer.norm.running_mean.uniform_(-0.2, 0.2)
        layer.norm.running_var.uniform_(0.5, 1.5)
        res = layer(x, image)
    rgb_in = direct_image_features(c, image.maps, x.coords, point_range, voxel)
    assert 0 < int((rgb_in != 0).any(1).sum()) < len(rgb_in)       # some voxels in the picture, some not
    # fusion 1: the importance is predicted from x + rgb (summation)
    sub = SubMConv3d(3, 27, bias=True)
    sub.load_state_dict(layer.importance.state_dict())
    with torch.no_grad():
        importance = torch.sigmoid(sub(x.replace_features(x.features + rgb_in)).features)
    torch.testing.assert_close(res.importance, importance, rtol=1e-4, atol=1e-5)
    # the lidar convolution of Eq. 2 on the dynamic positions of Eq. 6 (checked in test_focal_conv.py)
    with torch.no_grad():
        keys, coords, feats, attention, important = FocalSparseConv3d.conv_features(layer, x, importance)
    assert torch.equal(res.out.coords, coords)
    # fusion 2: rgb added onto the important outputs only, the first part of Eq. 6 (Python sets)
    offsets = kernel_offsets(3).tolist()
    dilated = set()
    for i, p in enumerate(x.coords.tolist()):
        if importance[i, 13] >= 0.5:                                                      # Eq. 7
            for k, off in enumerate(offsets):
                q = (p[0], p[1] + off[0], p[2] + off[1], p[3] + off[2])
                if importance[i, k] >= 0.5 and all(0 <= q[a + 1] < x.spatial_shape[a] for a in range(3)):
                    dilated.add(q)                                                      # Eq. 8
    rows = [i for i, q in enumerate(coords.tolist()) if tuple(q) in dilated]
    assert 0 < len(rows) < len(coords)
    rgb_out = direct_image_features(c, image.maps, coords, point_range, voxel)
    fused = feats.clone()
    fused[rows] += rgb_out[rows]
    with torch.no_grad():
        expected = torch.relu(layer.norm(fused)) * attention[:, None]
    torch.testing.assert_close(res.out.features, expected, rtol=1e-4, atol=1e-4)   # float32 projection
    # outputs that are not important get no image features: a zero image changes only the important rows
    zero = ImageFeatures(torch.zeros_like(image.maps), image.lidar_to_image, image.sizes, 4)
    with torch.no_grad():
        plain = layer(x, zero)
        lidar = FocalSparseConv3d(3, 3)
        lidar.load_state_dict(layer.state_dict())
        lidar_out = lidar.eval()(x)
    torch.testing.assert_close(plain.out.features, lidar_out.out.features)   # zero image = Focals Conv
    assert torch.equal(plain.out.coords, lidar_out.out.coords)


def test_fusion_layer_outside_the_image_is_the_lidar_focal_conv(shared_data):
    x, image, layer, c, point_range, voxel = fusion_setup(shared_data)
    # move every voxel behind the camera: the image cannot change anything
    behind = FocalSparseConv3dFusion(3, [-20.0, -8.0, -2.0, -4.0, 8.0, 2.0], voxel).eval()
    behind.load_state_dict(layer.state_dict())
    lidar = FocalSparseConv3d(3, 3).eval()
    lidar.load_state_dict(layer.state_dict())
    with torch.no_grad():
        a, b = behind(x, image), lidar(x)
    torch.testing.assert_close(a.out.features, b.out.features)
    torch.testing.assert_close(a.importance, b.importance)


def test_fusion_layer_refuses_mismatched_channels(shared_data):
    x, image, _, _, point_range, voxel = fusion_setup(shared_data)
    with pytest.raises(ValueError, match="channels"):
        FocalSparseConv3dFusion(3, point_range, voxel)(x, ImageFeatures(torch.zeros(1, 5, 94, 311),
                                                                          image.lidar_to_image, image.sizes, 4))


# --------------------------------------------------------------------------------------------- the detector
def camera_inputs(images, calibs):
    return [torch.from_numpy(im) for im in images], [torch.from_numpy(projection(c)) for c in calibs]


def test_output_shapes_on_the_real_frames_with_their_images(shared_data):
    data = [frame(shared_data, fid) for fid in FRAMES]
    pts = [torch.from_numpy(p) for p, _, _ in data]
    images, mats = camera_inputs([im for _, im, _ in data], [c for _, _, c in data])
    assert images[0].shape == (370, 1224, 3) and images[1].shape == (375, 1242, 3)   # KITTI sizes vary
    model = tiny().eval()
    with torch.no_grad():
        out = model(pts, images, mats)
        assert out["heatmap"].shape == (3, 3, 16, 16) and out["box"].shape == (3, 8, 16, 16)
        assert len(out["focal"]) == 3 and out["focal"][0].importance.shape[1] == 27
        assert isinstance(model.focal_convs[0], FocalSparseConv3dFusion)
        assert not any(isinstance(m, FocalSparseConv3dFusion) for m in model.focal_convs[1:])
        assert out["focal"][1].out.stride == (2, 2, 2)
        alone = tiny(focal=False).eval()                       # Focals Conv-F alone, at the end of stage 1
        assert len(alone(pts, images, mats)["focal"]) == 1
        # the image matters: another frame's image changes the importance of the fused layer
        swapped = model(pts[:1], images[1:2], mats[:1])["focal"][0].importance
        assert not torch.allclose(swapped, out["focal"][0].importance[: len(swapped)])
    lidar = build("focals-centerpoint", **{**TINY, "fusion": False})
    assert not any(k.startswith("image_backbone") for k in lidar.state_dict())
    assert json.loads(json.dumps(model.config()))["fusion"] is True
    with pytest.raises(UsageError, match="image"):
        model(pts)


def test_gradients_reach_the_image_backbone(shared_data):
    from pcseg.data.detection import KittiFrame

    f = KittiFrame.load(shared_data / KITTI, "000001", fov_only=True, image=True)
    model = tiny().train()
    keep = (f.points[:, 0] < 25.6) & (np.abs(f.points[:, 1]) < 12.8)
    images, mats = camera_inputs([f.image], [f.calib])
    out = model([torch.from_numpy(f.points[keep])], images, mats)
    labels = [torch.tensor([0 if n == "Car" else -1 for n in f.names])]
    model.loss(out, [torch.from_numpy(f.boxes).float()], labels)["total"].backward()
    for name, p in model.image_backbone.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # both fusions carry gradient: through the importance branch alone too
    model.zero_grad()
    out = model([torch.from_numpy(f.points[keep])], images, mats)
    out["focal"][0].importance.sum().backward()
    assert model.image_backbone.reduce.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------- data
def test_read_image_and_missing_pillow(shared_data, monkeypatch, tmp_path):
    from pcseg.io.image import read_image

    im = read_image(shared_data / KITTI / "image_2" / "000002.png")
    assert im.shape == (375, 1242, 3) and im.dtype == np.uint8 and im.std() > 10
    with pytest.raises(BadInputError, match="no such image"):
        read_image(tmp_path / "none.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(BadInputError):
        read_image(tmp_path / "bad.png")
    monkeypatch.setitem(sys.modules, "PIL", None)             # Pillow not installed
    with pytest.raises(UsageError, match=r"pip install 'pcseg\[render\]'") as e:
        read_image(shared_data / KITTI / "image_2" / "000002.png")
    assert "\n" not in str(e.value)


def test_augmentation_keeps_points_aligned_with_the_image(shared_data):
    from pcseg.data.detection import GtDatabase, KittiFrame, augment, augment_with_image, paste_image_crops

    frames = [KittiFrame.load(shared_data / KITTI, fid, fov_only=True, image=True) for fid in FRAMES]
    f = frames[2]
    # flip / rotation / scaling: projecting the augmented points through `undo` finds the original pixels
    pts, boxes, names, image, undo = augment_with_image(f.points, f.boxes, f.names, f.image, np.random.default_rng(3))
    assert image is f.image and not np.allclose(pts[:, :3], f.points[:, :3])
    uv_aug, d_aug = project_to_image(pts[:, :3].astype(np.float64), projection(f.calib, undo))
    uv, d = project_to_image(f.points[:, :3].astype(np.float64), projection(f.calib))
    np.testing.assert_allclose(uv_aug, uv, atol=2e-3)              # float32 points: a thousandth of a pixel
    np.testing.assert_allclose(d_aug, d, atol=1e-4)
    # ground-truth sampling: the same draws as augment(), and the pasted objects' crops on the image
    db = GtDatabase.from_frames([frames[0], frames[2]])          # a pedestrian and a car with their crops
    assert len(db) == 2 and all(c is not None for c in db.crops)
    f = frames[1]
    pts, boxes, names, image, _ = augment_with_image(f.points, f.boxes, f.names, f.image, np.random.default_rng(4), db)
    p2, b2, n2 = augment(f.points, f.boxes, f.names, np.random.default_rng(4), db)
    np.testing.assert_array_equal(pts, p2)
    np.testing.assert_array_equal(boxes, b2)
    assert names == n2 and len(names) > len(f.names) and np.any(image != f.image)
    # paste_image_crops: the crop lands on its own 2D box; where two overlap, the nearer object is on top
    near, far = sorted(range(len(db)), key=lambda k: np.hypot(*db.boxes[k][:2]))[:1] + \
        sorted(range(len(db)), key=lambda k: -np.hypot(*db.boxes[k][:2]))[:1]
    blank = np.zeros_like(f.image)
    out = paste_image_crops(blank, db, [near])
    x0, y0, x1, y1 = db.crop_boxes[near]
    assert np.array_equal(out[y0:y1, x0:x1], db.crops[near]) and not out[:, :x0].any() and not out[y1:].any()
    db.crop_boxes[far] = db.crop_boxes[near].copy()                # make them overlap
    db.crops[far] = np.full_like(db.crops[near], 7)
    for order in ([near, far], [far, near]):
        assert np.array_equal(paste_image_crops(blank, db, order)[y0:y1, x0:x1], db.crops[near])
    assert not blank.any()                                          # the input image is not modified


def test_training_a_fusion_model_on_the_frames_with_images(shared_data, tmp_path):
    from pcseg.cli.detect_cmds import train_detect
    from pcseg.models.checkpoint import read_card

    opts = [f"model_options.{k}={json.dumps(v)}" for k, v in TINY.items()]
    common = ["batch_size=1", "log_every=1", "checkpoint_every=1", "gt_sampling=false"]
    with pytest.raises(UsageError, match="004139 has no image"):       # default validation frame, no image here
        train_detect(opts + common, data=[str(shared_data / KITTI)], max_steps=1, run_dir=tmp_path / "a", quiet=True)
    with pytest.raises(UsageError, match="synthetic"):
        train_detect(opts + common + ["synthetic_steps=1"], data=[str(shared_data / KITTI)], val=["000002"],
                     max_steps=1, run_dir=tmp_path / "b", quiet=True)
    run = tmp_path / "run"
    train_detect(opts + common, data=[str(shared_data / KITTI)], val=["000002"], max_steps=1, run_dir=run,
                 quiet=True)
    card = read_card(run / "last.safetensors")
    assert card["config"]["fusion"] is True
    assert card["training"]["kitti_frames"] == ["000000", "000001"]
    assert card["training"]["left_out_without_image"] == ["000006", "000007", "000008", "000016", "000134", "004139"]
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("val" in r for r in recs) and math.isfinite([r for r in recs if "phase" in r][0]["loss_total"])


# --------------------------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def fusion_checkpoint(tmp_path_factory):
    from pcseg.models.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny-f.safetensors"
    save_checkpoint(path, tiny(), {"model": "focals-centerpoint", "task": "detect"})
    return path


def test_detect_with_a_fusion_model(fusion_checkpoint, shared_data, tmp_path, capsys):
    from pcseg.cli.main import main
    from pcseg.models.checkpoint import save_checkpoint

    root = shared_data / KITTI
    bin2 = str(root / "velodyne" / "000002.bin")
    rc = main(["detect", bin2, "-m", str(fusion_checkpoint)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--image" in err
    rc = main(["detect", bin2, "-m", str(fusion_checkpoint), "--image", str(root / "image_2" / "000002.png")])
    assert rc == 2 and "--calib" in capsys.readouterr().err
    out = tmp_path / "out"
    frames = tmp_path / "frames"
    frames.mkdir()
    for fid in ("000001", "000002"):
        (frames / f"{fid}.bin").symlink_to(root / "velodyne" / f"{fid}.bin")
    rc = main(["detect", str(frames), "-m", str(fusion_checkpoint), "--image", str(root / "image_2"),
               "--calib", str(root / "calib"), "-o", str(out), "--score-thresh", "0.0", "-q"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["000001.txt", "000002.txt"]
    assert all(len(ln.split()) == 16 for ln in (out / "000002.txt").read_text().splitlines())
    lidar = tmp_path / "lidar.safetensors"
    save_checkpoint(lidar, tiny(fusion=False), {"model": "focals-centerpoint", "task": "detect"})
    rc = main(["detect", bin2, "-m", str(lidar), "--image", str(root / "image_2" / "000002.png")])
    assert rc == 2 and "lidar only" in capsys.readouterr().err
    (frames / "000008.bin").symlink_to(root / "velodyne" / "000008.bin")       # a frame with no image
    rc = main(["detect", str(frames), "-m", str(fusion_checkpoint), "--image", str(root / "image_2"),
               "--calib", str(root / "calib"), "-o", str(tmp_path / "out2"), "-q"])
    assert rc == 3 and "no image for frame 000008" in capsys.readouterr().err
