"""Shipped models: ``models/<name>.safetensors`` with its card ``models/<name>.json``.

The card repeats the checkpoint's own card and adds ``sha256`` (checked at every load), ``files`` and the
quality figures with the files they were measured on. ``--model`` takes a shipped name or a path.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import UsageError
from ..io.atomic import atomic_write
from .checkpoint import Checkpoint, load_checkpoint, read_card, sha256_file

MODELS_DIR = Path(os.environ.get("PCSEG_MODELS_DIR", Path(__file__).resolve().parents[2] / "models"))


def shipped() -> dict[str, dict]:
    """name -> card of every shipped model."""
    out = {}
    if MODELS_DIR.is_dir():
        for card_path in sorted(MODELS_DIR.glob("*.json")):
            card = json.loads(card_path.read_text())
            if "sha256" in card and (MODELS_DIR / card.get("file", card_path.stem + ".safetensors")).exists():
                out[card.get("name", card_path.stem)] = card
    return out


def resolve(model: str) -> tuple[Path, dict, str | None]:
    """(checkpoint path, card, expected sha256 or None) for a shipped name or a checkpoint path."""
    models = shipped()
    if model in models:
        card = models[model]
        return MODELS_DIR / card.get("file", f"{model}.safetensors"), card, card["sha256"]
    path = Path(model)
    if path.exists():
        return path, read_card(path), None
    known = ", ".join(models) or "none shipped"
    raise UsageError(f"no model {model!r}: not a shipped model ({known}) and no such file")


def load(model: str, device: str | torch.device = "cpu") -> Checkpoint:
    if str(model).endswith(".pt2") and Path(model).is_file():  # a network written by `pcseg export`
        from .export import load_exported

        return load_exported(model, device)
    path, card, sha = resolve(model)
    ck = load_checkpoint(path, device=device, expect_sha256=sha)
    if sha is not None:  # shipped: the zoo card (with quality figures) is the richer one
        ck.card = {**ck.card, **card}
    return ck


def write_card(name: str, checkpoint: Path, extra: dict) -> Path:
    """Write ``models/<name>.json`` from a checkpoint's own card plus ``extra`` (measured quality...)."""
    card = read_card(checkpoint)
    card.update(extra)
    card["name"] = name
    card["file"] = checkpoint.name
    card["sha256"] = sha256_file(checkpoint)
    card["size_bytes"] = checkpoint.stat().st_size
    out = MODELS_DIR / f"{name}.json"
    atomic_write(out, lambda f: f.write((json.dumps(card, indent=1) + "\n").encode()))
    return out
