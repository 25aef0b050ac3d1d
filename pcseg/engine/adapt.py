"""Adapting a trained segmentation model to one's own survey: a short fine-tuning on a few labelled files.

:func:`adapt` runs the training engine (:class:`pcseg.engine.train.Trainer`) from the model's weights with the
recipe its card records (network, input channels, ``dl0``, sphere radius, class map, augmentation, spheres per
batch, the neighbour caps the model runs with) and sets only what fine-tuning changes:

* :data:`DEFAULT_STEPS` steps at a tenth of the learning rate the recipe starts from (:data:`LR_FACTOR`),
  divided by 10 over the run;
* every weight trains, but the batch-norm statistics stay the model's (the layers normalise with them in
  training too). Letting them follow the new data is what broke adapting on a small patch: on half of a 50 m
  IGN tile (8k labelled cells, ~3 passes over them per step), building IoU on the other half fell from 73 to 0
  after 40 steps with the statistics updated, and rose to 85 after 200 steps with them kept
  (``benchmarks/bench_als_adapt.py``; ``benchmarks/README.md``). Training only the decoder (encoder frozen)
  gained less everywhere it was tried, so it is not offered;
* a wall-clock budget (``minutes``) that stops before a step that would not leave time to validate and write
  the model;
* a check that adapting helps (:data:`HOLDOUT_SHARE`): a share of the labelled area, in blocks of half the
  sphere radius drawn at random, is held out of training (or the ``val`` files are used instead); the model is
  scored on it before adapting and :data:`CHECKS` times during the run, and the output is the checkpoint that
  scored best, or the model's own weights when no checkpoint beat them by :data:`CHECK_MARGIN` points. A short
  fine-tuning on a small patch can forget a class the patch holds little of: on the west half of a 50 m IGN tile
  (``benchmarks/bench_als_adapt.py``), 200 steps took ``sala-als-terrain``'s building IoU on the east half
  from 71.4 to 7.1;
* the airborne building test (card ``building_test``: a point called building that stands less than 2 m above
  the label-free ground estimates takes its second class) is measured with the model on the labelled files and
  turned off when that raises their mean IoU by :data:`TEST_MARGIN` points or more: it removes whole roofs
  where a building covers the ground estimates' windows (e.g. a tile that is mostly one roof).

Labels are read with the model's own class map (``MAP:file`` for files coded otherwise, e.g.
``als-ahn3:tile.laz``); unlabelled points (ASPRS 0 and 1 for the airborne models) are ignored, so labelling a
patch of a tile is enough. The adapted checkpoint keeps the model's inference settings (classes, channels,
neighbour caps, per-point tests) and none of its measured figures; its card's ``adaptation`` says what it was
adapted from, on which files (base names only) and with which settings.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import BadInputError, UsageError
from .train import Trainer, TrainConfig, portable_card

DEFAULT_STEPS = 200
"""Optimiser steps: 0.4-1.7 s each for ``sala-als`` on one thread of this project's 2-core CPU with a training
beside it (a sparse 1 km^2 to a dense 50 m IGN half tile)."""
DEFAULT_MINUTES = 5.0
"""Wall-clock budget of the whole adaptation (reading and preparing the data included)."""
LR_FACTOR = 0.1
"""The learning rate is this share of the one the model's recipe starts from (``sala-als``: 0.01 -> 0.001)."""
DECAY_EPOCHS = 10
"""The run is cut into this many epochs; the learning rate is divided by 10 over them (KPConv supp. A's decay)."""
SAVE_RESERVE_S = 3.0
"""Seconds kept back from the budget for writing the model (and the process's own start)."""
TEST_MARGIN = 2.0
"""Points of mean IoU on the labelled files by which turning the building test off must win to be chosen."""
HOLDOUT_SHARE = 0.2
"""Share of the labelled blocks (squares of :data:`HOLDOUT_BLOCK` times the sphere radius over x, y) held out of
training to check that adapting helps, when no ``val`` files are given."""
HOLDOUT_BLOCK = 0.5
"""Side of the held-out blocks, in sphere radii (12.5 m for the airborne models' 25 m spheres): wide enough that a
block's points are not all next to trained ones, small enough that a patch holds several."""
CHECKS = 5
"""Checkpoints scored on the held-out labels during the run (every :data:`DECAY_EPOCHS` / CHECKS epochs)."""
CHECK_MARGIN = 1.0
"""Points of mean IoU on the held-out labels by which a checkpoint must beat the model to replace its weights
(set before any measurement, not tuned: a held-out fifth of a patch is small, and a tie keeps the model)."""

