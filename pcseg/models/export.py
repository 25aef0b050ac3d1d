"""Deployable networks: a segmentation network as a ``torch.export`` program (``.pt2``) or an ONNX graph.

The file holds the network only; pcseg's pre- and post-processing (grid subsampling, the pyramid, covering
regions, voting, fields written back) run around it, as for a checkpoint. What a deployer feeds it, for a
pyramid of ``L`` layers and ``B`` regions stacked (KPConv's batch convention, :class:`StackedBatch`):

    features          (N_0, F) float32     input channels of every layer-0 point (the card's ``features``)
    lengths_l         (B,) int64           points of each region at layer l                     l = 0..L-1
    points_l          (N_l, 3) float32     coordinates, each region centred on its own centre    l = 0..L-1
    neighbors_l       (N_l, H_l) int64     indices into points_l of each point's neighbours within
                                            radius_l, nearest first; rows padded with N_l (the "shadow"
                                            index: one past the last point)                      l = 0..L-1
    pools_l           (N_{l+1}, H_l) int64 indices into points_l of the layer-(l+1) points' neighbours
                                            within the pooling radius, padded with N_l           l = 0..L-2
    upsamples_l       (N_l,) int64         nearest layer-(l+1) point of every layer-l point     l = 0..L-2

and it returns the logits (N_0, K) of the card's classes. The card (in the file) gives ``dl0`` (layer l's
cell is ``dl0 * 2**l``), the radii, the neighbour caps ``H_l`` and the class names. Every N and H is dynamic.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from ..data.batch import PyramidSpec, StackedBatch
from ..errors import BadInputError, UsageError
from ..io.atomic import atomic_write
from .checkpoint import Checkpoint

CARD_FILE = "pcseg_card.json"


class FlatNetwork(nn.Module):
    """A segmentation network with plain tensor inputs (the order of the module docstring)."""

    def __init__(self, net: nn.Module, layers: int):
        super().__init__()
        self.net, self.layers = net, layers

    def forward(self, features, *tensors):
        L = self.layers
        lengths, points, neighbors = tensors[:L], tensors[L:2 * L], tensors[2 * L:3 * L]
        pools, upsamples = tensors[3 * L:4 * L - 1], tensors[4 * L - 1:]
        return self.net(StackedBatch(points=list(points), lengths=list(lengths), neighbors=list(neighbors),
                                     pools=list(pools), upsamples=list(upsamples), features=features))


def flat_inputs(batch: StackedBatch) -> tuple:
    return (batch.features, *batch.lengths, *batch.points, *batch.neighbors, *batch.pools, *batch.upsamples)


def input_names(layers: int) -> list[str]:
    L = layers
    return (["features"] + [f"lengths_{i}" for i in range(L)] + [f"points_{i}" for i in range(L)]
            + [f"neighbors_{i}" for i in range(L)] + [f"pools_{i}" for i in range(L - 1)]
            + [f"upsamples_{i}" for i in range(L - 1)])


def _dynamic_shapes(layers: int) -> tuple:
    Dim = torch.export.Dim
    n = [Dim(f"n{i}", min=2, max=1 << 28) for i in range(layers)]
    h = [Dim(f"h{i}", min=1, max=4096) for i in range(layers)]
    p = [Dim(f"p{i}", min=1, max=4096) for i in range(layers - 1)]
    b = Dim("b", min=1, max=1 << 20)  # regions stacked in one batch
    return ({0: n[0]}, *({0: b} for _ in range(layers)), *({0: n[i]} for i in range(layers)),
            *({0: n[i], 1: h[i]} for i in range(layers)), *({0: n[i + 1], 1: p[i]} for i in range(layers - 1)),
            *({0: n[i]} for i in range(layers - 1)))


def export_card(ck: Checkpoint, spec: PyramidSpec, fmt: str) -> dict:
    card = {k: v for k, v in ck.card.items() if k not in ("file", "sha256", "size_bytes")}
    card["exported"] = {"format": fmt, "inputs": input_names(spec.num_layers), "outputs": ["logits"],
                        "torch": torch.__version__.split("+")[0]}
    card["pyramid_spec"] = dataclasses.asdict(spec)
    return card


def trace(ck: Checkpoint, spec: PyramidSpec, example: StackedBatch):
    """The network as a ``torch.export`` program, traced on ``example`` with every point, region and neighbour
    count dynamic."""
    layers = spec.num_layers
    flat = FlatNetwork(ck.model.eval(), layers).eval()
    shapes = _dynamic_shapes(layers)
    with torch.no_grad():
        return torch.export.export(flat, flat_inputs(example), dynamic_shapes=(shapes[0], shapes[1:]), strict=False)


def export_program(ck: Checkpoint, spec: PyramidSpec, example: StackedBatch, path: str | Path) -> dict:
    """Write ``path`` (.pt2): the traced network (:func:`trace`) with the card inside. Returns the card."""
    program = trace(ck, spec, example)
    card = export_card(ck, spec, "torch.export")

    def save(f):
        torch.export.save(program, f, extra_files={CARD_FILE: json.dumps(card)})

    atomic_write(Path(path), save)
    return card


def export_onnx(ck: Checkpoint, spec: PyramidSpec, example: StackedBatch, path: str | Path) -> dict:
    """Write ``path`` (.onnx) with the dynamo exporter (needs the ``onnx`` and ``onnxscript`` packages); the card
    goes into the graph's metadata (``pcseg_card``)."""
    try:
        import onnx
    except ImportError:
        raise UsageError("ONNX export needs onnx and onnxscript: pip install 'pcseg[onnx]'") from None
    import warnings

    program = trace(ck, spec, example)
    import logging

    log = logging.getLogger("torch.onnx")  # it logs every torchvision op it skips registering
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.onnx's deprecation notices are not the user's business
            onnx_program = torch.onnx.export(program, flat_inputs(example), dynamo=True, verbose=False,
                                             input_names=input_names(spec.num_layers), output_names=["logits"])
    finally:
        log.setLevel(level)
    model = onnx_program.model_proto
    card = export_card(ck, spec, "onnx")
    entry = model.metadata_props.add()
    entry.key, entry.value = "pcseg_card", json.dumps(card)
    atomic_write(Path(path), lambda f: f.write(model.SerializeToString()))
    onnx.checker.check_model(str(path))
    return card


