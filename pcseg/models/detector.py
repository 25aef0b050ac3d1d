"""``focals-centerpoint``: a VoxelNet-style sparse backbone with focal sparse convolutions and a CenterPoint head.

Pipeline (Focals Conv §3.4 / §4.1: Focals Conv at the end of the first three backbone stages, tau = 0.5):

1. voxelisation with the mean of the point features per voxel (x, y, z, intensity);
2. 3D backbone: stem (submanifold conv 16) + 4 stages with 16/32/64/64 channels; stages 2-4 start with a
   strided regular sparse conv (x2); a focal sparse conv ends stages 1-3 (with ``focal=False`` they are left
   out, giving the plain VoxelNet/SECOND backbone of the baselines);
3. height compression: the stride-8 3D features are stacked along z into a bird's-eye-view map;
4. a small 2D backbone (two scales, the coarser one upsampled and concatenated);
5. CenterPoint head (Yin et al. 2021): per-class centre heatmap (focal loss against Gaussian targets) and, at
   the centre cell, the sub-cell offset, z, log size and sin/cos of the yaw (L1);
6. decoding: 3x3 max-pool peaks, top-K, score threshold, rotated BEV NMS per class (on CPU).

``iou_head=True`` adds IoU-aware scoring (AFDetV2, Hu et al. 2022, the "IoU rectifier" of OpenPCDet's
CenterPoint): a third head predicts, at each centre cell, the 3D IoU of the box regressed there with its
ground-truth box (target 2 IoU - 1, L1, on the centre cells of the objects, the IoU computed on the detached
boxes), and the score of a detection becomes heat^(1 - alpha) * IoU^alpha with ``iou_alpha`` (0.68, the value
OpenPCDet's CenterPoint configurations give cars). A centre peak then ranks by how well its box fits as well as
by how sure the heatmap is, which is what AP at IoU 0.7 rewards. Not in the Focals Conv paper: its KITTI
detectors are two-stage (Voxel R-CNN), whose second stage does this work.

``fusion=True`` is Focals Conv-F (§3.3): the focal conv ending stage 1 becomes the fusion focal conv
(:class:`pcseg.nn.focal.FocalSparseConv3dFusion`) fed by a light image backbone
(:class:`pcseg.nn.image.ImageBackbone`, randomly initialised: the paper's is a pretrained ResNet-50 we cannot
download). The paper applies Focals Conv-F "only in the first stage" (§4.1), "in the last layer of Stage 1"
(supplementary B). Our reading, where it does not say more: Focals Conv-F *replaces* the lidar focal conv there
(the public KITTI code stacks both, a lidar focal conv then Focals Conv-F); stages 2-3 keep their lidar focal
convs when ``focal=True`` (Tab. 1: Focals Conv-F has Focals Conv's parameters plus the fusion layers, 13.44 M ->
13.70 M), and ``focal=False`` leaves Focals Conv-F alone at stage 1 (the nuScenes setting of Tab. 9-10). A fusion
model's forward takes each frame's image and its lidar -> image projection matrix
(``pcseg.geometry.camera.lidar_to_image_matrix``) along with the points.

Boxes are ``[x, y, z, dx, dy, dz, yaw]`` in the lidar frame with (x, y, z) the box centre.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UsageError
from ..nn.focal import (
    FocalSparseConv3d, FocalSparseConv3dFusion, importance_focal_loss, points_in_boxes_torch, voxel_centers,
)
from ..nn.image import ImageBackbone, ImageFeatures, stack_images
from ..nn.sparse import (
    SparseBatchNorm, SparseConv3d, SparseReLU, SparseSequential, SubMConv3d, to_dense, voxelize,
)
from .registry import register

__all__ = ["FocalsCenterPoint", "Detections", "gaussian_radius", "heatmap_focal_loss",
           "KITTI_RANGE", "KITTI_VOXEL", "CPU_RANGE", "CPU_VOXEL", "PRESETS"]

CLASSES = ("Car", "Pedestrian", "Cyclist")
KITTI_RANGE = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0)     # the usual KITTI range and voxel (the defaults)
KITTI_VOXEL = (0.05, 0.05, 0.1)
CPU_RANGE = (0.0, -32.0, -3.0, 64.0, 32.0, 1.0)       # coarser preset for the 1 s CPU budget (shipped model)
CPU_VOXEL = (0.1, 0.1, 0.2)
PRESETS = {"kitti": {"point_range": list(KITTI_RANGE), "voxel_size": list(KITTI_VOXEL)},
           "cpu": {"point_range": list(CPU_RANGE), "voxel_size": list(CPU_VOXEL)}}
OUT_STRIDE = 8                                        # BEV map stride (3 strided stages)
BOX_CODE = 8                                          # dx, dy offset, z, log dx/dy/dz, sin, cos


def _block(cin: int, cout: int, conv=None) -> SparseSequential:
    return SparseSequential(conv if conv is not None else SubMConv3d(cin, cout), SparseBatchNorm(cout), SparseReLU())


def _conv2d(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Detections:
    """Boxes of one frame: (B, 7) float32 lidar boxes, (B,) scores, (B,) class names."""

    def __init__(self, boxes: np.ndarray, scores: np.ndarray, names: list[str]):
        self.boxes, self.scores, self.names = boxes, scores, names

    def __len__(self) -> int:
        return len(self.scores)

    def subset(self, keep: np.ndarray) -> "Detections":
        return Detections(self.boxes[keep], self.scores[keep], [n for n, k in zip(self.names, keep) if k])


class FocalsCenterPoint(nn.Module):
    def __init__(self, class_names=CLASSES, in_features: int = 4, point_range=KITTI_RANGE, voxel_size=KITTI_VOXEL,
                 channels=(16, 32, 64, 64), focal: bool = True, tau: float = 0.5, top_ratio: float | None = None,
                 bev_channels: int = 64, fusion: bool = False, image_width: int = 32, iou_head: bool = False,
                 iou_alpha: float = 0.68):
        super().__init__()
        self.class_names = list(class_names)
        self.in_features = int(in_features)
        self.point_range = [float(v) for v in point_range]
        self.voxel_size = [float(v) for v in voxel_size]
        self.channels = [int(c) for c in channels]
        self.focal, self.tau, self.top_ratio = bool(focal), float(tau), top_ratio
        self.bev_channels = int(bev_channels)
        self.fusion, self.image_width = bool(fusion), int(image_width)
        self.iou_head, self.iou_alpha = bool(iou_head), float(iou_alpha)
        if not 0.0 <= self.iou_alpha <= 1.0:
            raise UsageError(f"focals-centerpoint: iou_alpha must be in [0, 1], not {iou_alpha}")
        if len(self.point_range) != 6 or len(self.voxel_size) != 3 or len(self.channels) != 4:
            raise UsageError("focals-centerpoint: point_range has 6 values, voxel_size 3, channels 4")
        size = np.array(self.point_range[3:]) - np.array(self.point_range[:3])
        grid = np.round(size / np.array(self.voxel_size)).astype(int)          # x, y, z cells
        if np.any(grid[:2] % OUT_STRIDE) or np.any(np.abs(grid * self.voxel_size - size) > 1e-6):
            raise UsageError("focals-centerpoint: the range must be a whole number of voxels and its x and y "
                             "cell counts multiples of 8")
        c1, c2, c3, c4 = self.channels
        self.stem = _block(self.in_features, c1)
        self.stage1 = _block(c1, c1)
        self.stage2 = SparseSequential(_block(c1, c2, SparseConv3d(c1, c2, 3, 2, 1)), _block(c2, c2), _block(c2, c2))
        self.stage3 = SparseSequential(_block(c2, c3, SparseConv3d(c2, c3, 3, 2, 1)), _block(c3, c3), _block(c3, c3))
        # the last stage keeps z from growing with padding (OpenPCDet's VoxelBackBone8x uses z-padding 0 here)
        self.stage4 = SparseSequential(_block(c3, c4, SparseConv3d(c3, c4, 3, 2, (0, 1, 1))), _block(c4, c4),
                                       _block(c4, c4))
        # the focal conv ending stage i + 1 is focal_convs[i]; with fusion, the first is Focals Conv-F
        focal_convs = []
        if self.fusion:
            focal_convs.append(FocalSparseConv3dFusion(c1, self.point_range, self.voxel_size, 3, tau=self.tau,
                                                       top_ratio=top_ratio))
        if self.focal:
            focal_convs += [FocalSparseConv3d(c, c, 3, tau=self.tau, top_ratio=top_ratio)
                            for c in ((c2, c3) if self.fusion else (c1, c2, c3))]
        self.focal_convs = nn.ModuleList(focal_convs)
        if self.fusion:
            self.image_backbone = ImageBackbone(c1, self.image_width)   # features summed to c1-channel voxels
        z = int(grid[2])
        for pad in (1, 1, 0):
            z = (z + 2 * pad - 3) // 2 + 1
        self.bev_height = z
        self.map_size = (int(grid[1]) // OUT_STRIDE, int(grid[0]) // OUT_STRIDE)   # (H = y, W = x)
        b = self.bev_channels
        self.bev_block1 = nn.Sequential(_conv2d(c4 * z, b), _conv2d(b, b))
        self.bev_block2 = nn.Sequential(_conv2d(b, 2 * b, 2), _conv2d(2 * b, 2 * b))
        self.bev_up2 = nn.Sequential(nn.ConvTranspose2d(2 * b, b, 2, 2, bias=False), nn.BatchNorm2d(b), nn.ReLU())
        self.shared = _conv2d(2 * b, b)
        self.heatmap = nn.Sequential(_conv2d(b, b), nn.Conv2d(b, len(self.class_names), 1))
        self.box = nn.Sequential(_conv2d(b, b), nn.Conv2d(b, BOX_CODE, 1))
        self.iou = nn.Sequential(_conv2d(b, b), nn.Conv2d(b, 1, 1)) if self.iou_head else None
        nn.init.constant_(self.heatmap[-1].bias, -2.19)     # prior 0.1 (CenterNet/CenterPoint)

    # ------------------------------------------------------------------ configuration
    def config(self) -> dict:
        return {"class_names": self.class_names, "in_features": self.in_features, "point_range": self.point_range,
                "voxel_size": self.voxel_size, "channels": self.channels, "focal": self.focal, "tau": self.tau,
                "top_ratio": self.top_ratio, "bev_channels": self.bev_channels, "fusion": self.fusion,
                "image_width": self.image_width, "iou_head": self.iou_head, "iou_alpha": self.iou_alpha}

    @property
    def cell_size(self) -> tuple[float, float]:
        return self.voxel_size[0] * OUT_STRIDE, self.voxel_size[1] * OUT_STRIDE

    # ------------------------------------------------------------------ forward
    def forward(self, points: list[torch.Tensor], images: list[torch.Tensor] | None = None,
                lidar_to_image: list[torch.Tensor] | torch.Tensor | None = None) -> dict:
        """points: per frame (N, in_features) float32, x, y, z first. A fusion model also takes per frame its
        camera image ((H, W, 3) uint8) and its (3, 4) lidar -> image matrix. Returns the head maps and focal
        outputs."""
        image = self.image_features(images, lidar_to_image, len(points)) if self.fusion else None
        x = voxelize([p[:, : self.in_features] for p in points], self.point_range, self.voxel_size)
        focal_outputs = []
        x = self.stage1(self.stem(x))
        for i, stage in enumerate((self.stage2, self.stage3, self.stage4)):
            if i < len(self.focal_convs):
                layer = self.focal_convs[i]
                res = layer(x, image) if isinstance(layer, FocalSparseConv3dFusion) else layer(x)
                focal_outputs.append(res)
                x = res.out
            x = stage(x)
        bev = to_dense(x)                                               # (B, C, Z, H, W)
        bev = bev.flatten(1, 2)                                         # height compression
        f1 = self.bev_block1(bev)
        f2 = self.bev_up2(self.bev_block2(f1))
        feat = self.shared(torch.cat([f1, f2], 1))
        out = {"heatmap": self.heatmap(feat), "box": self.box(feat), "focal": focal_outputs}
        if self.iou_head:
            out["iou"] = self.iou(feat)
        return out

    def image_features(self, images, lidar_to_image, frames: int) -> ImageFeatures:
        """The image branch of Focals Conv-F: feature maps of the frames' images and their projections."""
        if images is None or lidar_to_image is None:
            raise UsageError("this detector fuses camera images (Focals Conv-F): it needs each frame's image and "
                             "calibration")
        if len(images) != frames or len(lidar_to_image) != frames:
            raise ValueError(f"{frames} frames but {len(images)} images and {len(lidar_to_image)} projections")
        dev = self.image_backbone.reduce.weight.device
        pixels, sizes = stack_images([torch.as_tensor(im).to(dev) for im in images])
        matrices = torch.stack([torch.as_tensor(m, dtype=torch.float32).to(dev) for m in lidar_to_image])
        return ImageFeatures(self.image_backbone(pixels), matrices, sizes, ImageBackbone.stride)

    # ------------------------------------------------------------------ targets and losses
    def targets(self, boxes: list[torch.Tensor], labels: list[torch.Tensor]) -> dict:
        """CenterPoint targets. boxes: per frame (B_i, 7); labels: (B_i,) class indices (-1 = not trained on).

        heatmap (B, C, H, W): max of per-object Gaussians (radius from CenterNet's ``gaussian_radius`` with
        min overlap 0.1, at least 2 cells); index/mask/box (B, M): the centre cell and its regression target.
        """
        dev = self.heatmap[-1].weight.device
        h, w = self.map_size
        cx, cy = self.cell_size
        m = max([1] + [int((lab >= 0).sum()) for lab in labels])
        heat = torch.zeros(len(boxes), len(self.class_names), h, w, device=dev)
        index = torch.zeros(len(boxes), m, dtype=torch.long, device=dev)
        mask = torch.zeros(len(boxes), m, dtype=torch.bool, device=dev)
        target = torch.zeros(len(boxes), m, BOX_CODE, device=dev)
        for b, (bx, lab) in enumerate(zip(boxes, labels)):             # loop over frames
            bx, lab = bx.to(dev).float(), lab.to(dev)
            fx = (bx[:, 0] - self.point_range[0]) / cx
            fy = (bx[:, 1] - self.point_range[1]) / cy
            ix, iy = fx.floor().long(), fy.floor().long()
            keep = (lab >= 0) & (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h) & (bx[:, 3] > 0) & (bx[:, 4] > 0)
            bx, lab, fx, fy, ix, iy = bx[keep], lab[keep], fx[keep], fy[keep], ix[keep], iy[keep]
            if len(bx) == 0:
                continue
            radius = gaussian_radius(bx[:, 3] / cx, bx[:, 4] / cy).floor().clamp_min(2).long()
            _draw_gaussians(heat[b], lab, ix, iy, radius)
            n = len(bx)
            index[b, :n] = iy * w + ix
            mask[b, :n] = True
            target[b, :n] = torch.stack([fx - ix, fy - iy, bx[:, 2], bx[:, 3].log(), bx[:, 4].log(), bx[:, 5].log(),
                                         torch.sin(bx[:, 6]), torch.cos(bx[:, 6])], 1)
        return {"heatmap": heat, "index": index, "mask": mask, "box": target}

    def loss(self, out: dict, boxes: list[torch.Tensor], labels: list[torch.Tensor], loc_weight: float = 2.0) -> dict:
        """Heatmap focal loss + ``loc_weight`` x L1 box loss (CenterPoint) + importance focal loss of every focal
        conv (weight 1, Focals Conv §3.2; targets = voxel centres inside any ground-truth box)."""
        t = self.targets(boxes, labels)
        hm = heatmap_focal_loss(out["heatmap"], t["heatmap"])
        pred = out["box"].flatten(2).transpose(1, 2)                    # (B, H*W, 8)
        pred = torch.gather(pred, 1, t["index"][..., None].expand(-1, -1, BOX_CODE))
        num = t["mask"].sum().clamp_min(1)
        l1 = (F.l1_loss(pred, t["box"], reduction="none") * t["mask"][..., None]).sum() / num
        result = {"heatmap": hm, "box": l1}
        total = hm + loc_weight * l1
        if self.iou_head:
            result["iou"] = self.iou_loss(out, t)
            total = total + result["iou"]
        if out["focal"]:
            imp = 0.0
            for res in out["focal"]:
                centres = voxel_centers(res.x, self.point_range, self.voxel_size)
                target = torch.zeros(len(centres), dtype=torch.bool, device=centres.device)
                for b, bx in enumerate(boxes):                          # loop over frames
                    rows = res.x.coords[:, 0] == b
                    target[rows] = points_in_boxes_torch(centres[rows], bx.to(centres.device).float())
                centre = res.importance[:, res.importance.shape[1] // 2]
                imp = imp + importance_focal_loss(centre, target)
            result["importance"] = imp
            total = total + imp
        result["total"] = total
        return result

    def boxes_from_codes(self, code: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """(..., 7) lidar boxes from (..., 8) box codes at flat BEV cells ``cell`` (iy * W + ix): the inverse of
        the regression targets of :meth:`targets`."""
        w = self.map_size[1]
        cx, cy = self.cell_size
        x = ((cell % w) + code[..., 0]) * cx + self.point_range[0]
        y = ((cell // w) + code[..., 1]) * cy + self.point_range[1]
        dims = code[..., 3:6].clamp(max=5.0).exp()
        yaw = torch.atan2(code[..., 6], code[..., 7])
        return torch.cat([x[..., None], y[..., None], code[..., 2:3], dims, yaw[..., None]], -1)

    def iou_loss(self, out: dict, t: dict) -> torch.Tensor:
        """L1 between the IoU head at the objects' centre cells and 2 IoU - 1, the IoU (3D) of the box the model
        regresses there (detached) with the object's box (AFDetV2)."""
        from ..geometry.boxes import iou_3d

        index, mask = t["index"], t["mask"]
        pred = torch.gather(out["box"].flatten(2).transpose(1, 2), 1, index[..., None].expand(-1, -1, BOX_CODE))
        with torch.no_grad():
            regressed = self.boxes_from_codes(pred.detach().float(), index)[mask].cpu().double().numpy()
            truth = self.boxes_from_codes(t["box"], index)[mask].cpu().double().numpy()
            ious = np.diagonal(iou_3d(regressed, truth))    # each object's box with the one regressed for it
            target = torch.from_numpy(2.0 * ious - 1.0).float().to(index.device)
        iou = torch.gather(out["iou"].flatten(1), 1, index)[mask].float()
        return F.l1_loss(iou, target, reduction="sum") / mask.sum().clamp_min(1)

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def decode(self, out: dict, score_thresh: float = 0.3, top_k: int = 100, nms_iou: float = 0.1) -> list[Detections]:
        """Peaks of the heatmap (3x3 max pool), top-K, (IoU-rectified scores,) score threshold, boxes, rotated BEV
        NMS per class."""
        from ..geometry.boxes import nms_bev

        heat = torch.sigmoid(out["heatmap"])
        peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat)
        bsz, ncls, h, w = heat.shape
        scores, flat = peaks.flatten(1).topk(min(top_k, ncls * h * w), dim=1)
        cls, cell = flat // (h * w), flat % (h * w)
        code = torch.gather(out["box"].flatten(2), 2, cell[:, None, :].expand(-1, BOX_CODE, -1)).transpose(1, 2)
        boxes = self.boxes_from_codes(code, cell).float().cpu().numpy()
        if self.iou_head:  # AFDetV2's rectification: heat^(1 - alpha) * IoU^alpha, the IoU read back from 2 IoU - 1
            iou = ((torch.gather(out["iou"].flatten(1), 1, cell) + 1.0) / 2.0).clamp(0.0, 1.0)
            scores = scores.pow(1.0 - self.iou_alpha) * iou.pow(self.iou_alpha)
        scores, cls = scores.float().cpu().numpy(), cls.cpu().numpy()
        results = []
        for b in range(bsz):                                            # loop over frames
            keep = scores[b] >= score_thresh
            bx, sc, cl = boxes[b][keep], scores[b][keep], cls[b][keep]
            kept = []
            for c in np.unique(cl):                                     # loop over classes
                idx = np.flatnonzero(cl == c)
                kept.append(idx[nms_bev(bx[idx], sc[idx], nms_iou)])
            kept = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
            kept = kept[np.argsort(-sc[kept], kind="stable")]
            results.append(Detections(bx[kept], sc[kept], [self.class_names[int(c)] for c in cl[kept]]))
        return results


def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float = 0.1) -> torch.Tensor:
    """Radius (in cells) of CornerNet's Gaussian: the largest corner displacement ``r`` that keeps IoU >=
    ``min_overlap`` with the ground truth in all three of CornerNet's cases, i.e. the smallest of

    1. both corners moved the same way (box translated by r, r):  (h-r)(w-r) / (2hw - (h-r)(w-r)) = o;
    2. both corners moved inwards (box shrunk by 2r):              (h-2r)(w-2r) / hw = o;
    3. both corners moved outwards (box grown by 2r):              hw / ((h+2r)(w+2r)) = o.

    The public CenterNet/CenterPoint function solves these quadratics with slips (dividing by 2 instead of 2a
    and taking the other root of case 1); we solve them as written. Either way CenterPoint then floors the
    radius at 2 cells, which is what most KITTI objects get on an 0.8 m map.
    """
    s, p, o = height + width, height * width, min_overlap
    r1 = (s - torch.sqrt(s ** 2 - 4 * p * (1 - o) / (1 + o))) / 2
    r2 = (2 * s - torch.sqrt(4 * s ** 2 - 16 * (1 - o) * p)) / 8
    r3 = (-2 * o * s + torch.sqrt(4 * o ** 2 * s ** 2 + 16 * o * (1 - o) * p)) / (8 * o)
    return torch.minimum(torch.minimum(r1, r2), r3)


def _draw_gaussians(heat: torch.Tensor, cls: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor,
                    radius: torch.Tensor) -> None:
    """heat (C, H, W) <- max(heat, exp(-d^2 / (2 sigma^2))) within ``radius`` of each centre, sigma = (2r+1)/6."""
    r_max = int(radius.max())
    d = torch.arange(-r_max, r_max + 1, device=heat.device)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    dx, dy = dx.reshape(-1), dy.reshape(-1)                              # (W2,)
    sigma = (2 * radius.float() + 1) / 6
    g = torch.exp(-(dx[None] ** 2 + dy[None] ** 2).float() / (2 * sigma[:, None] ** 2))     # (B, W2)
    px, py = ix[:, None] + dx[None], iy[:, None] + dy[None]
    _, h, w = heat.shape
    ok = (dx[None].abs() <= radius[:, None]) & (dy[None].abs() <= radius[:, None]) & (px >= 0) & (px < w) \
        & (py >= 0) & (py < h) & (g > torch.finfo(torch.float32).eps)
    flat = (cls[:, None] * h * w + py * w + px)[ok]
    heat.view(-1).scatter_reduce_(0, flat, g[ok], reduce="amax")


def heatmap_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
                       beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel focal loss (Zhou et al., "Objects as Points", Eq. 1; alpha 2, beta 4),
    normalised by the number of object centres; CenterPoint trains its heatmap with it."""
    p = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -torch.log(p) * (1 - p) ** alpha * pos
    neg_loss = -torch.log(1 - p) * p ** alpha * (1 - target) ** beta * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp_min(1)


@register("focals-centerpoint", task="detect")
def focals_centerpoint(class_names=CLASSES, in_features: int = 4, point_range=KITTI_RANGE, voxel_size=KITTI_VOXEL,
                       channels=(16, 32, 64, 64), focal: bool = True, tau: float = 0.5,
                       top_ratio: float | None = None, bev_channels: int = 64, fusion: bool = False,
                       image_width: int = 32, iou_head: bool = False, iou_alpha: float = 0.68) -> FocalsCenterPoint:
    """Voxel backbone with focal sparse convs (Focals Conv) and a CenterPoint head: 3D boxes from lidar frames
    (``fusion=True``: Focals Conv-F, with camera images; ``iou_head=True``: IoU-aware scores)."""
    return FocalsCenterPoint(class_names, in_features, point_range, voxel_size, channels, focal, tau, top_ratio,
                             bev_channels, fusion, image_width, iou_head, iou_alpha)