# Card keys that describe how the network reads and post-processes a cloud: the adapted card keeps them. Every
# other key (quality figures, speed, notes, the shipped file's checksum) describes the original weights only.
INFERENCE_KEYS = ("model", "task", "classes", "features", "dl0", "sphere_radius", "neighbor_limits",
                  "vegetation_split", "building_test", "height_tests", "color_drop")


@dataclass
class AdaptSettings:
    """What the user chooses (``pcseg adapt`` options); ``lr`` None: a tenth of the recipe's."""

    steps: int = DEFAULT_STEPS
    lr: float | None = None
    minutes: float | None = DEFAULT_MINUTES
    seed: int = 0
    device: str = "auto"
    holdout: float = HOLDOUT_SHARE


@dataclass
class AdaptResult:
    output: Path
    steps: int
    planned_steps: int
    seconds: float
    stopped_by: str  # "steps" or "time budget"
    validation: dict
    card: dict


def base_name(spec: str) -> str:
    """A ``--data`` string as a card may show it: the file's base name, with its ``MAP:`` prefix."""
    from ..data.datasets import split_class_map

    name, path = split_class_map(str(spec))
    base = os.path.basename(path.rstrip(os.sep))
    return f"{name}:{base}" if name else base


def model_label(model: str) -> str:
    """A shipped model's name, or a checkpoint's base name (never a folder of this machine)."""
    from ..models import zoo

    return model if model in zoo.shipped() else os.path.basename(str(model))


def base_recipe(card: dict, label: str) -> dict:
    """The TrainConfig fields of the recipe that trained the model, from its card."""
    if card.get("task", "segment") != "segment":
        raise UsageError(f"{label} is not a segmentation model (its task is {card.get('task')!r}); "
                         "pcseg adapt fine-tunes segmentation models")
    config = (card.get("training") or {}).get("config")
    if not isinstance(config, dict) or "features" not in card or "classes" not in card:
        raise UsageError(f"{label}: its card records no training recipe (training.config); adapt a checkpoint "
                         "written by pcseg train, pcseg distill or pcseg adapt")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in config.items() if k in known}


def default_lr(card: dict) -> float:
    """:data:`LR_FACTOR` times the learning rate the model's recipe starts from: its preset's (a fine-tuned
    model's card records its own, lower, rate), else the card's."""
    from .presets import PRESETS

    training = card.get("training") or {}
    preset = PRESETS.get(training.get("preset") or "", {})
    lr = preset.get("lr", (training.get("config") or {}).get("lr", 1e-2))
    return LR_FACTOR * float(lr)


