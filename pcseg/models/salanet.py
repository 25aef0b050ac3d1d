"""SALANet: SALA inside the unified residual architecture of Liu et al. 2020 (SALA paper §3.4, Fig. 4 and 6).

Structure (C = ``width``, bottleneck ratio gamma = 2, five pyramid levels at grid ``dl0 * 2**l`` and ball radius
``radius * 2**l``):

    level 0   unary d0 -> C/2, SALA block C/2 -> C/2, bottleneck C/2 -> C          (stage 1, output C)
    level l   strided bottleneck 2^(l-1)C -> 2^l C (pooling from level l-1), bottleneck 2^l C -> 2^l C
              for l = 1..4 (stages 2-5, outputs 2C, 4C, 8C, 16C)
    decoder   nearest upsampling, concatenation with the encoder output of the same level and a unary layer:
              16C+8C -> 4C, 4C+4C -> 2C, 2C+2C -> C, C+C -> C/2; head C/2 -> C/2 -> classes.

A bottleneck is: unary in -> out/gamma (BN, ReLU), SALA block out/gamma -> out/gamma (SALA, BN, ReLU), unary
out/gamma -> out (BN), plus the shortcut (unary in -> out with BN when the widths differ), then ReLU. The strided
bottleneck runs its SALA from the level-(l+1) points onto the level-l points (``batch.pools[l]``) and max-pools
the shortcut over the same neighbourhood. A "unary" layer is the 1x1 convolution of the paper: a dense layer
applied to every point.

Where the details come from: the SALA paper fixes the five stages, residual and strided residual blocks,
gamma = 2, grid and radius doubling, nearest upsampling + skip concatenation + 1x1 convolutions and C; the
widths of the stem (C/2), of the decoder layers and the head, the max-pooled shortcut of strided blocks, 1x1
convolutions without bias followed by batch norm, ReLU in the encoder / LeakyReLU in the decoder, two blocks per
stage and the S3DIS settings (dl0 = 4 cm, radius 0.1 m at level 0, neighbour limits 26/31/38/41/39) are those of the
public code of Liu et al. 2020 (zeliu98/CloserLook3D: pytorch/models/backbones/resnet.py,
heads/segmentation_head.py, cfgs/s3dis/*.yaml). The strided block's neighbourhood uses the radius of the finer
level, as in that code (PyramidSpec's default pool radius).
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.batch import PyramidSpec, StackedBatch
from ..errors import BadInputError, UsageError
from ..nn.dense import linear_norm, linear_norm_decode
from ..nn.gather import neighbor_max_pool
from ..nn.sala import ASSIGNMENTS, REDUCTIONS, SALA
from .registry import register

NUM_LEVELS = 5
BOTTLENECK_RATIO = 2  # gamma in supplementary Fig. 6
S3DIS_NEIGHBOR_LIMITS = (26, 31, 38, 41, 39)


class Unary(nn.Sequential):
    """1x1 convolution on stacked points: dense layer without bias, batch norm, optional activation. In eval
    mode the batch norm is folded into the dense layer (:func:`pcseg.nn.dense.linear_norm`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._act(linear_norm(self[0], self[1], x))

    def decode(self, coarse: torch.Tensor, index: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """This layer on concat(coarse[index], skip) (:func:`pcseg.nn.dense.linear_norm_decode`)."""
        return self._act(linear_norm_decode(self[0], self[1], coarse, index, skip))

    def _act(self, y: torch.Tensor) -> torch.Tensor:
        return self[2](y) if len(self) > 2 else y


def unary(cin: int, cout: int, act: nn.Module | None) -> Unary:
    """1x1 convolution on stacked points: dense layer without bias, batch norm, optional activation."""
    layers: list[nn.Module] = [nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout)]
    if act is not None:
        layers.append(act)
    return Unary(*layers)


class SALABlock(nn.Module):
    """SALA followed by batch norm and ReLU; coordinates are scaled by the neighbourhood radius first."""

    def __init__(self, cin: int, cout: int, radius: float, **sala_options):
        super().__init__()
        self.radius = float(radius)
        self.sala = SALA(cin, cout, **sala_options)
        self.norm = nn.BatchNorm1d(cout)
        self.act = nn.ReLU()

    def forward(self, query_points, support_points, neighbors, features):
        out = self.sala(query_points / self.radius, support_points / self.radius, neighbors, features)
        return self.act(self.norm(out))


class Bottleneck(nn.Module):
    """Residual bottleneck block (supplementary Fig. 6); ``strided`` pools level l onto level l+1."""

    def __init__(self, cin: int, cout: int, radius: float, strided: bool, **sala_options):
        super().__init__()
        mid = cout // BOTTLENECK_RATIO
        self.strided = strided
        self.reduce = unary(cin, mid, nn.ReLU())
        self.aggregate = SALABlock(mid, mid, radius, **sala_options)
        self.expand = unary(mid, cout, None)
        self.shortcut = unary(cin, cout, None) if cin != cout else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, query_points, support_points, neighbors, features):
        out = self.expand(self.aggregate(query_points, support_points, neighbors, self.reduce(features)))
        identity = neighbor_max_pool(features, neighbors) if self.strided else features
        return self.act(out + self.shortcut(identity))


