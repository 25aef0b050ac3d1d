"""Image branch of the multi-modal focal sparse convolution (Focals Conv-F, Chen et al. 2022, §3.3).

Feature extraction (§3.3): "a conv-bn-relu layer and a max-pooling layer. It down-samples the input image to
1/4 resolutions. It is followed by 3 conv-bn-relu layers with residual connection. The channel number is then
reduced to be consistent with that of sparse features, with an MLP layer." That is the stem and first stage of
a ResNet; the paper's (and the public code's) are a ResNet-50 pretrained on COCO (DeepLabV3). We cannot download
weights, so :class:`ImageBackbone` is a small CNN of the same shape, randomly initialised and trained jointly with
the detector (§3.3 "They are jointly trained with detectors"). Our choices, where the paper gives no number:

* stem: 7x7 conv, stride 2, padding 3 (ResNet's) then a 3x3 max-pool, stride 2, padding 1: stride 4 overall;
* the 3 residual layers are 3x3 conv-bn-relu at the stem's width, each ``relu(x + bn(conv(x)))`` (ResNet's
  placement of the skip before the last ReLU);
* the "MLP layer" is a per-pixel linear layer (1x1 conv with bias) to the sparse features' channel count;
* pixels are scaled to [0, 1]; no ImageNet mean/std (nothing pretrained expects them; the stem's batch norm
  normalises).

Alignment (:class:`ImageFeatures`): each voxel centre is projected into the image with the calibration
(``pcseg.geometry.camera``; the paper samples at projected voxel centres) and the feature map is sampled there
*bilinearly*. The public code instead up-samples the map to full resolution and reads the pixel at the truncated
integer projection of the voxel's corner; bilinear sampling at the centre is the same up-sampling without
materialising it. With the stem's paddings, cell ``j`` of the stride-4 map is centred on pixel ``4 j``, so a pixel
coordinate ``u`` is map coordinate ``u / 4``. Voxels behind the camera or outside the image get zero features and
``inside = False``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..geometry.camera import in_image, project_to_image

__all__ = ["ImageBackbone", "ImageFeatures", "stack_images", "sample_bilinear"]


class _Residual(nn.Module):
    """One 3x3 conv-bn-relu layer with an identity skip: ``relu(x + bn(conv(x)))``."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.norm = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.norm(self.conv(x)))


class ImageBackbone(nn.Module):
    """Light 2D backbone of §3.3: (B, 3, H, W) float pixels in [0, 1] -> (B, out_channels, H/4, W/4)."""

    stride = 4

    def __init__(self, out_channels: int, width: int = 32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.layers = nn.Sequential(*[_Residual(width) for _ in range(3)])
        self.reduce = nn.Conv2d(width, out_channels, 1)          # the "MLP layer": per-pixel linear

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.layers(self.stem(images)))


def stack_images(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame (H_i, W_i, 3) uint8 (or float 0-255) -> ((B, 3, H, W) float in [0, 1], zero-padded at the bottom
    and right to the largest frame, as OpenPCDet's collate pads images; (B, 2) float sizes (W_i, H_i)). Padding at
    the bottom and right keeps every pixel coordinate; the sizes say where each real image ends."""
    h = max(int(im.shape[0]) for im in images)
    w = max(int(im.shape[1]) for im in images)
    out = torch.zeros(len(images), 3, h, w, device=images[0].device)
    for b, im in enumerate(images):                                  # loop over frames
        if im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"image {b}: expected (H, W, 3) pixels, got shape {tuple(im.shape)}")
        out[b, :, : im.shape[0], : im.shape[1]] = im.permute(2, 0, 1).float() / 255.0
    sizes = torch.tensor([[im.shape[1], im.shape[0]] for im in images], dtype=torch.float32, device=out.device)
    return out, sizes


def sample_bilinear(maps: torch.Tensor, batch: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """Bilinear interpolation of ``maps`` (B, C, H, W) at map coordinates ``(fx, fy)`` of frame ``batch`` (N,):
    cell ``(i, j)`` at ``(fx, fy) = (i, j)``, coordinates clamped to the map (border values beyond it).
    Equals ``F.grid_sample(align_corners=True, padding_mode="border")`` per frame, as one vectorised gather."""
    _, _, h, w = maps.shape
    fx = fx.clamp(0, w - 1)
    fy = fy.clamp(0, h - 1)
    x0 = fx.floor().long().clamp(max=max(w - 2, 0))
    y0 = fy.floor().long().clamp(max=max(h - 2, 0))
    x1 = (x0 + 1).clamp(max=w - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    ax = (fx - x0)[:, None]
    ay = (fy - y0)[:, None]
    flat = maps.permute(0, 2, 3, 1)                                  # (B, H, W, C)
    top = flat[batch, y0, x0] * (1 - ax) + flat[batch, y0, x1] * ax
    bottom = flat[batch, y1, x0] * (1 - ax) + flat[batch, y1, x1] * ax
    return top * (1 - ay) + bottom * ay


@dataclass
class ImageFeatures:
    """Image feature maps of a batch and how to reach them from lidar coordinates.

    maps: (B, C, H/s, W/s); lidar_to_image: (B, 3, 4) projection matrices
    (``pcseg.geometry.camera.lidar_to_image_matrix``); sizes: (B, 2) image (width, height) in pixels;
    stride: pixels per map cell.
    """

    maps: torch.Tensor
    lidar_to_image: torch.Tensor
    sizes: torch.Tensor
    stride: int

    def sample(self, xyz: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) lidar points of frames ``batch`` -> ((N, C) image features, zero outside the image; (N,) bool
        inside). Vectorised over the batch: each point is projected with its own frame's matrix."""
        uv, depth = project_to_image(xyz, self.lidar_to_image[batch].to(xyz.dtype))   # each point's frame's matrix
        size = self.sizes[batch]
        inside = in_image(uv, depth, size[:, 0], size[:, 1])
        feats = sample_bilinear(self.maps, batch, uv[:, 0] / self.stride, uv[:, 1] / self.stride)
        return feats * inside[:, None], inside