def holdout_blocks(points: np.ndarray, labelled: np.ndarray, block: float, share: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Points of the held-out blocks: the squares of side ``block`` over x, y that hold ``labelled`` points,
    ``share`` of them (rounded, at least one, never all; none when fewer than two) drawn with ``rng``."""
    cells = np.floor((points[:, :2] - points[:, :2].min(axis=0)) / block).astype(np.int64)
    key = cells[:, 0] * (int(cells[:, 1].max()) + 1) + cells[:, 1]
    blocks = np.unique(key[labelled])
    if len(blocks) < 2:
        return np.zeros(len(points), bool)
    k = min(max(1, round(share * len(blocks))), len(blocks) - 1)
    return np.isin(key, rng.choice(blocks, k, replace=False))


class AdaptTrainer(Trainer):
    """The training engine with what adapting needs: every training file must hold labels, batch norms keep
    the model's statistics, nothing is written to the run folder (:func:`adapt` writes the one output), a
    wall-clock deadline is kept by stopping before a step that would overrun it, and the best of the model and
    its checkpoints on held-out labels is kept (``holdout``: the share of labelled blocks held out when no
    ``val`` files are given, which then decide instead; 0: no check, the ``val`` files are only reported on)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, deadline: float | None = None,
                 reserve: float = SAVE_RESERVE_S, echo=None, holdout: float = HOLDOUT_SHARE):
        self.deadline, self.reserve, self.holdout = deadline, reserve, holdout
        self.stopped_by, self.last_metrics = "steps", {}
        self.check: dict | None = None  # what the check saw (None: no held-out labels)
        self.best_state: dict | None = None
        self._validated_at = -1
        self._times: list[float] = []
        self._last = None
        super().__init__(cfg, run_dir, echo=echo)

    def _prepare_data(self) -> None:
        super()._prepare_data()
        names = self.class_map.names
        for src, cloud in zip(self.train_sources, self.train_clouds):
            if not (np.any(cloud.labels >= 0) or np.any(cloud.labels <= -2)):
                raise BadInputError(f"no point is labelled with one of the model's classes ({', '.join(names)}); "
                                    f"label a patch of it first (its {src.label_field!r} codes are all ignored "
                                    f"or unknown to the class map {src.class_map.name!r})", base_name(src.path))
        if self.holdout <= 0:
            return  # no check: the val files (if any) are only reported on
        if self.val_clouds:
            self.check = {"on": "validation files", "files": [base_name(s.path) for s in self.val_sources]}
        else:
            self._hold_out()

    def _hold_out(self) -> None:
        """Move the labels of :func:`holdout_blocks` of every training cloud to a validation copy of it (the
        network still sees those points as context while training)."""
        from ..data.classmaps import IGNORE

        rng = np.random.default_rng(self.cfg.seed)
        block = HOLDOUT_BLOCK * self.cfg.sphere_radius
        train, val, held = [], [], 0
        for cloud in self.train_clouds:
            hold = holdout_blocks(cloud.points, cloud.labels >= 0, block, self.holdout, rng)
            train.append(dataclasses.replace(cloud, labels=np.where(hold, IGNORE, cloud.labels)))
            if (hold & (cloud.labels >= 0)).any():
                val.append(dataclasses.replace(cloud, labels=np.where(hold, cloud.labels, IGNORE)))
                held += int((hold & (cloud.labels >= 0)).sum())
        if not val:
            self.echo("no check that adapting helps: the labels cover too small an area to hold a block out "
                      f"({block:g} m squares); pass --val FILES to check on other labelled files")
            return
        self.train_clouds, self.val_clouds = train, val
        self.check = {"on": "held-out blocks", "share": self.holdout, "block": block, "labelled_cells": held}

    def _keep_statistics(self) -> None:
        """Batch norms in eval mode: they normalise with the model's statistics and never update them."""
        for module in self.model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()

    def _loop(self, batches, total, progress):
        self._keep_statistics()
        if self.check is not None:
            before = self.validate()
            self.check.update(before=before.get("miou"), scores={"0": before.get("miou")})
            # a checkpoint replaces the model's weights only when it beats them by CHECK_MARGIN
            self.best_miou = -1.0 if before.get("miou") is None else before["miou"] + CHECK_MARGIN / 100
            self.best_state, self.best_step, self.best_metrics = None, 0, before
        self._last = time.perf_counter()
        return super()._loop(batches, total, progress)

    def validate(self) -> dict:
        out = super().validate()  # runs the network in eval mode, then puts the whole model back in train mode
        self._keep_statistics()
        self._validated_at = self.step
        return out

    def save(self, metrics: dict | None = None, best: bool = False) -> None:
        self.last_metrics = metrics or {}
        if self.check is not None and self._validated_at == self.step:  # (called after every epoch, validated or not)
            self.check["scores"][str(self.step)] = metrics.get("miou")
            if best:
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.best_step, self.best_metrics = self.step, metrics

    def on_step(self) -> None:
        """After each step: stop now (``time_limit`` 0: the loop validates and ends) when one more step, the
        validation and the writing would pass the deadline."""
        now = time.perf_counter()
        self._times.append(now - self._last)
        self._last = now
        if self.deadline is None or self.step >= self.total_steps():
            return
        step = statistics.median(self._times[-9:])
        validation = step * sum(len(c) for c in self.val_clouds) / max(self.sampler.point_budget, 1)
        if now + 1.5 * step + validation + self.reserve > self.deadline:
            self.cfg.time_limit = 0.0
            self.stopped_by = "time budget"


