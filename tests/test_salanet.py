"""SALANet (SALA paper §3.4): size against the paper, stacked batches, options, a few training steps."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pcseg.data.batch import build_batch
from pcseg.errors import BadInputError, UsageError
from pcseg.geometry import grid_subsample
from pcseg.models import build, count_params, entries
from pcseg.nn.dense import upsampled_skip_product
from pcseg.nn.gather import neighbor_max_pool

S3DIS_CLASSES = ["ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa",
                 "bookcase", "board", "clutter"]


@pytest.fixture(scope="module")
def s3dis_room(shared_data):
    """The real S3DIS room crop at the paper's 4 cm grid: xyz (centred), ZRGB1 features, labels."""
    files = sorted((shared_data / "indoor" / "s3dis" / "Area_3" / "hallway_3" / "Annotations").glob("*.txt"))
    if not files:
        pytest.skip("S3DIS room not present")
    rows = [np.loadtxt(f, dtype=np.float64) for f in files]
    labels = np.concatenate([np.full(len(r), S3DIS_CLASSES.index(f.stem.rsplit("_", 1)[0])) for f, r in
                             zip(files, rows)])
    pts = np.concatenate(rows)
    sub = grid_subsample(pts[:, :3], 0.04, features=pts[:, 3:6], labels=labels)
    xyz = sub.points
    feats = np.concatenate([xyz[:, 2:3], sub.features / 255.0, np.ones((len(xyz), 1))], axis=1)  # ZRGB1
    return xyz - xyz.mean(axis=0), feats.astype(np.float32), sub.labels


def test_strided_shortcut_max_pools_over_real_neighbours_only(reduction_path):
    features = torch.tensor([[1.0, -5.0], [3.0, -2.0], [-4.0, -1.0]])
    neighbors = torch.tensor([[0, 1, 3], [2, 3, 3], [3, 3, 3]])  # shadow index 3
    expected = torch.tensor([[3.0, -2.0], [-4.0, -1.0], [0.0, 0.0]])
    assert torch.equal(neighbor_max_pool(features, neighbors), expected)
    assert torch.equal(neighbor_max_pool(features.requires_grad_(True), neighbors), expected)  # training path


def test_max_pool_gradient_goes_to_the_winning_neighbour(reduction_path):
    """Gradient of the training path against a direct loop: each output picks one real neighbour row."""
    torch.manual_seed(0)
    features = torch.randn(40, 6, dtype=torch.float64, requires_grad=True)
    neighbors = torch.randint(0, 41, (25, 7))  # 40 = shadow
    neighbors[3] = 40  # a query with shadows only
    upstream = torch.randn(25, 6, dtype=torch.float64)
    (neighbor_max_pool(features, neighbors) * upstream).sum().backward()
    expected = torch.zeros(40, 6, dtype=torch.float64)
    for i in range(25):
        for ch in range(6):
            real = [int(j) for j in neighbors[i] if j < 40]
            if real:
                best = max(real, key=lambda j: features[j, ch].item())
                expected[best, ch] += upstream[i, ch]
    torch.testing.assert_close(features.grad, expected)


def test_registered_as_a_segmentation_network():
    assert entries()["salanet"].task == "segment"


@pytest.mark.parametrize("width,paper", [(36, 1.6e6), (18, 0.41e6), (72, 6.4e6)])
def test_parameter_counts_within_5_percent_of_the_paper(width, paper):
    # Tables 2-4: C=36 -> 1.6 M, C=18 -> 0.41 M (S3DIS, 13 classes, ZRGB1 input), C=72 -> 6.4 M (PartNet).
    n = count_params(build("salanet", num_classes=13, in_features=5, width=width))
    assert abs(n - paper) / paper < 0.05, n


