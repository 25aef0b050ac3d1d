"""KP-FCNN (segmentation) and KP-CNN (classification), KPConv §3.3-3.4 and supplementary A (Fig. 8-9, Table 3).

Encoder (shared): 5 layers of 2 blocks, the first block of layers 2-5 strided. Layer j works on the grid
subsampling at dl_j = dl0 * 2**j with sigma_j = Sigma * dl_j; rigid convolutions use radius 2.5 sigma_j, deformable
ones rho * dl_j (§3.3). With ``deformable=True`` the last 5 blocks are deformable (supp. A: 2nd block of layer 3,
both blocks of layers 4 and 5).

Choices where the paper is not explicit, all of which reproduce Table 3 (rigid 14.1 M KP-FCNN on ScanNet,
14.9 M deformable, 14.3 M KP-CNN on ModelNet40):
- Widths: D_j = width * 2**j with width = 64; a bottleneck block of width D maps D_in -> D/2 (unary) -> D/2
  (KPConv) -> 2D (unary), so layer j outputs 2 D_j features. The strided block opening layer j keeps the width
  D_{j-1} of the layer it reads from (its KPConv works at scale j-1: sigma_{j-1} and the pooling radius of layer
  j-1), so it outputs 2 D_{j-1} = D_j features and needs no 1x1 shortcut; the second block widens to 2 D_j.
  (Doubling the width inside the strided block instead gives 20 M parameters; the public PyTorch code's
  schedule gives 24.4 M.)
- The first block of layer 1 is a plain KPConv block (KPConv in -> D_0, batch norm, leaky ReLU), as in the
  public code: the input has only a few features (e.g. 1 + RGB), nothing to squeeze through a bottleneck.
- Decoder: nearest upsampling to layer j, concatenation with the skip features of layer j (2 D_j), one unary
  convolution to D_j; then a unary D_0 -> D_0 and a linear classifier (with bias).
- KP-CNN head: global average per cloud, FC 2 D_4 -> 1024 (with bias, leaky ReLU), dropout 0.5, FC -> classes.
  No batch norm in the head, so a batch of one cloud trains too.
- Leaky ReLU slope 0.1 (the issue's choice and the public PyTorch code's; the TF code uses 0.2); batch norm after
  every convolution except the classifier.
- Strided blocks shortcut by max pooling over the strided KPConv's neighbourhood (shadow neighbours ignored).
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.batch import PyramidSpec, StackedBatch
from ..errors import BadInputError, UsageError
from ..nn.dense import linear_norm, linear_norm_decode
from ..nn.gather import neighbor_max_pool
from ..nn.kpconv import KPConv
from .registry import register

NUM_LAYERS = 5
LEAKY_SLOPE = 0.1
# Supp. A: the deformable regularisation is added to the output loss with a factor 0.1; the shift branch learns
# at 0.1x the network's learning rate (§3.2).
REGULARIZATION_WEIGHT = 0.1
OFFSET_LR_FACTOR = 0.1
CLASSIFIER_HIDDEN = 1024
CLASSIFIER_DROPOUT = 0.5


class UnaryBlock(nn.Module):
    """1x1 convolution (shared linear map, no bias) + batch norm [+ leaky ReLU]."""

    def __init__(self, in_channels: int, out_channels: int, activation: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels, bias=False)
        self.norm = nn.BatchNorm1d(out_channels)
        self.activation = nn.LeakyReLU(LEAKY_SLOPE) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(linear_norm(self.linear, self.norm, x))  # eval: one product with a bias

    def decode(self, coarse: torch.Tensor, index: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """This block on concat(coarse[index], skip) (:func:`pcseg.nn.dense.linear_norm_decode`)."""
        return self.activation(linear_norm_decode(self.linear, self.norm, coarse, index, skip))


def _conv_inputs(batch: StackedBatch, layer: int, strided: bool):
    """(queries, supports, neighbours) of a convolution reading layer ``layer`` (strided: writing layer+1)."""
    if strided:
        return batch.points[layer + 1], batch.points[layer], batch.pools[layer]
    return batch.points[layer], batch.points[layer], batch.neighbors[layer]


class SimpleBlock(nn.Module):
    """KPConv + batch norm + leaky ReLU (first block of layer 1)."""

    def __init__(self, in_channels: int, out_channels: int, layer: int, kernel_size: int, radius: float,
                 sigma: float):
        super().__init__()
        self.layer = layer
        self.conv = KPConv(in_channels, out_channels, kernel_size, radius=radius, sigma=sigma)
        self.norm = nn.BatchNorm1d(out_channels)
        self.activation = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, batch: StackedBatch, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(*_conv_inputs(batch, self.layer, False), x)))


class BottleneckBlock(nn.Module):
    """Bottleneck ResNet block with a KPConv (Fig. 8): unary D_in -> D/2, KPConv D/2 -> D/2, unary D/2 -> 2D,
    plus a shortcut (max pooling over the KPConv neighbourhood when strided; 1x1 convolution when D_in != 2D),
    then leaky ReLU of the sum."""

    def __init__(self, in_channels: int, width: int, layer: int, kernel_size: int, radius: float, sigma: float,
                 strided: bool = False, deformable: bool = False):
        super().__init__()
        self.layer = layer
        self.strided = strided
        mid, out = width // 2, 2 * width
        self.unary1 = UnaryBlock(in_channels, mid)
        self.conv = KPConv(mid, mid, kernel_size, radius=radius, sigma=sigma, deformable=deformable)
        self.norm = nn.BatchNorm1d(mid)
        self.activation = nn.LeakyReLU(LEAKY_SLOPE)
        self.unary2 = UnaryBlock(mid, out, activation=False)
        self.shortcut = UnaryBlock(in_channels, out, activation=False) if in_channels != out else nn.Identity()

    def forward(self, batch: StackedBatch, x: torch.Tensor) -> torch.Tensor:
        queries, supports, neighbors = _conv_inputs(batch, self.layer, self.strided)
        y = self.unary1(x)
        y = self.activation(self.norm(self.conv(queries, supports, neighbors, y)))
        y = self.unary2(y)
        skip = neighbor_max_pool(x, neighbors) if self.strided else x
        return self.activation(y + self.shortcut(skip))


def _check_options(num_classes, in_features, width, dl0, kernel_size, sigma, rho) -> None:
    if num_classes < 1:
        raise UsageError(f"--classes must be at least 1, got {num_classes}")
    if in_features < 1:
        raise UsageError(f"--in-features must be at least 1, got {in_features}")
    if width < 2 or width % 2:
        raise UsageError(f"width must be an even number >= 2, got {width}")
    if dl0 <= 0 or sigma <= 0 or rho <= 0:
        raise UsageError(f"dl0, sigma and rho must be positive, got dl0={dl0}, sigma={sigma}, rho={rho}")
    if kernel_size < 2:
        raise UsageError(f"kernel_size must be at least 2, got {kernel_size}")


class KPEncoder(nn.Module):
    """The 5-layer, 10-block encoder shared by KP-CNN and KP-FCNN (§3.4)."""

    def __init__(self, in_features: int, width: int, dl0: float, kernel_size: int, sigma: float, rho: float,
                 deformable: bool):
        super().__init__()
        dl = [dl0 * 2**j for j in range(NUM_LAYERS)]
        # Layers whose neighbourhoods feed a deformable KPConv (layer 3 on, 1-based) get the radius rho * dl_j;
        # the others 2.5 sigma_j (§3.3; the public TF code uses rho * dl_j everywhere, which only adds neighbours
        # with h = 0 to rigid convolutions). The strided block into layer j+1 reads layer j's pooling
        # neighbourhood, at the same radius (PyramidSpec's default pool radii).
        deformable_layer = [deformable and j >= 2 for j in range(NUM_LAYERS)]
        radii = [rho * dl[j] if deformable_layer[j] else 2.5 * sigma * dl[j] for j in range(NUM_LAYERS)]
        self.pyramid_spec = PyramidSpec(dl0=dl0, radii=radii)
        widths = [width * 2**j for j in range(NUM_LAYERS)]

        def conv_args(j):
            return dict(layer=j, kernel_size=kernel_size, radius=radii[j], sigma=sigma * dl[j])

        blocks = [SimpleBlock(in_features, widths[0], **conv_args(0)),
                  BottleneckBlock(widths[0], widths[0], **conv_args(0))]
        channels = 2 * widths[0]
        self.skip_after = []  # block indices whose output is the skip feature of a layer
        for j in range(1, NUM_LAYERS):
            self.skip_after.append(len(blocks) - 1)
            blocks.append(BottleneckBlock(channels, widths[j - 1], strided=True, deformable=deformable_layer[j - 1],
                                          **conv_args(j - 1)))
            channels = 2 * widths[j - 1]
            blocks.append(BottleneckBlock(channels, widths[j], deformable=deformable_layer[j], **conv_args(j)))
            channels = 2 * widths[j]
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = channels
        self.skip_channels = [2 * w for w in widths[:-1]]

    def forward(self, batch: StackedBatch, features: torch.Tensor):
        """Features of the last layer (N_4, 2 D_4) and the skip features of layers 1-4."""
        skips = []
        x = features
        for i, block in enumerate(self.blocks):
            x = block(batch, x)
            if i in self.skip_after:
                skips.append(x)
        return x, skips


class _KPNetwork(nn.Module):
    """What KP-FCNN and KP-CNN share: options, batch checks, deformable regularisation, parameter groups."""

    def __init__(self, options: dict):
        super().__init__()
        _check_options(options["num_classes"], options["in_features"], options["width"], options["dl0"],
                       options["kernel_size"], options["sigma"], options["rho"])
        self._options = dict(options)
        self.encoder = KPEncoder(options["in_features"], options["width"], options["dl0"], options["kernel_size"],
                                 options["sigma"], options["rho"], options["deformable"])
        self.pyramid_spec = self.encoder.pyramid_spec

    def config(self) -> dict:
        """Builder options that rebuild this network: ``build(name, **model.config())``."""
        return dict(self._options)

    def _prepare(self, batch: StackedBatch) -> StackedBatch:
        if len(batch.points) < NUM_LAYERS:
            raise BadInputError(f"the batch has {len(batch.points)} layers; this network needs {NUM_LAYERS} "
                                "(build it with the network's pyramid_spec)")
        device = self.encoder.blocks[0].conv.kernel_points.device
        if not isinstance(batch.features, torch.Tensor) or batch.features.device != device:
            batch = batch.to(device)
        if self.training:
            for j, points in enumerate(batch.points[:NUM_LAYERS]):
                if len(points) < 2:
                    raise BadInputError(
                        f"only {len(points)} point(s) at layer {j + 1} (cell {self.pyramid_spec.dl0 * 2**j:g} m): "
                        "batch norm cannot train on that; use larger clouds or a smaller dl0")
        features = batch.features
        if features.dim() != 2 or features.shape[1] != self._options["in_features"]:
            raise BadInputError(f"the network takes {self._options['in_features']} input features per point, "
                                f"the batch has {tuple(features.shape)[1:]}")
        return batch

    def _deformable_convs(self):
        return [m for m in self.modules() if isinstance(m, KPConv) and m.deformable]

    def regularization_loss(self) -> torch.Tensor:
        """0.1 * L_reg (Eq. 6-8, supp. A) of the last forward pass, summed over deformable KPConvs; 0 if rigid."""
        terms = [m.last_regularization for m in self._deformable_convs() if m.last_regularization is not None]
        if not terms:
            return self.encoder.blocks[0].conv.weights.new_zeros(())
        return REGULARIZATION_WEIGHT * torch.stack(terms).sum()

    def parameter_groups(self, base_lr: float) -> list[dict]:
        """Optimizer groups: the kernel-shift branches at 0.1x ``base_lr`` (§3.2), everything else at ``base_lr``."""
        offset_ids = {id(p) for m in self._deformable_convs() for p in m.offset_parameters()}
        main = [p for p in self.parameters() if id(p) not in offset_ids]
        offsets = [p for p in self.parameters() if id(p) in offset_ids]
        groups = [{"params": main, "lr": base_lr}]
        if offsets:
            groups.append({"params": offsets, "lr": base_lr * OFFSET_LR_FACTOR})
        return groups


class KPFCNN(_KPNetwork):
    """KP-FCNN: KPConv encoder, decoder of nearest upsampling + skip links + unary convolutions (§3.4, Fig. 9).

    forward(batch) -> (N_0, num_classes) logits for the layer-0 points of a :class:`StackedBatch`.
    """

    def __init__(self, **options):
        super().__init__(options)
        width, num_classes = options["width"], options["num_classes"]
        channels = self.encoder.out_channels
        decoder = []
        for j in reversed(range(NUM_LAYERS - 1)):
            decoder.append(UnaryBlock(channels + self.encoder.skip_channels[j], width * 2**j))
            channels = width * 2**j
        self.decoder = nn.ModuleList(decoder)
        self.head = nn.Sequential(UnaryBlock(channels, width), nn.Linear(width, num_classes))

    def features(self, batch: StackedBatch) -> torch.Tensor:
        """(N_0, width) dense feature map of the layer-0 points: what the segmentation head reads (distillation
        aligns teacher and student on it)."""
        batch = self._prepare(batch)
        x, skips = self.encoder(batch, batch.features)
        for unary, j in zip(self.decoder, reversed(range(NUM_LAYERS - 1))):
            # Nearest upsampling from layer j+1 to layer j, then the skip link of layer j, into the unary block
            # (its dense layer taken on the coarse rows before upsampling: upsampled_skip_product).
            x = unary.decode(x, batch.upsamples[j], skips[j])
        return x

    def forward(self, batch: StackedBatch) -> torch.Tensor:
        return self.head(self.features(batch))


class KPCNN(_KPNetwork):
    """KP-CNN: KPConv encoder, global average pooling per cloud, fully connected layers (§3.4, Fig. 9).

    forward(batch) -> (B, num_classes) logits, one row per cloud of the :class:`StackedBatch`.
    """

    def __init__(self, **options):
        super().__init__(options)
        self.head = nn.Sequential(
            nn.Linear(self.encoder.out_channels, CLASSIFIER_HIDDEN),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Dropout(CLASSIFIER_DROPOUT),
            nn.Linear(CLASSIFIER_HIDDEN, options["num_classes"]),
        )

    def forward(self, batch: StackedBatch) -> torch.Tensor:
        batch = self._prepare(batch)
        x, _ = self.encoder(batch, batch.features)
        lengths = batch.lengths[-1]
        if bool((lengths == 0).any()):
            raise BadInputError("a cloud of the batch has no point at the last layer")
        cloud = torch.repeat_interleave(torch.arange(len(lengths), device=x.device), lengths)
        pooled = x.new_zeros(len(lengths), x.shape[1]).index_add_(0, cloud, x)
        pooled = pooled / lengths.to(x.dtype).unsqueeze(1)
        return self.head(pooled)


@register("kpfcnn", task="segment")
def kpfcnn(num_classes: int, in_features: int, deformable: bool = False, dl0: float = 0.04, kernel_size: int = 15,
           width: int = 64, sigma: float = 1.0, rho: float = 5.0) -> KPFCNN:
    """KP-FCNN segmentation network (KPConv, Thomas et al. 2019).

    dl0: first grid cell size in metres (paper: 0.04 indoor, 0.06 outdoor); dl_j = dl0 * 2**j.
    width: D of layer 1 (doubled per layer); kernel_size: K kernel points.
    sigma: Sigma, kernel influence sigma_j = Sigma * dl_j; rho: deformable radius rho * dl_j (§3.3).
    deformable: deformable KPConv in the last 5 blocks.
    """
    return KPFCNN(num_classes=num_classes, in_features=in_features, deformable=deformable, dl0=dl0,
                  kernel_size=kernel_size, width=width, sigma=sigma, rho=rho)


@register("kpcnn", task="classify")
def kpcnn(num_classes: int, in_features: int, deformable: bool = False, dl0: float = 0.02, kernel_size: int = 15,
          width: int = 64, sigma: float = 1.0, rho: float = 5.0) -> KPCNN:
    """KP-CNN classification network (KPConv, Thomas et al. 2019).

    dl0: first grid cell size (paper: 0.02 on ModelNet40 shapes scaled to the unit sphere); other options as
    for kpfcnn.
    """
    return KPCNN(num_classes=num_classes, in_features=in_features, deformable=deformable, dl0=dl0,
                 kernel_size=kernel_size, width=width, sigma=sigma, rho=rho)
