"""Dense (1x1) layers on stacked points, as inference and training run them.

* :func:`folded_batch_norm`: in eval mode a dense layer followed by batch norm is one affine map; the networks
  run it as one product with a bias. On the sparse airborne tile (85k points, 2 threads) batch norm passes took
  ~12% of the network's time.
* :func:`upsampled_skip_product`: the dense layer of a U-Net decoder step on the concatenation of the upsampled
  coarse features and the skip link, without building either tensor.
* :func:`linear_norm` and :func:`linear_norm_decode`: a dense layer and its batch norm, folded in eval mode, as
  both networks' unary blocks run them.
"""
from __future__ import annotations

import torch

from .gather import gather_rows


def upsampled_skip_product(weight: torch.Tensor, coarse: torch.Tensor, index: torch.Tensor,
                           skip: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The dense layer of a U-Net decoder step, ``concat(coarse[index], skip) @ weight.T (+ bias)`` (nearest
    upsampling of ``coarse`` (M, C_c) by ``index`` (N,), then the skip link ``skip`` (N, C_s); ``weight``
    (C_out, C_c + C_s)), computed as ``(coarse @ W_c.T + bias)[index] + skip @ W_s.T``. Taking rows commutes
    with a product on the right, so the coarse part is multiplied on the M coarse rows instead of the N
    upsampled ones, and neither the upsampled nor the concatenated (N, C_c + C_s) tensor is built. The same
    function; the sum is split in two products, so the last bits of float rounding differ."""
    c = coarse.shape[1]
    head = coarse @ weight[:, :c].t() if bias is None else torch.addmm(bias, coarse, weight[:, :c].t())
    return torch.addmm(gather_rows(head, index), skip, weight[:, c:].t())


def folded_batch_norm(linear: torch.nn.Linear, norm: torch.nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """``norm(linear(x))`` with the batch norm's running statistics (eval mode) as one affine map, ``x @ W.T + b``:
    batch norm then scales channel k by s_k = gamma_k / sqrt(var_k + eps) and shifts it by beta_k - mean_k s_k, so
    W = diag(s) W_linear, b = beta - mean * s (``linear`` has no bias). One product with a bias instead of a
    product and a pass of batch norm over the (N, C) output; equal up to float rounding."""
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    return linear.weight * scale[:, None], norm.bias - norm.running_mean * scale


def linear_norm(linear: torch.nn.Linear, norm: torch.nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """``norm(linear(x))``: as written in training mode, one product with a bias in eval mode."""
    if norm.training:
        return norm(linear(x))
    weight, bias = folded_batch_norm(linear, norm)
    return torch.addmm(bias, x, weight.t())


def linear_norm_decode(linear: torch.nn.Linear, norm: torch.nn.BatchNorm1d, coarse: torch.Tensor,
                       index: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``norm(linear(concat(coarse[index], skip)))`` through :func:`upsampled_skip_product`, folded in eval mode."""
    if norm.training:
        return norm(upsampled_skip_product(linear.weight, coarse, index, skip))
    weight, bias = folded_batch_norm(linear, norm)
    return upsampled_skip_product(weight, coarse, index, skip, bias)