def test_config_rebuilds_the_same_network(s3dis_room):
    xyz, feats, _ = s3dis_room
    model = build("salanet", num_classes=4, in_features=5, width=6, groups=3, reduction="sum", assignment="hard",
                  pos_encoding=False, dl0=0.04, radius=0.12, neighbor_limits=[10, 11, 12, 13, 14]).eval()
    config = json.loads(json.dumps(model.config()))
    clone = build("salanet", **config).eval()
    clone.load_state_dict(model.state_dict())
    assert clone.config() == config
    assert clone.pyramid_spec == model.pyramid_spec and model.pyramid_spec.radii[4] == pytest.approx(0.12 * 16)
    keep = xyz[:, 0] < xyz[:, 0].min() + 0.5
    batch = build_batch([xyz[keep]], [feats[keep]], model.pyramid_spec).to("cpu")
    with torch.no_grad():
        torch.testing.assert_close(clone(batch), model(batch))


@pytest.mark.parametrize("option,value,allowed", [("reduction", "mean", "max, sum"),
                                                  ("assignment", "binary", "soft, hard, none"),
                                                  ("width", 7, "even"), ("groups", 0, ">= 1"),
                                                  ("neighbor_limits", [26, 31], "5 positive"),
                                                  ("radius", -0.1, "positive")])
def test_invalid_options_are_one_line_usage_errors(option, value, allowed):
    with pytest.raises(UsageError, match=allowed) as err:
        build("salanet", num_classes=13, **{option: value})
    assert "\n" not in str(err.value)


def test_stacked_batch_gives_each_cloud_its_own_logits(s3dis_room):
    """Two real clouds in one stacked batch: each gets the logits it gets alone (eval mode)."""
    xyz, feats, _ = s3dis_room
    torch.manual_seed(0)
    model = build("salanet", num_classes=13, width=8).eval()
    left = xyz[:, 0] < np.median(xyz[:, 0])
    clouds = [(xyz[left], feats[left]), (xyz[~left] + 100.0, feats[~left])]
    batch = build_batch([c[0] for c in clouds], [c[1] for c in clouds], model.pyramid_spec).to("cpu")
    with torch.no_grad():
        stacked = model(batch)
        alone = [model(build_batch([p], [f], model.pyramid_spec).to("cpu")) for p, f in clouds]
    assert stacked.shape == (len(xyz), 13) and torch.isfinite(stacked).all()
    torch.testing.assert_close(stacked, torch.cat(alone), rtol=1e-4, atol=1e-4)


def test_wrong_feature_count_is_a_bad_input_error(s3dis_room):
    xyz, feats, _ = s3dis_room
    model = build("salanet", num_classes=13, in_features=4, width=8)
    batch = build_batch([xyz[:500]], [feats[:500]], model.pyramid_spec).to("cpu")
    with pytest.raises(BadInputError, match="4 input features"):
        model(batch)


def test_a_few_steps_on_a_real_labelled_room_lower_the_loss(s3dis_room):
    xyz, feats, labels = s3dis_room
    torch.manual_seed(0)
    model = build("salanet", num_classes=13, width=8)
    keep = np.linalg.norm(xyz[:, :2], axis=1) < 0.8  # a cylinder of ~5k points holding 5 classes
    batch = build_batch([xyz[keep]], [feats[keep]], model.pyramid_spec, [labels[keep]]).to("cpu")
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(model(batch), batch.labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_forward_matches_cpu(s3dis_room):
    xyz, feats, _ = s3dis_room
    torch.manual_seed(0)
    model = build("salanet", num_classes=13, width=8).eval()
    batch = build_batch([xyz], [feats], model.pyramid_spec)
    with torch.no_grad():
        cpu = model(batch.to("cpu"))
        gpu = model.to("cuda")(batch.to("cuda"))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["salanet", "kpfcnn"])
