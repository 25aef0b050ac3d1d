"""Networks built by name with options.

A builder is registered with :func:`register` and called with keyword options. Segmentation networks take a
:class:`pcseg.data.StackedBatch` and return per-point logits for layer-0 points; they expose
``pyramid_spec`` (a :class:`pcseg.data.PyramidSpec`) so that data can be prepared for them, and may define
``regularization_loss()`` (e.g. deformable KPConv, Eq. 6-8) for the trainer to add.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import UsageError


@dataclass
class ModelEntry:
    name: str
    task: str
    builder: Callable[..., nn.Module]
    summary: str

    def options(self) -> dict[str, object]:
        """Option name -> default (``inspect.Parameter.empty`` when required)."""
        return {p.name: p.default for p in inspect.signature(self.builder).parameters.values()}


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, task: str = "segment") -> Callable:
    """Decorator: register ``builder(**options) -> nn.Module`` under ``name``."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(name, task, builder, doc[0] if doc else "")
        return builder

    return deco


def _load_builtin() -> None:
    # Importing the network modules registers them.
    from . import networks  # noqa: F401


def entries() -> dict[str, ModelEntry]:
    _load_builtin()
    return dict(_REGISTRY)


def get(name: str) -> ModelEntry:
    reg = entries()
    if name not in reg:
        raise UsageError(f"unknown model {name!r}; known: {', '.join(sorted(reg))}")
    return reg[name]


def build(name: str, **options) -> nn.Module:
    """Build the network ``name``; unknown options are a usage error naming the accepted ones."""
    entry = get(name)
    accepted = entry.options()
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UsageError(f"model {name!r} has no option {', '.join(unknown)}; options: {', '.join(accepted)}")
    missing = [k for k, v in accepted.items() if v is inspect.Parameter.empty and k not in options]
    if missing:
        raise UsageError(f"model {name!r} needs {', '.join('--' + m.replace('_', '-') for m in missing)}")
    return entry.builder(**options)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, *inputs) -> int:
    """Multiply-accumulates of one forward pass, from torch's FLOP counter (matmul/conv FLOPs / 2). Counted on
    one thread: the neighbour reductions then take the slot-by-slot way (:class:`pcseg.nn.gather.SlotPlan`),
    which computes real pairs only, so the count does not depend on the machine's thread count. KPConv's sum
    over neighbours (Eq. 1) counts as the dense (M, K, H) x (M, H, C) product the counter sees: a CPU run skips
    the 95% of it whose influence is zero (:func:`pcseg.nn.kpconv.kernel_correlation`)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training, threads = model.training, torch.get_num_threads()
    model.eval()
    torch.set_num_threads(1)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*inputs)
    finally:
        model.train(was_training)
        torch.set_num_threads(threads)
    return int(counter.get_total_flops() // 2)