def adapt(model: str, data: list[str], output: str | Path, settings: AdaptSettings | None = None,
          val: list[str] | None = None, echo=None, progress=None, started: float | None = None) -> AdaptResult:
    """Fine-tune ``model`` (a shipped name or a checkpoint) on the labelled files ``data`` and write the adapted
    checkpoint to ``output`` (atomically). ``started``: the ``time.perf_counter()`` the budget counts from
    (default: now). ``progress(step, total, loss, acc, lr)`` is called after every step."""
    from ..models import zoo
    from ..models.checkpoint import save_checkpoint

    started = time.perf_counter() if started is None else started
    s = settings or AdaptSettings()
    echo = echo or (lambda msg: None)
    label = model_label(model)
    if str(model).endswith(".pt2"):
        raise UsageError(f"{label} is an exported network (pcseg export); adapt the checkpoint it was exported from")
    if not data:
        raise UsageError("no training data: give the labelled files of your survey after the model")
    if isinstance(s.steps, bool) or not isinstance(s.steps, int) or s.steps < 1:
        raise UsageError(f"--steps is at least 1, not {s.steps}")
    if s.lr is not None and not (math.isfinite(s.lr) and s.lr > 0):
        raise UsageError(f"--lr is a positive number, not {s.lr}")
    if s.minutes is not None and not (math.isfinite(s.minutes) and s.minutes > 0):
        raise UsageError(f"--minutes is a positive number, not {s.minutes}")
    path, card, sha = zoo.resolve(model)
    recipe = base_recipe(card, label)
    lr = float(s.lr) if s.lr is not None else default_lr(card)
    per_epoch = max(1, math.ceil(s.steps / DECAY_EPOCHS))
    run_dir = Path(tempfile.mkdtemp(prefix="pcseg-adapt-"))
    try:
        cfg = TrainConfig(**{
            **recipe, "data": list(data), "val": list(val or []), "init": str(path),
            "class_map": _class_map_setting(card, run_dir), "lr": lr, "max_steps": s.steps,
            "steps_per_epoch": per_epoch, "epochs": math.ceil(s.steps / per_epoch), "lr_decay_epochs": DECAY_EPOCHS,
            "val_every": max(1, DECAY_EPOCHS // CHECKS),  # the checks (a run cut short validates when it stops)
            "checkpoint_every": 0, "neighbor_limits": list(card.get("neighbor_limits") or []) or None,
            "point_budget": None, "seed": s.seed, "device": s.device, "time_limit": None, "cache_dir": None,
            "workers": None})
        deadline = started + 60.0 * s.minutes if s.minutes is not None else None
        if not (isinstance(s.holdout, (int, float)) and 0 <= s.holdout < 1):
            raise UsageError(f"--holdout is a share in [0, 1), not {s.holdout}")
        trainer = AdaptTrainer(cfg, run_dir, deadline=deadline, holdout=float(s.holdout),
                               echo=lambda m: None if m.startswith(("time limit", "step ")) else echo(m))
        echo(f"adapting {label} on {sum(len(c) for c in trainer.train_clouds):,} points at dl0 {cfg.dl0} of "
             f"{len(trainer.train_clouds)} file(s): {s.steps} steps at lr {lr:g}, batches of "
             f"~{trainer.sampler.point_budget:,} points" + (f", at most {s.minutes:g} min" if s.minutes else ""))
        tests = choose_building_test(zoo.load(model), trainer.train_sources, echo)

        def step_done(step, total, loss, acc, lr_now):
            trainer.on_step()
            if progress is not None:
                progress(step, total, loss, acc, lr_now)

        if deadline is not None and time.perf_counter() + trainer.reserve > deadline:
            trainer.cfg.max_steps = 1  # preparing the data used the budget: one step, so the model still moves
            trainer.stopped_by = "time budget"
        result = trainer.train(step_done)
        if trainer.check is not None and "before" in trainer.check:
            chosen = trainer.best_step
            if trainer.best_state is None:   # no checkpoint beat the model: its own weights
                trainer.model.load_state_dict(zoo.load(model).model.state_dict())
            else:
                trainer.model.load_state_dict(trainer.best_state)
            trainer.last_metrics = trainer.best_metrics
            trainer.check.update(chosen_step=chosen, margin=CHECK_MARGIN)
            where = "the held-out blocks" if trainer.check["on"] == "held-out blocks" else "the --val files"
            best = max((v for k, v in trainer.check["scores"].items() if k != "0" and v is not None), default=None)
            echo(f"mean IoU on {where}: {_pct(trainer.check['before'])} before adapting, best {_pct(best)} after; "
                 + (f"kept step {chosen}" if chosen else
                    f"no step beat the model by {CHECK_MARGIN:g} points: the output keeps its weights"))
        trainer.model.eval()
        new_card = adapted_card(card, label, sha, list(data), list(val or []), s, lr, trainer, result, tests)
        out = Path(output)
        save_checkpoint(out, trainer.model, new_card)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return AdaptResult(out, trainer.step, s.steps, time.perf_counter() - started, trainer.stopped_by,
                       trainer.last_metrics, new_card)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def choose_building_test(ck, sources, echo=None) -> dict | None:
    """Mean IoU (over the classes the labels hold) of the model on the labelled ``sources`` with its building
    test and without it, and which one the adapted model keeps: the card's unless turning the test off wins by
    :data:`TEST_MARGIN` points or more. None for a model without the test."""
    from ..io import read
    from .infer import segment_points
    from .metrics import confusion_matrix, scores
    from .segment import airborne_rules, class_map_of, refine_and_split

    rules = airborne_rules(ck)
    if rules is None or rules["building_min_height"] is None:
        return None
    off = airborne_rules(ck, building_min_height=math.inf)
    names = class_map_of(ck).names
    cms = {"on": 0, "off": 0}
    for src in sources:
        if src.kind == "synthetic":
            continue
        cloud = read(src.path)
        truth = src.class_map.encode(cloud.fields[src.label_field])
        seg = segment_points(ck, cloud, votes=1)
        for key, r in (("on", rules), ("off", off)):
            labels, _ = refine_and_split(ck, r, cloud.xyz, seg.labels, seg.runner_up, seg.hag)
            cms[key] = cms[key] + confusion_matrix(labels, truth, len(names))
    miou = {k: scores(cm, names)["miou_present"] for k, cm in cms.items() if not isinstance(cm, int)}
    if not miou or miou["on"] is None or miou["off"] is None:
        return None
    keep = 100 * (miou["off"] - miou["on"]) < TEST_MARGIN
    chosen = {"building_test": "kept" if keep else "off", "min_height": rules["building_min_height"] if keep else None,
              "miou_labelled_files": {"with_test": miou["on"], "without_test": miou["off"]},
              "rule": f"off when that raises the model's mean IoU on the labelled files by {TEST_MARGIN:g} points or "
                      f"more (before adapting)"}
    if echo is not None:
        echo(f"building test ({rules['building_min_height']:g} m): mean IoU on the labelled files "
             f"{100 * miou['on']:.1f} with it, {100 * miou['off']:.1f} without: {chosen['building_test']}")
    return chosen


def _class_map_setting(card: dict, run_dir: Path) -> str:
    """The class map the data is read with: the model's own (a built-in name when it is one, else the card's
    map written as JSON in the run folder)."""
    import json

    from ..data.classmaps import BUILTIN_CLASS_MAPS, builtin_class_map

    classes = card["classes"]
    name = classes.get("name")
    if name in BUILTIN_CLASS_MAPS and builtin_class_map(name).to_dict() == classes:
        return name
    path = run_dir / "class_map.json"
    path.write_text(json.dumps(classes))
    return str(path)


def adapted_card(base: dict, label: str, sha: str | None, data: list[str], val: list[str], s: AdaptSettings,
                 lr: float, trainer: AdaptTrainer, result: dict, tests: dict | None = None) -> dict:
    """The base card's inference settings and recipe, with what the adaptation did (base names only)."""
    card = {k: base[k] for k in INFERENCE_KEYS if k in base}
    if tests is not None and tests["building_test"] == "off":
        card["building_test"] = {**card.get("building_test", {}), "building_class": "building", "min_height": None,
                                 "note": "turned off by pcseg adapt (adaptation.per_point_tests)"}
    files = [base_name(d) for d in data]
    card["trained_on"] = [*base.get("trained_on", []), *files]
    card["validated_on"] = [base_name(v) for v in val]
    command = ["pcseg", "adapt", label, *files, "-o", "OUT.safetensors", "--steps", str(s.steps), "--lr", f"{lr:g}"]
    command += (["--minutes", f"{s.minutes:g}"] if s.minutes is not None else [])
    command += [a for v in val for a in ("--val", base_name(v))] + (["--seed", str(s.seed)] if s.seed else [])
    command += ["--holdout", f"{s.holdout:g}"] if s.holdout != HOLDOUT_SHARE else []
    card["adaptation"] = {
        "from": label, **({"from_sha256": sha} if sha else {}),
        "files": files, "validation_files": card["validated_on"],
        "points": int(sum(len(c) for c in trainer.train_clouds)),
        "labelled_points": int(sum(int(np.sum((c.labels >= 0) | (c.labels <= -2))) for c in trainer.train_clouds)),
        "settings": {"steps": s.steps, "lr": lr, "lr_schedule": f"divided by 10 over {DECAY_EPOCHS} epochs of "
                     f"{trainer.cfg.steps_per_epoch} steps", "minutes": s.minutes,
                     "layers": "all; batch-norm statistics kept",
                     "spheres_per_batch": trainer.cfg.spheres_per_batch, "point_budget": trainer.sampler.point_budget,
                     "optimizer": trainer.cfg.optimizer, "momentum": trainer.cfg.momentum,
                     "augmentation": trainer.cfg.augmentation, "seed": s.seed},
        "steps": trainer.step, "stopped_by": trainer.stopped_by, "seconds": round(result["seconds"], 1),
        **({"check": trainer.check} if trainer.check is not None else {}),
        "device": trainer.device.type, "command": " ".join(command),
        **({"per_point_tests": tests} if tests is not None else {}),
    }
    if base.get("training"):
        card["training"] = base["training"]
    card["metrics"] = trainer.last_metrics or {}
    return portable_card(card, base_name)  # a card never names a folder of this machine