class ExportedNetwork(nn.Module):
    """An exported program behind the networks' interface (``forward(batch) -> logits``, ``pyramid_spec``), so
    that `pcseg segment` runs it through the same pipeline as a checkpoint."""

    def __init__(self, program, spec: PyramidSpec):
        super().__init__()
        self.program = program
        self.pyramid_spec = spec

    def forward(self, batch: StackedBatch) -> torch.Tensor:
        return self.program(*flat_inputs(batch))

    def train(self, mode: bool = True):  # an exported program has no training mode to switch
        self.training = mode
        return self


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """A ``.pt2`` written by :func:`export_program` as a :class:`Checkpoint` (network + card)."""
    import zipfile

    extra = {CARD_FILE: ""}
    if not zipfile.is_zipfile(path):  # checked first: torch logs a traceback before it raises on such files
        raise BadInputError("not a pcseg export (.pt2 from `pcseg export`): not a .pt2 archive", str(path))
    import logging

    quiet = logging.getLogger("torch.export")  # it logs a traceback for a file it cannot read, then raises
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        program = torch.export.load(str(path), extra_files=extra)
        card = json.loads(extra[CARD_FILE])
    except Exception as e:  # any failure to unpack the archive is the file's fault, said in one line
        raise BadInputError(f"not a pcseg export (.pt2 from `pcseg export`): {type(e).__name__}", str(path)) from None
    finally:
        quiet.setLevel(level)
    if not card:
        raise BadInputError("this .pt2 holds no pcseg card; export it with `pcseg export`", str(path))
    spec = PyramidSpec(**card["pyramid_spec"])
    module = program.module()
    if torch.device(device).type != "cpu":
        module = module.to(device)
    return Checkpoint(model=ExportedNetwork(module, spec), card=card)
