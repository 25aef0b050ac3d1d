"""Kernel Point Convolution (Thomas et al., ICCV 2019, §3.1-3.3), rigid and deformable.

For a query point x with radius neighbours y_i = x_i - x carrying features f_i (Eq. 1),

    (F * g)(x) = sum_i g(y_i) f_i,       g(y_i) = sum_k h(y_i, x~_k) W_k                       (Eq. 1-2)
    h(y_i, x~_k) = max(0, 1 - ||y_i - x~_k|| / sigma)                                          (Eq. 3)

Deformable KPConv (Eq. 4-5) replaces x~_k by x~_k + Delta_k(x), the shifts being the 3K outputs of a rigid
KPConv on the same input. Its regularisation (Eq. 6-8) is computed during training forward passes and kept in
``last_regularization`` for the network to return to the trainer.

Neighbour matrices follow §3.3: (M, H) int64 indices into the supports, ``N`` (= number of supports) marking the
"shadow" neighbours, which contribute nothing.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from ..errors import BadInputError, UsageError
from .gather import gather_rows, tracing
from .kernel_points import layer_kernel_points

# Coordinate given to the shadow neighbour, in units of sigma: far beyond any kernel point, so h = 0 (Eq. 3).
_SHADOW_DISTANCE = 1e6


class KPConv(nn.Module):
    """KPConv layer mapping ``in_channels`` to ``out_channels`` features on query points.

    kernel_size: K, the number of kernel points (§3.3 default 15).
    radius: neighbourhood radius the neighbour matrices were built with; sigma: influence distance of the kernel
        points (Eq. 3). Give either or both; the missing one follows §3.3 with its defaults Sigma = 1, rho = 5:
        rigid radius = 2.5 sigma, deformable radius = rho * dl = 5 sigma.
    deformable: learn per-location shifts of the kernel points (Eq. 4-5).

    Attributes: ``kernel_points`` (K, 3) buffer (saved in the state dict), ``weights`` (K, in, out) parameter
    (W_k of Eq. 2); deformable layers also have ``offset_conv`` (rigid KPConv to 3K) and ``offset_bias``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 15, radius: float | None = None,
                 sigma: float | None = None, deformable: bool = False):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise UsageError(f"KPConv needs positive channel counts, got {in_channels} -> {out_channels}")
        if radius is None and sigma is None:
            raise UsageError("KPConv needs a radius or a sigma")
        if (radius is not None and radius <= 0) or (sigma is not None and sigma <= 0):
            raise UsageError(f"KPConv radius and sigma must be positive, got radius={radius}, sigma={sigma}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = int(kernel_size)
        ratio = 5.0 if deformable else 2.5  # radius / sigma with the paper's defaults (§3.3)
        self.radius = float(radius) if radius is not None else ratio * float(sigma)
        self.sigma = float(sigma) if sigma is not None else self.radius / ratio
        self.deformable = bool(deformable)
        # Regular disposition rescaled to a mean radius of 1.5 sigma and randomly rotated (§3.2, supp. B). A
        # buffer, so state_dict carries it and a loaded model uses the saved points.
        self.register_buffer("kernel_points", layer_kernel_points(self.kernel_size, self.sigma))
        self.weights = nn.Parameter(torch.empty(self.kernel_size, self.in_channels, self.out_channels))
        # He initialisation for a fan-in of K * D_in; batch norm follows every KPConv in the networks.
        nn.init.normal_(self.weights, std=math.sqrt(2.0 / (self.kernel_size * self.in_channels)))
        if self.deformable:
            # Delta(x) is the output of a rigid KPConv mapping D_in features to 3K values (§3.2): a layer of its own,
            # with its own randomly rotated kernel points (the public code reuses the deformed layer's points).
            # Its weights and bias start at zero (as in the public code; the paper is silent), so training starts
            # from the rigid kernel.
            self.offset_conv = KPConv(self.in_channels, 3 * self.kernel_size, self.kernel_size, self.radius,
                                      self.sigma, deformable=False)
            nn.init.zeros_(self.offset_conv.weights)
            self.offset_bias = nn.Parameter(torch.zeros(3 * self.kernel_size))
        self.last_regularization: torch.Tensor | None = None

    def __getstate__(self):
        # The last regularisation term belongs to one forward pass (and its autograd graph): copies and pickles
        # of the layer (copy.deepcopy of a model mid-training, torch.save) leave it behind.
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        return {**state, "last_regularization": None}

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"radius={self.radius:g}, sigma={self.sigma:g}, deformable={self.deformable}")

    def offset_parameters(self) -> list[nn.Parameter]:
        """Parameters of the shift branch, trained at 0.1x the network's learning rate (§3.2)."""
        if not self.deformable:
            return []
        return [self.offset_conv.weights, self.offset_bias]

    def forward(self, query_points: torch.Tensor, support_points: torch.Tensor, neighbors: torch.Tensor,
                features: torch.Tensor) -> torch.Tensor:
        """(M, 3) queries, (N, 3) supports, (M, H) int64 neighbours (shadow index N), (N, in) -> (M, out)."""
        n = support_points.shape[0]
        if features.dim() != 2 or features.shape[0] != n or features.shape[1] != self.in_channels:
            raise BadInputError(f"KPConv expects features of shape ({n}, {self.in_channels}), "
                                f"got {tuple(features.shape)}")
        if neighbors.dim() != 2 or neighbors.shape[0] != query_points.shape[0]:
            raise BadInputError(f"KPConv expects a ({query_points.shape[0]}, H) neighbour matrix, "
                                f"got {tuple(neighbors.shape)}")
        # Relative neighbour positions y_i = x_i - x in units of sigma; the shadow neighbour is a far point.
        y = self._relative_positions(query_points, support_points, neighbors)            # (M, H, 3)
        return self._convolve(y, features, neighbors)

    def _convolve(self, y: torch.Tensor, features: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
        """Eq. 1-3 (and 5 when deformable) from the relative positions ``y`` (M, H, 3) in units of sigma, the
        support features (N, in) and the neighbour matrix (M, H)."""
        n = features.shape[0]
        kernel = self.kernel_points / self.sigma                                           # (K, 3) in sigma units
        if self.deformable:
            # The shift branch is a rigid KPConv over the same neighbourhoods, with the same sigma: it reads the
            # same y instead of building it again.
            shifts = self.offset_conv._convolve(y, features, neighbors) + self.offset_bias
            # Eq. 5 adds Delta_k(x) to x~_k and says nothing of its scale. Like the public code, we read the 3K
            # outputs in units of sigma (we work in sigma units here, so Delta_k = sigma * output in metres): the
            # same initialisation and learning rate then suit every layer scale.
            kernel = kernel + shifts.view(-1, self.kernel_size, 3)                          # (M, K, 3)
        sq_dist = _squared_distances(kernel, y)                                            # (M, K, H)
        if self.deformable:  # before h: without autograd, h below reuses sq_dist's memory
            self.last_regularization = _regularization(sq_dist, kernel, neighbors < n) if self.training else None
        # sum_i h(y_i, x~_k) f_i for every kernel point: (M, K, in), then sum_k (.) W_k as one matmul (Eq. 1-2).
        weighted = kernel_correlation(sq_dist, features, neighbors)
        return weighted.flatten(1) @ self.weights.reshape(-1, self.out_channels)

    def _relative_positions(self, query_points, support_points, neighbors):
        far = support_points.new_full((1, 3), _SHADOW_DISTANCE * self.sigma)
        padded = torch.cat([support_points, far], dim=0)
        return (gather_rows(padded, neighbors) - query_points.unsqueeze(1)) / self.sigma


def _squared_distances(kernel: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||y_i - x~_k||^2 for kernel points (K, 3) or per-query (M, K, 3) and neighbours y (M, H, 3) -> (M, K, H).

    One (batched) matmul of [-2 x~, 1, ||x~||^2] by [y, ||y||^2, 1]: the (M, H, K, 3) differences are never built.
    Always in the precision of the coordinates, also under autocast: in bfloat16 (8 significant bits) a neighbour
    at 2.5 sigma, ||y||^2 = 6.25, would be off by up to 0.03 sigma^2, and h by as much near the kernel points.
    """
    kernel = kernel.to(y.dtype)  # deformed kernel points come out of a bfloat16 matmul under autocast
    with torch.autocast(y.device.type, enabled=False):
        ones_k = kernel.new_ones(kernel.shape[:-1] + (1,))
        kernel_aug = torch.cat([-2.0 * kernel, ones_k, (kernel * kernel).sum(-1, keepdim=True)], dim=-1)
        y_aug = torch.cat([y, (y * y).sum(-1, keepdim=True), y.new_ones(y.shape[:-1] + (1,))], dim=-1)
        return torch.matmul(kernel_aug, y_aug.transpose(1, 2))


def kernel_correlation(sq_dist: torch.Tensor, features: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """sum_i h(y_i, x~_k) f_i (Eq. 1 and 3) for every query and kernel point: (M, K, in), from the squared
    distances (M, K, H) in units of sigma^2, the support features (N, in) and the neighbours (M, H).

    h is zero beyond sigma, and a kernel point's ball holds a small part of a neighbourhood: on ScanNet spheres
    (rigid layers of KP-FCNN, radius 2.5 sigma) 4.4-5.2% of the (query, kernel point, neighbour) triples have
    h > 0, a neighbour is in range of 0.7 kernel points on average, and shadow neighbours never are. So on a CPU,
    in float32 or float64, the sum runs as a sparse (M K, N) matrix of the non-zero h times the features
    (:func:`_sparse_correlation`): no (M, H, in) gather, no (M, K, H) x (M, H, in) batched matmul (whose
    backward, an inner dimension of K, ran at 12-20 GFLOP/s here). Under CPU bfloat16 autocast the sparse sum
    runs in float32 (torch has no bfloat16 CSR kernel on a CPU; the sum is memory-bound anyway) and the
    weights' matmul that follows in bfloat16. Elsewhere it runs dense (:func:`_dense_correlation`): GPUs (where
    the batched matmul is fast), and under torch.export or a dispatch mode (FLOP counting, fake tensors), which
    see the dense product. Both compute the same sum; only the order of the additions differs."""
    if features.device.type != "cpu" or _intercepted():
        return _dense_correlation(sq_dist, features, neighbors)
    if torch.is_autocast_enabled("cpu"):
        features = features.float()
    if features.dtype not in (torch.float32, torch.float64):  # a network cast to half precision as a whole
        return _dense_correlation(sq_dist, features, neighbors)
    return _sparse_correlation(sq_dist, features, neighbors)


def _intercepted() -> bool:
    """True while torch.compile/export traces, or a Python dispatch mode (FlopCounterMode, FakeTensorMode) is on."""
    current_mode = getattr(torch.utils._python_dispatch, "_get_current_dispatch_mode", lambda: None)
    return tracing() or current_mode() is not None


def _dense_correlation(sq_dist: torch.Tensor, features: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """:func:`kernel_correlation` as h (M, K, H) times the gathered neighbour features (M, H, in), one batched
    matmul. The shadow neighbour reads a zero row: it adds nothing to Eq. 1."""
    influence = _linear_correlation(sq_dist)                                               # h, Eq. 3
    padded = torch.cat([features, features.new_zeros(1, features.shape[1])], dim=0)
    return torch.bmm(influence, gather_rows(padded, neighbors))


def _sparse_correlation(sq_dist: torch.Tensor, features: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """:func:`kernel_correlation` as a CSR matrix A (M K, N), A[m K + k, j] = h(y_i, x~_k) for the neighbour i
    of query m that is support j, times the features (N, in). Only the triples with d < sigma are kept; Eq. 3 is
    evaluated on them alone, with autograd when the kernel points are deformed."""
    m, k, h = sq_dist.shape
    with torch.no_grad():
        triples = (sq_dist < 1.0).view(-1).nonzero().squeeze(1)                            # h > 0 iff d < sigma
        rows = torch.div(triples, h, rounding_mode="floor")                                # m K + k, sorted
        slots = torch.div(triples, k * h, rounding_mode="floor") * h + triples.remainder(h)
        columns = neighbors.reshape(-1).index_select(0, slots)                             # support index j
        row_starts = _row_starts(rows, m * k)
    d = torch.sqrt(sq_dist.reshape(-1).index_select(0, triples).clamp_min(1e-12))
    values = (1.0 - d).to(features.dtype)                                                  # h, Eq. 3
    return _CSRProduct.apply(values, features, row_starts, rows, columns).view(m, k, features.shape[1])


def _row_starts(rows: torch.Tensor, n: int) -> torch.Tensor:
    """CSR row pointers (n + 1,) of entries whose row indices are ``rows`` (any order; the entries are to be
    taken sorted by row)."""
    starts = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=n), 0, out=starts[1:])
    return starts


def _csr(row_starts: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the kernels used here are stable ones
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(row_starts, columns, values, shape, check_invariants=False)


def _csr_times(a: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``a @ dense`` for a CSR ``a``, written straight into a row-major output. ``a @ dense`` itself zero-fills a
    result and copies the product into it: 2.4-15 ms against 1.0 ms for a (91560, 6104) matrix of 171k entries
    times (6104, 64) here (2 threads). beta = 0 ignores the uninitialised input."""
    out = dense.new_empty((a.shape[0], dense.shape[1]))
    return torch.addmm(out, a, dense, beta=0.0, out=out)


class _CSRProduct(torch.autograd.Function):
    """A @ F for A a CSR matrix given by (row_starts, columns, values) with sorted ``rows`` (the row of every
    value), differentiable in the values and in F. Backward: dF = A^T dOut, through an explicit CSR of A^T
    (a row-parallel product, deterministic, and faster here than torch's transposed product), and
    dA = dOut F^T sampled at A's entries (sampled_addmm). torch's own autograd of a CSR product took 1.7 s
    for the values' gradient of a 170k-entry matrix."""

    @staticmethod
    def forward(ctx, values, features, row_starts, rows, columns):
        ctx.save_for_backward(values, features, row_starts, rows, columns)
        return _csr_times(_csr(row_starts, columns, values, (len(row_starts) - 1, features.shape[0])), features)

    @staticmethod
    def backward(ctx, grad):
        values, features, row_starts, rows, columns = ctx.saved_tensors
        grad = grad.contiguous()
        grad_values = grad_features = None
        if ctx.needs_input_grad[0]:
            a = _csr(row_starts, columns, values, (len(row_starts) - 1, features.shape[0]))
            grad_values = torch.sparse.sampled_addmm(a, grad, features.t(), beta=0.0).values()
        if ctx.needs_input_grad[1]:
            n = features.shape[0]
            order = torch.argsort(columns, stable=True)
            transposed = _csr(_row_starts(columns, n), rows.index_select(0, order), values.index_select(0, order),
                              (n, len(row_starts) - 1))
            grad_features = _csr_times(transposed, grad)
        return grad_values, grad_features, None, None, None


def _linear_correlation(sq_dist: torch.Tensor) -> torch.Tensor:
    """h = max(0, 1 - d / sigma) (Eq. 3) from squared distances in units of sigma^2."""
    if sq_dist.requires_grad:  # deformable kernels: keep the graph (the clamp avoids sqrt's infinite slope at 0)
        return torch.clamp(1.0 - torch.sqrt(sq_dist.clamp_min(1e-12)), min=0.0)
    # Nothing to differentiate here (rigid kernels, or no grad): work in place on the (M, K, H) tensor.
    return sq_dist.clamp_(min=1e-12).sqrt_().neg_().add_(1.0).clamp_(min=0.0)


def _regularization(sq_dist: torch.Tensor, kernel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over convolution locations of L_fit(x) + L_rep(x) (Eq. 6-8), distances in units of sigma.

    sq_dist: (M, K, H) squared distances deformed kernel points / neighbours; kernel: (M, K, 3) deformed kernel
    points; valid: (M, H) real (non-shadow) neighbours.
    """
    has_neighbors = valid.any(dim=1)
    # Eq. 7: squared distance from each deformed kernel point to its closest input neighbour.
    nearest = sq_dist.masked_fill(~valid.unsqueeze(1), float("inf")).amin(dim=2)           # (M, K)
    fit = torch.where(has_neighbors.unsqueeze(1), nearest, torch.zeros_like(nearest)).sum(dim=1)
    # Eq. 8: h(x~_k + D_k, x~_l + D_l)^2 over pairs l != k. The public code uses max(0, 1.5 - d/sigma)^2 with the
    # other point detached; we follow the paper.
    k = kernel.shape[1]
    diff = kernel.unsqueeze(2) - kernel.unsqueeze(1)                                       # (M, K, K, 3)
    pair = torch.sqrt((diff * diff).sum(-1).clamp_min(1e-12))  # clamped: no NaN gradient on the diagonal
    off_diagonal = ~torch.eye(k, dtype=torch.bool, device=kernel.device)
    rep = (torch.clamp(1.0 - pair, min=0.0) ** 2 * off_diagonal).sum(dim=(1, 2))
    # Eq. 6 sums over locations x; we average so the term does not grow with the batch size, like the mean
    # cross-entropy it is added to (the public code averages too).
    return (fit + rep).mean() if fit.numel() else kernel.new_zeros(())
