"""KPConv layer (§3.1-3.2) and kernel points (supplementary B), checked against the paper's formulas."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pcseg.errors import BadInputError, UsageError
from pcseg.geometry import grid_subsample, radius_neighbors
from pcseg.nn import KPConv
from pcseg.nn.kernel_points import kernel_energy, layer_kernel_points, stable_disposition

IGN_TILE = "test_data_77055_627760_LA93_IGN69.laz"  # IGN LiDAR HD, Licence Ouverte


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------------- kernel points
def _outer_geometry(points):
    outer = points[1:]
    radii = np.linalg.norm(outer, axis=1)
    dist = np.linalg.norm(outer[:, None] - outer[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    return outer, radii, dist


@pytest.mark.parametrize("k, neighbours", [(5, 3), (7, 4), (13, 5)])
def test_table4_polyhedra(k, neighbours):
    """Table 4: with the centre fixed, K = 5, 7, 13 give the tetrahedron, octahedron and icosahedron."""
    points = stable_disposition(k)
    assert np.array_equal(points[0], np.zeros(3))
    outer, radii, dist = _outer_geometry(points)
    np.testing.assert_allclose(radii, radii.mean(), rtol=1e-5)  # all on one sphere
    nearest = dist.min(axis=1)
    np.testing.assert_allclose(nearest, nearest.mean(), rtol=1e-5)  # equal nearest-neighbour distances
    # Every vertex has exactly 3 (tetrahedron), 4 (octahedron) or 5 (icosahedron) nearest neighbours.
    counts = (dist < nearest.mean() * (1 + 1e-4)).sum(axis=1)
    assert (counts == neighbours).all()
    if k == 5:  # regular tetrahedron: centroid at the centre, edge = R * sqrt(8/3)
        np.testing.assert_allclose(outer.sum(0), 0, atol=1e-6)
        np.testing.assert_allclose(nearest.mean(), radii.mean() * np.sqrt(8 / 3), rtol=1e-5)
    else:  # octahedron 1-4-1 and icosahedron 1-5-5-1 are centrally symmetric: every vertex has an antipode
        antipode = np.linalg.norm(outer[:, None] + outer[None], axis=-1).min(axis=1)
        np.testing.assert_allclose(antipode, 0, atol=1e-5 * radii.mean())


def test_k15_disposition_is_1_6_6_1():
    """Table 4, K = 15: along the axis through two antipodal points, the 14 outer points group as 1-6-6-1."""
    outer, radii, _ = _outer_geometry(stable_disposition(15))
    found = False
    for pole in outer:
        axis = pole / np.linalg.norm(pole)
        heights = np.sort(np.round(outer @ axis / radii.mean(), 3))
        groups = np.split(heights, np.flatnonzero(np.diff(heights) > 1e-2) + 1)
        if [len(g) for g in groups] == [1, 6, 6, 1]:
            found = True
    assert found


def test_disposition_is_deterministic_and_a_minimum():
    a, b = stable_disposition(15, seed=3), stable_disposition(15, seed=3)
    assert np.array_equal(a, b)
    a[1] += 1.0  # callers get copies: the cache cannot be corrupted
    assert np.array_equal(stable_disposition(15, seed=3), b)
    # A local minimum of Eq. 11: small random moves of the free points never lower the energy.
    rng = np.random.default_rng(0)
    moves = rng.normal(scale=1e-3, size=(64,) + b.shape)
    moves[:, 0] = 0
    assert (kernel_energy(b + moves) >= kernel_energy(b) - 1e-9).all()


def test_layer_kernel_points_scale_and_random_rotation():
    sigma = 0.3
    torch.manual_seed(0)
    a, b = layer_kernel_points(15, sigma), layer_kernel_points(15, sigma)
    for kp in (a, b):
        assert kp.dtype == torch.float32 and kp.shape == (15, 3)
        assert torch.equal(kp[0], torch.zeros(3))
        assert kp[1:].norm(dim=1).mean().item() == pytest.approx(1.5 * sigma, rel=1e-6)  # §3.2
    assert not torch.allclose(a, b)  # randomly rotated per layer ...
    torch.testing.assert_close(torch.cdist(a, a), torch.cdist(b, b), atol=1e-5, rtol=0)  # ... rigidly


# ------------------------------------------------------------------------------------------------------------ layer
@pytest.fixture(scope="module")
def real_neighbourhoods(als_files):
    """Queries, supports and radius neighbours from a real IGN tile, grid-subsampled at dl = 0.5 m."""
    path = next((p for p in als_files if p.name == IGN_TILE), als_files[0])
    import laspy

    las = laspy.read(path)
    xyz = np.stack([las.x, las.y, las.z], axis=1)
    dl = 0.5
    pts = grid_subsample(xyz - xyz.mean(0), dl).points
    centre = pts[np.argmin(np.linalg.norm(pts[:, :2], axis=1))]
    supports = pts[np.argsort(np.linalg.norm(pts - centre, axis=1))[:400]]
    queries = supports[:60]
    return queries.astype(np.float64), supports.astype(np.float64), dl


def _direct_kpconv(queries, supports, neighbors, features, kernel_points, weights, sigma):
    """Eq. 1-3 by loops: sum over real neighbours i and kernel points k of h(y_i, x~_k) f_i W_k."""
    out = np.zeros((len(queries), weights.shape[2]))
    for m, x in enumerate(queries):
        for i in neighbors[m]:
            if i == len(supports):  # shadow neighbour
                continue
            y = supports[i] - x
            for k, xk in enumerate(kernel_points[m] if kernel_points.ndim == 3 else kernel_points):
                h = max(0.0, 1.0 - np.linalg.norm(y - xk) / sigma)
                out[m] += h * features[i] @ weights[k]
    return out


def _make_inputs(queries, supports, radius, in_channels, seed=0):
    neighbors = radius_neighbors(queries, supports, radius)
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(len(supports), in_channels))
    return neighbors, features


def _as_tensors(dtype, *arrays):
    return [torch.as_tensor(a, dtype=dtype if a.dtype.kind == "f" else torch.int64) for a in arrays]


@pytest.fixture(params=["sparse", "dense"])
def correlation(request, monkeypatch):
    """Run a test through both forms of sum_i h f_i (Eq. 1, 3): the sparse CSR product a float CPU takes, and
    the dense batched matmul of bfloat16, GPUs and tracing."""
    import pcseg.nn.kpconv as kpconv

    if request.param == "dense":
        monkeypatch.setattr(kpconv, "_sparse_correlation", kpconv._dense_correlation)
    return request.param


def test_kpconv_matches_direct_formula(real_neighbourhoods, correlation):
    queries, supports, dl = real_neighbourhoods
    sigma = dl
    conv = KPConv(5, 7, kernel_size=15, radius=2.5 * sigma, sigma=sigma).double()
    neighbors, features = _make_inputs(queries, supports, conv.radius, 5)
    assert (neighbors == len(supports)).any() and (neighbors < len(supports)).sum(1).min() >= 1
    expected = _direct_kpconv(queries, supports, neighbors, features, conv.kernel_points.double().numpy(),
                              conv.weights.detach().numpy(), sigma)
    with torch.no_grad():
        got = conv(*_as_tensors(torch.float64, queries, supports, neighbors, features)).numpy()
    assert np.abs(expected).max() > 0
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) <= 1e-5
    # float32, as the networks run it
    conv32 = conv.float()
    with torch.no_grad():
        got32 = conv32(*_as_tensors(torch.float32, queries, supports, neighbors, features)).numpy()
    assert np.linalg.norm(got32 - expected) / np.linalg.norm(expected) <= 1e-4


def test_kpconv_permutation_invariance(real_neighbourhoods, correlation):
    queries, supports, dl = real_neighbourhoods
    torch.manual_seed(1)
    conv = KPConv(4, 6, radius=2.5 * dl, sigma=dl).double()
    neighbors, features = _make_inputs(queries, supports, conv.radius, 4)
    rng = np.random.default_rng(1)
    # Reorder the supports (renumbering the neighbour indices; the shadow index stays N) ...
    perm = rng.permutation(len(supports))
    new_index = np.empty_like(perm)
    new_index[perm] = np.arange(len(perm))
    renumbered = np.where(neighbors < len(supports), new_index[np.minimum(neighbors, len(supports) - 1)],
                          len(supports))
    # ... and shuffle each row of the neighbour matrix.
    shuffled = np.take_along_axis(renumbered, rng.permuted(np.tile(np.arange(neighbors.shape[1]),
                                                                   (len(queries), 1)), axis=1), axis=1)
    with torch.no_grad():
        a = conv(*_as_tensors(torch.float64, queries, supports, neighbors, features))
        b = conv(*_as_tensors(torch.float64, queries, supports[perm], shuffled, features[perm]))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_shadow_neighbours_contribute_nothing(real_neighbourhoods, correlation):
    queries, supports, dl = real_neighbourhoods
    conv = KPConv(3, 5, radius=2.5 * dl, sigma=dl)
    neighbors, features = _make_inputs(queries, supports, conv.radius, 3)
    q, s, f = _as_tensors(torch.float32, queries, supports, features)
    nb = torch.as_tensor(neighbors)
    with torch.no_grad():
        base = conv(q, s, nb, f)
        # extra shadow columns change nothing
        padded = torch.cat([nb, torch.full((len(q), 7), len(s))], dim=1)
        torch.testing.assert_close(conv(q, s, padded, f), base)
        # a neighbourhood that is all shadow gives exactly zero
        all_shadow = torch.full((len(q), 5), len(s))
        assert torch.equal(conv(q, s, all_shadow, f), torch.zeros(len(q), 5))
        # huge features on a point nobody lists as a neighbour change nothing
        s2 = torch.cat([s, s[:1] + 1e-3])
        f2 = torch.cat([f, torch.full((1, 3), 1e6)])
        torch.testing.assert_close(conv(q, s2, torch.where(nb == len(s), len(s2), nb), f2), base)


@pytest.mark.parametrize("deformable", [False, True])
@pytest.mark.parametrize("queries, supports", [(0, 5), (3, 0), (0, 0)])
def test_empty_queries_or_supports(queries, supports, deformable, correlation):
    """No query gives a (0, out) output, no support zero features; both differentiate (an empty layer of a
    pyramid, a cloud smaller than its subsampling grid)."""
    conv = KPConv(3, 4, radius=1.0, deformable=deformable).train()
    f = torch.rand(supports, 3, requires_grad=True)
    out = conv(torch.zeros(queries, 3), torch.rand(supports, 3), torch.full((queries, 2), supports), f)
    assert out.shape == (queries, 4) and not out.any()
    (out.sum() + (conv.last_regularization if deformable else 0)).backward()
    assert f.grad.shape == (supports, 3)


def test_kernel_points_travel_in_the_state_dict():
    torch.manual_seed(0)
    a = KPConv(4, 4, radius=0.1, sigma=0.04, deformable=True)
    torch.manual_seed(1)
    b = KPConv(4, 4, radius=0.1, sigma=0.04, deformable=True)
    assert not torch.equal(a.kernel_points, b.kernel_points)
    state = a.state_dict()
    assert "kernel_points" in state and "offset_conv.kernel_points" in state
    b.load_state_dict(state)
    assert torch.equal(a.kernel_points, b.kernel_points)
    assert torch.equal(a.offset_conv.kernel_points, b.offset_conv.kernel_points)


def test_default_sigma_follows_section_3_3():
    assert KPConv(2, 2, radius=0.25).sigma == pytest.approx(0.1)  # rigid radius 2.5 sigma
    assert KPConv(2, 2, radius=0.5, deformable=True).sigma == pytest.approx(0.1)  # rho = 5, Sigma = 1
    assert KPConv(2, 2, sigma=0.1).radius == pytest.approx(0.25)
    with pytest.raises(UsageError):
        KPConv(2, 2)


# ------------------------------------------------------------------------------------------------------- deformable
def _deformable_with_offsets(dl, seed=0):
    torch.manual_seed(seed)
    conv = KPConv(4, 6, kernel_size=15, radius=5 * dl, sigma=dl, deformable=True).double()
    with torch.no_grad():
        conv.offset_conv.weights.normal_(std=0.05)
        conv.offset_bias.normal_(std=0.1)
    return conv


def test_deformable_starts_rigid(real_neighbourhoods):
    queries, supports, dl = real_neighbourhoods
    conv = KPConv(4, 6, radius=5 * dl, sigma=dl, deformable=True).double()  # zero-initialised shift branch
    rigid = KPConv(4, 6, radius=5 * dl, sigma=dl).double()
    rigid.load_state_dict({"kernel_points": conv.kernel_points, "weights": conv.weights})
    neighbors, features = _make_inputs(queries, supports, conv.radius, 4)
    inputs = _as_tensors(torch.float64, queries, supports, neighbors, features)
    with torch.no_grad():
        torch.testing.assert_close(conv(*inputs), rigid(*inputs))


def test_deformable_matches_eq_4_5_and_regularisation_matches_eq_6_8(real_neighbourhoods, correlation):
    queries, supports, dl = real_neighbourhoods
    sigma = dl
    conv = _deformable_with_offsets(dl)
    neighbors, features = _make_inputs(queries, supports, conv.radius, 4)
    # Delta(x): a rigid KPConv to 3K values (+ bias), in units of sigma; then Eq. 4-5 with the shifted points.
    raw = _direct_kpconv(queries, supports, neighbors, features, conv.offset_conv.kernel_points.double().numpy(),
                         conv.offset_conv.weights.detach().numpy(), sigma) + conv.offset_bias.detach().numpy()
    deformed = conv.kernel_points.double().numpy()[None] + sigma * raw.reshape(len(queries), 15, 3)
    expected = _direct_kpconv(queries, supports, neighbors, features, deformed, conv.weights.detach().numpy(),
                              sigma)
    conv.train()
    got = conv(*_as_tensors(torch.float64, queries, supports, neighbors, features))
    assert np.linalg.norm(got.detach().numpy() - expected) / np.linalg.norm(expected) <= 1e-5
    # Eq. 7: squared distance (in sigma) of each deformed kernel point to its closest neighbour; Eq. 8: squared
    # correlation between pairs of deformed kernel points. Averaged over the convolution locations.
    total = 0.0
    for m, x in enumerate(queries):
        ys = supports[neighbors[m][neighbors[m] < len(supports)]] - x
        fit = sum(min(np.linalg.norm(y - xk) / sigma for y in ys) ** 2 for xk in deformed[m])
        rep = sum(max(0.0, 1 - np.linalg.norm(deformed[m, k] - deformed[m, l]) / sigma) ** 2
                  for k in range(15) for l in range(15) if l != k)
        total += fit + rep
    assert conv.last_regularization.item() == pytest.approx(total / len(queries), rel=1e-6)
    # Gradients reach the shift branch through the output and through the regularisation, and are finite.
    (got.square().mean() + conv.last_regularization).backward()
    for p in conv.offset_parameters():
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    conv.eval()
    with torch.no_grad():
        conv(*_as_tensors(torch.float64, queries, supports, neighbors, features))
    assert conv.last_regularization is None  # only training passes keep a regularisation term


def test_sparse_and_dense_correlation_agree_with_gradients(real_neighbourhoods):
    """The CSR product and the dense batched matmul give the same sums and the same gradients, in the features
    and in the deformed kernel points (through h); gradcheck verifies the CSR product's own backward against
    finite differences."""
    from pcseg.nn.kpconv import _CSRProduct, _dense_correlation, _sparse_correlation, _squared_distances

    queries, supports, dl = real_neighbourhoods
    conv = _deformable_with_offsets(dl)
    neighbors, features = _make_inputs(queries, supports, conv.radius, 4)
    q, s, nb, f = _as_tensors(torch.float64, queries, supports, neighbors, features)
    y = conv._relative_positions(q, s, nb)
    results = []
    for correlate in (_sparse_correlation, _dense_correlation):
        shifts = (0.3 * torch.randn(len(q), 15, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
        shifts.requires_grad_(True)
        feats = f.clone().requires_grad_(True)
        kernel = conv.kernel_points.double() / conv.sigma + shifts
        out = correlate(_squared_distances(kernel, y), feats, nb)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        results.append((out.detach(), feats.grad, shifts.grad))
    assert results[0][0].abs().max() > 0 and results[0][2].abs().max() > 0
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # The CSR product alone: a small random sparse matrix, float64.
    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(12, 9, generator=gen) < 0.3
    rows, columns = mask.nonzero(as_tuple=True)
    row_starts = torch.zeros(13, dtype=torch.int64)
    row_starts[1:] = torch.bincount(rows, minlength=12).cumsum(0)
    values = torch.rand(len(rows), dtype=torch.float64, generator=gen, requires_grad=True)
    dense_in = torch.randn(9, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    torch.autograd.gradcheck(lambda v, x: _CSRProduct.apply(v, x, row_starts, rows, columns), (values, dense_in))
    direct = torch.zeros(12, 9, dtype=torch.float64)
    direct[rows, columns] = values.detach()
    torch.testing.assert_close(_CSRProduct.apply(values, dense_in, row_starts, rows, columns), direct @ dense_in)


def test_bfloat16_autocast_keeps_the_sum_in_float32(real_neighbourhoods, monkeypatch):
    """Under CPU bfloat16 autocast the distances and the sparse sum of Eq. 1 run in float32 and the weights'
    matmuls in bfloat16: the output is bfloat16 and within bfloat16's precision of the float32 layer."""
    import pcseg.nn.kpconv as kpconv

    queries, supports, dl = real_neighbourhoods
    conv = _deformable_with_offsets(dl).float()
    neighbors, features = _make_inputs(queries, supports, conv.radius, 4)
    inputs = _as_tensors(torch.float32, queries, supports, neighbors, features)
    seen = []
    sparse = kpconv._sparse_correlation
    monkeypatch.setattr(kpconv, "_sparse_correlation", lambda s, f, n: seen.append(f.dtype) or sparse(s, f, n))
    with torch.no_grad():
        reference = conv(*inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = conv(inputs[0], inputs[1], inputs[2], inputs[3].bfloat16())
    assert low.dtype == torch.bfloat16 and seen == [torch.float32] * 4
    # 0.4% here; 3% when the squared distances of Eq. 3 ran in bfloat16 too (_squared_distances keeps them exact)
    assert (low.float() - reference).norm() / reference.norm() < 1e-2


def test_bad_shapes_are_one_line_errors():
    conv = KPConv(3, 4, radius=1.0)
    q, s = torch.zeros(2, 3), torch.zeros(5, 3)
    nb = torch.zeros(2, 4, dtype=torch.int64)
    with pytest.raises(BadInputError, match="features of shape"):
        conv(q, s, nb, torch.zeros(5, 2))
    with pytest.raises(BadInputError, match="neighbour matrix"):
        conv(q, s, nb[:1], torch.zeros(5, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(real_neighbourhoods):
    queries, supports, dl = real_neighbourhoods
    conv = _deformable_with_offsets(dl).float()
    neighbors, features = _make_inputs(queries, supports, conv.radius, 4)
    inputs = _as_tensors(torch.float32, queries, supports, neighbors, features)
    with torch.no_grad():
        cpu = conv(*inputs)
        gpu = conv.cuda()(*[t.cuda() for t in inputs]).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)


def test_macs_are_visible_to_the_flop_counter(real_neighbourhoods):
    """The multiply-accumulate-heavy parts are matmuls, so count_macs sees them: distances (5 terms per
    neighbour/kernel point pair), sum_i h f_i (Eq. 1-2), and the weights."""
    from pcseg.models import count_macs

    queries, supports, dl = real_neighbourhoods
    conv = KPConv(8, 16, kernel_size=15, radius=2.5 * dl, sigma=dl)
    neighbors, features = _make_inputs(queries, supports, conv.radius, 8)
    inputs = _as_tensors(torch.float32, queries, supports, neighbors, features)
    m, h = neighbors.shape
    assert count_macs(conv, *inputs) == m * 15 * h * 5 + m * 15 * h * 8 + m * 15 * 8 * 16