def test_trimmed_neighbour_matrices_give_the_padded_results(shared_data, name):
    """The neighbour builder drops columns that are shadows in every row (sparse clouds: far fewer neighbours
    than the caps). Padding them back to the caps must change no logit: shadows contribute nothing."""
    import dataclasses

    from pcseg.io import read

    cloud = read(shared_data / "als" / "test_semis_2024_0751_6690_LA93_IGN69.laz")  # ~0.1 pts/m2 (a Path)
    xyz = cloud.xyz[np.linalg.norm(cloud.xyz[:, :2] - cloud.xyz[0, :2], axis=1) < 60.0]
    xyz = (xyz - xyz.mean(axis=0)).astype(np.float32)
    torch.manual_seed(0)
    model = build(name, num_classes=6, in_features=1, dl0=0.5, **({"width": 8} if name == "salanet" else {})).eval()
    caps = [25, 34, 46, 49, 37]
    spec = dataclasses.replace(model.pyramid_spec, neighbor_limits=caps)
    batch = build_batch([xyz], [np.ones((len(xyz), 1), np.float32)], spec)
    assert batch.neighbors[0].shape[1] < caps[0]  # trimmed on this sparse cloud

    def pad(mats, supports):
        return [np.pad(m, ((0, 0), (0, cap - m.shape[1])), constant_values=len(s))
                for m, cap, s in zip(mats, caps, supports)]

    padded = dataclasses.replace(batch, neighbors=pad(batch.neighbors, batch.points),
                                 pools=pad(batch.pools, batch.points))
    with torch.no_grad():
        torch.testing.assert_close(model(batch.to("cpu")), model(padded.to("cpu")), rtol=1e-5, atol=1e-5)


def test_upsampled_skip_product_is_the_dense_layer_on_the_concatenation():
    """Decoder step: concat(coarse[index], skip) @ W.T, against the direct formula, values and gradients."""
    g = torch.Generator().manual_seed(3)
    coarse = torch.randn(40, 12, generator=g, dtype=torch.float64, requires_grad=True)
    skip = torch.randn(150, 7, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 19, generator=g, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 40, (150,), generator=g)
    direct = torch.cat([coarse[index], skip], dim=1) @ weight.t()
    fast = upsampled_skip_product(weight, coarse, index, skip)
    assert torch.allclose(fast, direct, atol=1e-12)
    seed = torch.randn(150, 9, generator=g, dtype=torch.float64)
    grads_direct = torch.autograd.grad((direct * seed).sum(), (coarse, skip, weight))
    grads_fast = torch.autograd.grad((fast * seed).sum(), (coarse, skip, weight))
    for a, b in zip(grads_direct, grads_fast):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("network", ["salanet", "kpfcnn"])
def test_eval_mode_folds_batch_norm_into_the_dense_layer(network):
    """In eval mode a unary layer (dense + batch norm + activation) runs as one product with a bias: the same
    values as the layers one after the other, also on the decoder's upsampled concatenation."""
    from pcseg.models.kpconv_nets import UnaryBlock
    from pcseg.models.salanet import unary

    g = torch.Generator().manual_seed(5)
    layer = unary(12, 9, torch.nn.LeakyReLU()) if network == "salanet" else UnaryBlock(12, 9)
    norm = layer[1] if network == "salanet" else layer.norm
    linear = layer[0] if network == "salanet" else layer.linear
    act = layer[2] if network == "salanet" else layer.activation
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(9, generator=g))
        norm.running_var.copy_(torch.rand(9, generator=g) + 0.1)
        norm.weight.copy_(torch.randn(9, generator=g))  # negative scales too
        norm.bias.copy_(torch.randn(9, generator=g))
    layer.eval()
    x = torch.randn(50, 12, generator=g)
    direct = act(torch.nn.functional.batch_norm(x @ linear.weight.t(), norm.running_mean, norm.running_var,
                                                norm.weight, norm.bias, False, 0.0, norm.eps))
    assert torch.allclose(layer(x), direct, atol=1e-5)
    coarse, skip, index = torch.randn(20, 5, generator=g), torch.randn(50, 7, generator=g), torch.randint(0, 20, (50,), generator=g)
    direct = act(torch.nn.functional.batch_norm(torch.cat([coarse[index], skip], 1) @ linear.weight.t(),
                                                norm.running_mean, norm.running_var, norm.weight, norm.bias, False,
                                                0.0, norm.eps))
    assert torch.allclose(layer.decode(coarse, index, skip), direct, atol=1e-5)
    layer.train()  # training mode: batch statistics, not the running ones
    pre = torch.cat([coarse[index], skip], 1) @ linear.weight.t()
    expected = act(torch.nn.functional.batch_norm(pre, None, None, norm.weight, norm.bias, True, 0.0, norm.eps))
    assert torch.allclose(layer.decode(coarse, index, skip), expected, atol=1e-5)
