"""KP-FCNN and KP-CNN (§3.4, supplementary A): parameter counts of Table 3, stacked batches, training, checkpoints."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from pcseg.data.batch import build_batch
from pcseg.errors import BadInputError, UsageError
from pcseg.geometry import grid_subsample
from pcseg.models import build, count_macs, count_params, get
from pcseg.models.kpconv_nets import OFFSET_LR_FACTOR

IGN_TILE = "test_data_77055_627760_LA93_IGN69.laz"  # IGN LiDAR HD, Licence Ouverte
DL0 = 0.6  # metres: the ALS tile has ~0.2 m spacing, so layer 0 keeps a few points per cell
SMALL = dict(width=8, dl0=DL0)  # a narrow network: the tests run in seconds


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name, options, table3", [
    ("kpfcnn", dict(num_classes=20, in_features=4), 14.1e6),  # ScanNet: RGB + 1, 20 classes
    ("kpfcnn", dict(num_classes=20, in_features=4, deformable=True), 14.9e6),
    ("kpcnn", dict(num_classes=40, in_features=1), 14.3e6),  # ModelNet40: constant feature, 40 classes
    ("kpcnn", dict(num_classes=40, in_features=1, deformable=True), 15.2e6),
])
def test_parameter_counts_match_table3(name, options, table3):
    count = count_params(build(name, **options))
    assert abs(count - table3) / table3 < 0.01  # the issue asks for 5 %; the schedule lands within 1 %


@pytest.fixture(scope="module")
def tile(als_files):
    """A real labelled IGN tile, grid-subsampled at DL0: centred points, [1, intensity] features, labels 0..C-1."""
    import laspy

    path = next((p for p in als_files if p.name == IGN_TILE), als_files[0])
    las = laspy.read(path)
    xyz = np.stack([las.x, las.y, las.z], axis=1)
    xyz -= xyz.mean(axis=0)
    intensity = np.asarray(las.intensity, dtype=np.float32)[:, None] / 65535.0
    labels = np.unique(np.asarray(las.classification), return_inverse=True)[1]
    sub = grid_subsample(xyz, DL0, features=intensity, labels=labels)
    feats = np.concatenate([np.ones((len(sub.points), 1), np.float32), sub.features.astype(np.float32)], axis=1)
    return sub.points, feats, sub.labels.astype(np.int64), int(labels.max()) + 1


def _crop(tile, centre_xy, radius):
    pts, feats, labels, _ = tile
    keep = np.linalg.norm(pts[:, :2] - np.asarray(centre_xy), axis=1) < radius
    return pts[keep] - pts[keep].mean(0), feats[keep], labels[keep]


def test_stacked_clouds_of_different_sizes_are_independent(tile):
    a, b = _crop(tile, (-10, -10), 10.0), _crop(tile, (12, 8), 6.0)
    assert len(a[0]) != len(b[0])
    torch.manual_seed(0)
    for name in ("kpfcnn", "kpcnn"):
        model = build(name, num_classes=5, in_features=2, **SMALL).eval()
        both = build_batch([a[0], b[0]], [a[1], b[1]], model.pyramid_spec).to("cpu")
        alone = build_batch([a[0]], [a[1]], model.pyramid_spec).to("cpu")
        with torch.no_grad():
            out_both, out_alone = model(both), model(alone)
        if name == "kpfcnn":
            assert out_both.shape == (len(a[0]) + len(b[0]), 5)
            torch.testing.assert_close(out_both[: len(a[0])], out_alone, rtol=1e-4, atol=1e-5)
        else:
            assert out_both.shape == (2, 5)
            torch.testing.assert_close(out_both[:1], out_alone, rtol=1e-4, atol=1e-5)
        assert torch.isfinite(out_both).all()


@pytest.mark.parametrize("deformable", [False, True])
def test_a_few_steps_on_a_real_tile_lower_the_loss(tile, deformable):
    pts, feats, labels = _crop(tile, (0, 0), 8.0)
    num_classes = tile[3]
    torch.manual_seed(0)
    model = build("kpfcnn", num_classes=num_classes, in_features=2, deformable=deformable, **SMALL)
    batch = build_batch([pts], [feats], model.pyramid_spec, [labels]).to("cpu")
    optimizer = torch.optim.Adam(model.parameter_groups(1e-2))
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        logits = model(batch)
        loss = torch.nn.functional.cross_entropy(logits, batch.labels)
        reg = model.regularization_loss()
        assert torch.isfinite(reg) and (reg.item() > 0) == deformable
        (loss + reg).backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    copy.deepcopy(model)  # a trainer keeping its best model: the last regularisation graph is not copied


def test_parameter_groups_slow_down_the_shift_branch():
    model = build("kpfcnn", num_classes=3, in_features=1, deformable=True, **SMALL)
    main, offsets = model.parameter_groups(0.01)
    assert main["lr"] == 0.01 and offsets["lr"] == pytest.approx(0.01 * OFFSET_LR_FACTOR)
    grouped = [id(p) for g in (main, offsets) for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # every parameter exactly once
    # 5 deformable KPConvs (last 5 blocks), each with an offset KPConv and a bias.
    assert len(offsets["params"]) == 10
    assert len(build("kpfcnn", num_classes=3, in_features=1, **SMALL).parameter_groups(0.01)) == 1


def test_pyramid_radii_follow_section_3_3():
    rigid = build("kpfcnn", num_classes=3, in_features=1).pyramid_spec
    assert rigid.dl0 == 0.04
    np.testing.assert_allclose(rigid.radii, [2.5 * 0.04 * 2**j for j in range(5)])  # 2.5 sigma_j
    deform = build("kpfcnn", num_classes=3, in_features=1, deformable=True).pyramid_spec
    np.testing.assert_allclose(deform.radii[2:], [5.0 * 0.04 * 2**j for j in range(2, 5)])  # rho dl_j
    np.testing.assert_allclose(deform.radii[:2], rigid.radii[:2])


def test_config_rebuilds_and_checkpoint_keeps_kernel_points(tile):
    pts, feats, _ = _crop(tile, (0, 0), 8.0)
    torch.manual_seed(0)
    model = build("kpfcnn", num_classes=4, in_features=2, deformable=True, **SMALL).eval()
    config = model.config()
    assert config == dict(num_classes=4, in_features=2, deformable=True, dl0=DL0, kernel_size=15, width=8,
                          sigma=1.0, rho=5.0)
    assert set(config) == set(get("kpfcnn").options())
    torch.manual_seed(123)  # a different seed: fresh kernel points would differ
    loaded = build("kpfcnn", **config).eval()
    assert not torch.equal(loaded.encoder.blocks[0].conv.kernel_points, model.encoder.blocks[0].conv.kernel_points)
    loaded.load_state_dict(model.state_dict())
    kp_keys = [k for k in model.state_dict() if k.endswith("kernel_points")]
    assert len(kp_keys) == 10 + 5  # one per KPConv, plus one per offset KPConv
    for key in kp_keys:
        assert torch.equal(loaded.state_dict()[key], model.state_dict()[key])
    batch = build_batch([pts], [feats], model.pyramid_spec).to("cpu")
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model(batch))


def test_macs_are_counted_on_a_real_batch(tile):
    pts, feats, _ = _crop(tile, (0, 0), 8.0)
    macs = {}
    for deformable in (False, True):
        model = build("kpfcnn", num_classes=4, in_features=2, deformable=deformable, **SMALL)
        batch = build_batch([pts], [feats], model.pyramid_spec)  # numpy batch: the model moves it
        macs[deformable] = count_macs(model, batch)
        # Lower bound: the unary classifier alone does N_0 * width * classes MACs.
        assert macs[deformable] > len(pts) * 8 * 4
    assert macs[True] > macs[False]


def test_user_errors_are_one_line(tile):
    with pytest.raises(UsageError, match="width"):
        build("kpfcnn", num_classes=3, in_features=1, width=7)
    with pytest.raises(UsageError, match="classes"):
        build("kpcnn", num_classes=0, in_features=1)
    with pytest.raises(UsageError, match="no option"):
        build("kpfcnn", num_classes=3, in_features=1, radius=3)
    pts, feats, _ = _crop(tile, (0, 0), 8.0)
    model = build("kpfcnn", num_classes=3, in_features=3, **SMALL)
    with pytest.raises(BadInputError, match="3 input features"):
        model(build_batch([pts], [feats], model.pyramid_spec))
    from pcseg.data.batch import PyramidSpec

    shallow = build_batch([pts], [np.ones((len(pts), 3), np.float32)], PyramidSpec(DL0, [1.5, 3.0]))
    with pytest.raises(BadInputError, match="layers"):
        model(shallow)
    tiny = _crop(tile, (0, 0), 2.0)  # a handful of points: one point left at the last layer
    batch = build_batch([tiny[0]], [tiny[1]], build("kpfcnn", num_classes=3, in_features=2, **SMALL).pyramid_spec)
    with pytest.raises(BadInputError, match="batch norm"):
        build("kpfcnn", num_classes=3, in_features=2, **SMALL).train()(batch)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(tile):
    pts, feats, _ = _crop(tile, (0, 0), 10.0)
    torch.manual_seed(0)
    model = build("kpfcnn", num_classes=4, in_features=2, deformable=True, **SMALL).eval()
    batch = build_batch([pts], [feats], model.pyramid_spec)
    with torch.no_grad():
        cpu = model(batch.to("cpu"))
        gpu = model.cuda()(batch.to("cuda")).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-4)
