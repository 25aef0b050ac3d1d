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

import torch
from torch import nn

from ..errors import BadInputError, UsageError
from .gather import gather_rows
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
        # Neighbour features with a zero row for the shadow neighbour: it adds nothing to Eq. 1.
        padded = torch.cat([features, features.new_zeros(1, features.shape[1])], dim=0)
        neighbor_features = gather_rows(padded, neighbors)                                 # (M, H, in)
        return self._convolve(y, neighbor_features, neighbors, n)

    def _convolve(self, y: torch.Tensor, neighbor_features: torch.Tensor, neighbors: torch.Tensor,
                  n: int) -> torch.Tensor:
        """Eq. 1-3 (and 5 when deformable) from the relative positions ``y`` (M, H, 3) in units of sigma and the
        gathered neighbour features (M, H, in)."""
        kernel = self.kernel_points / self.sigma                                           # (K, 3) in sigma units
        if self.deformable:
            # The shift branch is a rigid KPConv over the same neighbourhoods, with the same sigma: it reads the
            # same y and gathered features instead of building them again.
            shifts = self.offset_conv._convolve(y, neighbor_features, neighbors, n) + self.offset_bias
            # Eq. 5 adds Delta_k(x) to x~_k and says nothing of its scale. Like the public code, we read the 3K
            # outputs in units of sigma (we work in sigma units here, so Delta_k = sigma * output in metres): the
            # same initialisation and learning rate then suit every layer scale.
            kernel = kernel + shifts.view(-1, self.kernel_size, 3)                          # (M, K, 3)
        sq_dist = _squared_distances(kernel, y)                                            # (M, K, H)
        if self.deformable:  # before h: without autograd, h below reuses sq_dist's memory
            self.last_regularization = _regularization(sq_dist, kernel, neighbors < n) if self.training else None
        influence = _linear_correlation(sq_dist)                                           # h, Eq. 3
        # sum_i h_ik f_i for every kernel point: (M, K, in), then sum_k (.) W_k as one matmul (Eq. 1-2).
        weighted = torch.bmm(influence, neighbor_features)
        return weighted.reshape(weighted.shape[0], -1) @ self.weights.reshape(-1, self.out_channels)

    def _relative_positions(self, query_points, support_points, neighbors):
        far = support_points.new_full((1, 3), _SHADOW_DISTANCE * self.sigma)
        padded = torch.cat([support_points, far], dim=0)
        return (gather_rows(padded, neighbors) - query_points.unsqueeze(1)) / self.sigma


def _squared_distances(kernel: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||y_i - x~_k||^2 for kernel points (K, 3) or per-query (M, K, 3) and neighbours y (M, H, 3) -> (M, K, H).

    One (batched) matmul of [-2 x~, 1, ||x~||^2] by [y, ||y||^2, 1]: the (M, H, K, 3) differences are never built.
    """
    ones_k = kernel.new_ones(kernel.shape[:-1] + (1,))
    kernel_aug = torch.cat([-2.0 * kernel, ones_k, (kernel * kernel).sum(-1, keepdim=True)], dim=-1)
    y_aug = torch.cat([y, (y * y).sum(-1, keepdim=True), y.new_ones(y.shape[:-1] + (1,))], dim=-1)
    return torch.matmul(kernel_aug, y_aug.transpose(1, 2))


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
