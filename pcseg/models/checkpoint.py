"""Self-contained checkpoints: weights in safetensors, everything else as JSON in the same file.

A checkpoint holds all that `pcseg segment` (or `detect`) needs: the network name and its builder options,
class map (names, colours, raw/ASPRS codes), input feature channels, first cell size ``dl0``, sphere radius,
kernel points (they are buffers of the network, so they travel with the weights), what it was trained on and
its validation metrics. Nothing is ever unpickled: a file that is not safetensors is refused with an
explanation. Files are written atomically.

Training state for ``--resume`` (optimiser, scheduler, step, RNG) is saved the same way in a sibling file.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import BadInputError, UsageError
from ..io.atomic import atomic_write
from .registry import build

FORMAT = "pcseg-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the network (eval mode) and its card."""

    model: nn.Module
    card: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.card.get("name") or self.card["model"]


def _atomic_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data), make_dirs=True)


def _serialise(tensors: dict[str, torch.Tensor], metadata: dict) -> bytes:
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return save(tensors, metadata={"pcseg": json.dumps(metadata)})


def save_checkpoint(path: str | Path, model: nn.Module, card: dict) -> None:
    """Write ``model`` (built from the registry) and its card. ``card`` must name ``model`` (registry name);
    ``config`` defaults to ``model.config()``."""
    meta = {"format": FORMAT, "version": VERSION, **card}
    meta.setdefault("config", model.config())
    meta.setdefault("params", sum(p.numel() for p in model.parameters()))
    if "model" not in meta:
        raise ValueError("a checkpoint card must name the registered model")
    _atomic_bytes(path, _serialise(dict(model.state_dict()), meta))


def _read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    path = str(path)
    if not os.path.isfile(path):
        raise BadInputError("no such checkpoint file", path)
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors: 8-byte little-endian header length, then the JSON header. Test that first: the length's low
    # byte may be anything, including a pickle's 0x80 or a zip's "PK".
    if len(head) < 9 or head[8:9] != b"{":
        if head[:2] == b"PK" or head[:1] == b"\x80":
            raise BadInputError("this is a pickled PyTorch checkpoint; pcseg refuses to load pickles because "
                                "loading them can run arbitrary code (convert it to safetensors first)", path)
        raise BadInputError("not a pcseg checkpoint (expected a safetensors file)", path)
    n = struct.unpack("<Q", head[:8])[0]
    with open(path, "rb") as f:
        f.seek(8)
        header = json.loads(f.read(n))
    meta = header.get("__metadata__", {})
    if "pcseg" not in meta:
        raise BadInputError("safetensors file without a pcseg card (not written by pcseg)", path)
    card = json.loads(meta["pcseg"])
    from safetensors.torch import load_file

    return load_file(path), card


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", expect_sha256: str | None = None) -> Checkpoint:
    """Build the network named in the card, load its weights strictly, return it in eval mode on ``device``."""
    if expect_sha256 is not None:
        digest = sha256_file(path)
        if digest != expect_sha256:
            raise BadInputError(f"checksum mismatch (sha256 {digest[:12]}..., card says {expect_sha256[:12]}...): "
                                "the file is corrupt or was changed", str(path))
    tensors, card = _read_safetensors(path)
    if card.get("format") != FORMAT:
        raise BadInputError("not a pcseg checkpoint card", str(path))
    if card.get("version", 0) > VERSION:
        raise BadInputError(f"checkpoint format version {card['version']} is newer than this pcseg reads ({VERSION}); "
                            "upgrade pcseg", str(path))
    model = build(card["model"], **card["config"])
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise BadInputError(f"weights do not match network {card['model']!r} (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})", str(path))
    model.to(device).eval()
    return Checkpoint(model, card)


def average_checkpoints(paths: list[str | Path]) -> Checkpoint:
    """The uniform average of the weights of ``paths`` (a "model soup", Wortsman et al., ICML 2022): checkpoints of
    one network (same card ``model``, ``config`` and classes), typically fine-tuned from the same weights with
    different seeds. Floating-point tensors are averaged in float64; integer buffers (batch norm's step count)
    are taken from the first. The card is the first one's, with ``soup_of`` listing every input's training
    command (or its file name when it has none)."""
    if len(paths) < 2:
        raise UsageError("averaging needs two checkpoints or more")
    cks = [load_checkpoint(p) for p in paths]
    first = cks[0].card
    for p, ck in zip(paths[1:], cks[1:]):
        same = all(ck.card.get(k) == first.get(k) for k in ("model", "config")) and \
            ck.card.get("classes", {}).get("names") == first.get("classes", {}).get("names")
        if not same:
            raise UsageError(f"{Path(p).name} is not the same network, options and classes as {Path(paths[0]).name}; "
                             "only checkpoints of one network can be averaged")
    states = [ck.model.state_dict() for ck in cks]
    averaged = {k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
                for k, v in states[0].items()}
    model = cks[0].model
    model.load_state_dict(averaged)
    card = dict(first)
    card["soup_of"] = [ck.card.get("training", {}).get("command") or Path(p).name for p, ck in zip(paths, cks)]
    return Checkpoint(model, card)


def read_card(path: str | Path) -> dict:
    """The JSON card of a checkpoint without building the network (reads only the header)."""
    path = str(path)
    if not os.path.isfile(path):
        raise BadInputError("no such checkpoint file", path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BadInputError("not a pcseg checkpoint (too short)", path)
        n = struct.unpack("<Q", head)[0]
        if n > 100_000_000:
            raise BadInputError("not a pcseg checkpoint (expected a safetensors file)", path)
        raw = f.read(n)
    try:
        meta = json.loads(raw).get("__metadata__", {})
        return json.loads(meta["pcseg"])
    except (ValueError, KeyError, AttributeError):
        raise BadInputError("not a pcseg checkpoint (expected a safetensors file with a pcseg card)", path) from None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- training state (for --resume) ---------------------------------------------------------------------------

def _flatten(obj, prefix: str, tensors: dict) -> object:
    """Replace tensors inside nested dicts/lists by references, collecting them in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, prefix, tensors), _flatten(v, prefix, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, prefix, tensors) for v in obj], "tuple": isinstance(obj, tuple)}
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a training state")


def _unflatten(obj, tensors: dict):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_unflatten(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
    return obj


def save_state(path: str | Path, state: dict) -> None:
    """Save nested training state (dicts, lists, numbers, strings, tensors) without pickle, atomically."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, "", tensors)
    _atomic_bytes(path, _serialise(tensors, {"format": "pcseg-state", "tree": tree}))


def load_state(path: str | Path) -> dict:
    from safetensors.torch import load_file

    path = str(path)
    if not os.path.isfile(path):
        raise BadInputError("no training state to resume from", path)
    card = read_card(path)
    if card.get("format") != "pcseg-state":
        raise BadInputError("not a pcseg training state", path)
    return _unflatten(card["tree"], load_file(path))