RADIUS_PER_CELL = 2.5
"""Level-0 ball radius in units of dl0 when ``radius`` is not given."""


class SALANet(nn.Module):
    """Semantic segmentation network of the SALA paper (§3.4): per-point logits for layer-0 points."""

    def __init__(self, num_classes: int, in_features: int = 5, width: int = 36, groups: int = 2,
                 reduction: str = "max", assignment: str = "soft", pos_encoding: bool = True,
                 dl0: float = 0.04, radius: float | None = None,
                 neighbor_limits: tuple[int, ...] | list[int] = S3DIS_NEIGHBOR_LIMITS):
        super().__init__()
        # The level-0 ball radius follows the grid: 2.5 * dl0 (CloserLook3D's S3DIS setting: 0.1 m at 4 cm), so
        # a network built for another cell size (e.g. airborne lidar at 0.5 m) keeps the same neighbourhoods.
        if radius is None and isinstance(dl0, (int, float)) and not isinstance(dl0, bool):
            radius = RADIUS_PER_CELL * float(dl0)
        _check_options(num_classes, in_features, width, groups, reduction, assignment, pos_encoding, dl0, radius,
                       neighbor_limits)
        self._config = dict(num_classes=int(num_classes), in_features=int(in_features), width=int(width),
                            groups=int(groups), reduction=reduction, assignment=assignment,
                            pos_encoding=bool(pos_encoding), dl0=float(dl0), radius=float(radius),
                            neighbor_limits=[int(v) for v in neighbor_limits])
        self.in_features = int(in_features)
        radii = [float(radius) * 2**level for level in range(NUM_LEVELS)]
        self.pyramid_spec = PyramidSpec(dl0=float(dl0), radii=radii,
                                        neighbor_limits=[int(v) for v in neighbor_limits])
        sala = dict(groups=int(groups), reduction=reduction, assignment=assignment, pos_encoding=bool(pos_encoding))
        c = int(width)

        # Encoder stage 1 (level 0).
        self.stem = unary(in_features, c // 2, nn.ReLU())
        self.stem_aggregate = SALABlock(c // 2, c // 2, radii[0], **sala)
        self.stem_block = Bottleneck(c // 2, c, radii[0], strided=False, **sala)
        # Encoder stages 2-5: strided bottleneck from level l-1 (radius of l-1), then a bottleneck at level l.
        self.down = nn.ModuleList()
        self.blocks = nn.ModuleList()
        widths = [c * 2**level for level in range(NUM_LEVELS)]  # encoder outputs C, 2C, 4C, 8C, 16C
        for level in range(1, NUM_LEVELS):
            self.down.append(Bottleneck(widths[level - 1], widths[level], radii[level - 1], strided=True, **sala))
            self.blocks.append(Bottleneck(widths[level], widths[level], radii[level], strided=False, **sala))
        # Decoder: up[l] produces level-l features of width widths[l] / 2 (up[3]: 16C + 8C -> 4C, ...).
        self.up = nn.ModuleList()
        dec = widths[-1]
        for level in range(NUM_LEVELS - 2, -1, -1):
            self.up.append(unary(dec + widths[level], widths[level] // 2, nn.LeakyReLU()))
            dec = widths[level] // 2
        self.head = nn.Sequential(unary(dec, dec, nn.LeakyReLU()), nn.Linear(dec, num_classes))

    def config(self) -> dict:
        """Builder options that rebuild this network: ``build("salanet", **model.config())``."""
        return dict(self._config, neighbor_limits=list(self._config["neighbor_limits"]))

    def forward(self, batch: StackedBatch) -> torch.Tensor:
        return self.head(self.features(batch))

    def features(self, batch: StackedBatch) -> torch.Tensor:
        """(N_0, C/2) decoder output for the layer-0 points: the feature map the segmentation head reads."""
        if len(batch.points) < NUM_LEVELS:
            raise BadInputError(f"SALANet needs a {NUM_LEVELS}-level pyramid, the batch has {len(batch.points)}")
        if batch.features.shape[1] != self.in_features:
            raise BadInputError(f"SALANet was built for {self.in_features} input features, "
                                f"the batch has {batch.features.shape[1]}")
        pts, nbs = batch.points, batch.neighbors
        x = self.stem(batch.features)
        x = self.stem_aggregate(pts[0], pts[0], nbs[0], x)
        x = self.stem_block(pts[0], pts[0], nbs[0], x)
        skips = [x]
        for level in range(1, NUM_LEVELS):
            x = self.down[level - 1](pts[level], pts[level - 1], batch.pools[level - 1], x)
            x = self.blocks[level - 1](pts[level], pts[level], nbs[level], x)
            skips.append(x)
        for i, level in enumerate(range(NUM_LEVELS - 2, -1, -1)):
            # unary(concat(upsampled x, skip)), its dense layer taken on the coarse rows before upsampling
            x = self.up[i].decode(x, batch.upsamples[level], skips[level])
        return x


def _check_options(num_classes, in_features, width, groups, reduction, assignment, pos_encoding, dl0, radius,
                   neighbor_limits) -> None:
    def positive_int(name, value, minimum=1):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise UsageError(f"salanet: {name} must be an integer >= {minimum}, not {value!r}")

    positive_int("num_classes", num_classes)
    positive_int("in_features", in_features)
    positive_int("width", width, 2)
    if width % BOTTLENECK_RATIO:
        raise UsageError(f"salanet: width must be even, not {width}")
    positive_int("groups", groups)
    if reduction not in REDUCTIONS:
        raise UsageError(f"salanet: reduction must be one of {', '.join(REDUCTIONS)}, not {reduction!r}")
    if assignment not in ASSIGNMENTS:
        raise UsageError(f"salanet: assignment must be one of {', '.join(ASSIGNMENTS)}, not {assignment!r}")
    if not isinstance(pos_encoding, bool):
        raise UsageError(f"salanet: pos_encoding must be true or false, not {pos_encoding!r}")
    for name, value in (("dl0", dl0), ("radius", radius)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise UsageError(f"salanet: {name} must be a positive number, not {value!r}")
    limits = list(neighbor_limits) if isinstance(neighbor_limits, (list, tuple)) else None
    if limits is None or len(limits) != NUM_LEVELS or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in limits):
        raise UsageError(f"salanet: neighbor_limits must be {NUM_LEVELS} positive integers, not {neighbor_limits!r}")


@register("salanet", task="segment")
def salanet(num_classes: int, in_features: int = 5, width: int = 36, groups: int = 2, reduction: str = "max",
            assignment: str = "soft", pos_encoding: bool = True, dl0: float = 0.04, radius: float | None = None,
            neighbor_limits: tuple[int, ...] = S3DIS_NEIGHBOR_LIMITS) -> SALANet:
    """SALANet (Itani et al. 2021): residual U-Net with Soft Assignment Local Aggregation; 1.6 M params at C=36."""
    return SALANet(num_classes, in_features, width, groups, reduction, assignment, pos_encoding, dl0, radius,
                   neighbor_limits)
