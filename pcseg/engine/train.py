"""Segmentation training: sphere batches, cross-entropy (+ deformable regularisation), SGD/AdamW, validation,
self-contained checkpoints, exact resume, DistributedDataParallel.

Run directory: ``metrics.jsonl`` (one JSON object per logged step: ``step``, ``epoch``, ``loss``, ``lr``,
``acc``...; per validation: ``miou``, ``oa``, ``macc``, ``iou``), ``last.safetensors`` / ``best.safetensors``
(self-contained checkpoints) and ``last.state.safetensors`` (optimiser, scheduler, step, RNG: what ``--resume``
needs). Batches are drawn from ``np.random.default_rng((seed, rank, step))``, so a resumed run sees exactly the
batches the uninterrupted run would have seen.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.augment import Augmentation
from ..data.cache import DiskCache, default_cache_root
from ..data.classmaps import BUILTIN_CLASS_MAPS, IGNORE, load_class_map
from ..data.datasets import check_disjoint, resolve_data
from ..data.spheres import SphereSampler, calibrated_spec, prepare_clouds, suggest_point_budget
from ..errors import UsageError
from ..models import build, count_params
from ..models.checkpoint import load_checkpoint, load_state, save_checkpoint, save_state
from ..nn.losses import partial_cross_entropy
from .infer import vote_logits
from .metrics import confusion_matrix, scores
from .presets import PRESETS
from .runtime import resolve_device
from .vegetation import default_building_test, default_split

AUGMENTATIONS = {
    "sala-s3dis": Augmentation.sala_s3dis,
    "sala-scannet": Augmentation.sala_scannet,
    # KPConv-PyTorch's scene setting (the paper lists scaling, flipping and jitter without values).
    "kpconv": lambda: Augmentation(scale_min=0.8, scale_max=1.2),
    "none": Augmentation.none,
}


@dataclass
class TrainConfig:
    """Everything a run needs; presets (:mod:`pcseg.engine.presets`) fill it, ``key=value`` overrides it."""

    data: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    model: str = "salanet"
    model_options: dict = field(default_factory=dict)
    features: list[str] = field(default_factory=lambda: ["one", "rgb", "z"])
    dl0: float = 0.04
    sphere_radius: float = 2.0
    class_map: str | None = None
    label_field: str | None = None
    augmentation: str = "sala-s3dis"
    color_drop: float | None = None  # share of spheres whose colour is set to zero (None: the augmentation's)
    echo_drop: float | None = None  # share of spheres whose echo columns are set to zero (None: the augmentation's)
    thin_density: list[float] | None = None  # [lowest, highest] points/m^2 a thinned sphere is drawn between
    thin_share: float = 0.5  # share of spheres thinned when thin_density is set (see SphereSampler)
    density_cap: float | None = None  # points/m^2: spheres and, at inference, clouds thinned to at most this
    balance_classes: bool = False
    partial_share: float | None = 0.25  # share of sphere centres on partially labelled points (None: uniform)
    per_cloud: bool = False  # draw each sphere's cloud uniformly first (see SphereSampler)
    synthetic_share: float | None = None  # share of spheres in synthetic rooms, the rest in real clouds (None: alike)
    class_weights: str | None = None  # None | "inverse-sqrt" (weights from training label frequencies)
    init: str | None = None  # start from this model's weights (shipped name or checkpoint): fine-tuning
    optimizer: str = "sgd"
    lr: float = 1e-2
    momentum: float = 0.98
    weight_decay: float = 1e-3
    lr_decay_epochs: float = 100.0  # lr divided by 10 every this many epochs (exponential decay per epoch)
    grad_clip: float = 100.0
    reg_weight: float = 1.0  # multiplies model.regularization_loss() (KP-FCNN already applies supp. A's 0.1)
    epochs: int = 100
    steps_per_epoch: int = 500
    max_steps: int | None = None
    spheres_per_batch: float = 10.0
    point_budget: int | None = None
    neighbor_limits: list[int] | None = None  # fixed neighbour caps per layer instead of calibrated ones
    val_votes: int = 1
    val_every: int = 1
    log_every: int = 10
    checkpoint_every: int = 0  # steps between saves of last.* (0: every epoch only)
    seed: int = 0
    device: str = "auto"                # auto (CUDA when available), cpu, cuda, cuda:N
    amp: bool = True                    # bfloat16 autocast on CUDA devices
    bf16: bool = False                  # bfloat16 autocast on the CPU too (AMX / AVX-512 BF16): opt-in, see below
    workers: int | None = None          # processes that read the clouds and build batches (None: auto, see below)
    time_limit: float | None = None     # seconds for this invocation: then validate, save and stop (--resume goes on)
    cache_dir: str | None = None
    source: str = ""
    preset: str | None = None

    @classmethod
    def from_preset(cls, name: str | None, overrides: dict | None = None) -> "TrainConfig":
        values: dict = {}
        if name is not None:
            if name in PRESETS:
                values.update(PRESETS[name], preset=name)
            elif name.endswith(".toml") or os.path.exists(name):
                values.update(_load_toml(name))
            else:
                raise UsageError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)} (or a .toml file)")
        for key, value in (overrides or {}).items():
            # model_options.width=18 changes one option of the preset, not the whole dict
            values[key] = {**values[key], **value} if isinstance(value, dict) and isinstance(values.get(key), dict) else value
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown training setting {', '.join(unknown)}; settings: {', '.join(sorted(known))}")
        return cls(**values)


def _load_toml(path: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"no such config file {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: invalid TOML ({e})") from None
    base = values.pop("preset", None)
    if base is not None:
        if base not in PRESETS:
            raise UsageError(f"{path}: unknown preset {base!r}")
        values = {**PRESETS[base], "preset": base, **values}
    return values


def portable_path(path: str) -> str:
    """A data path as a card may show it: relative to the working directory (``../shared/data/...``), never
    an absolute path of the machine it was made on; a ``MAP:`` prefix is kept."""
    head, sep, rest = str(path).partition(":")
    if sep and not os.path.isabs(path) and os.path.isabs(rest):
        return f"{head}:{portable_path(rest)}"
    return os.path.relpath(path) if os.path.isabs(path) else str(path)


def portable_card(value, portable=None):
    """``value`` (a card or part of one) with every absolute path (also after a ``MAP:`` prefix) replaced by
    ``portable(path)`` (default :func:`portable_path`)."""
    portable = portable_path if portable is None else portable
    if isinstance(value, dict):
        return {k: portable_card(v, portable) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable_card(v, portable) for v in value]
    if isinstance(value, str) and (os.path.isabs(value) or os.path.isabs(value.partition(":")[2])):
        return portable(value)
    return value


_NOT_SETTINGS = {"data", "val", "source", "preset", "device", "cache_dir", "workers", "time_limit"}


def reproduce_command(cfg: TrainConfig) -> str:
    """The one command that reruns this configuration: ``pcseg train``, or ``pcseg distill`` for a distillation
    configuration (one with a ``teacher``); settings that differ from the preset and the defaults as key=value."""
    import shlex

    base = dict(PRESETS.get(cfg.preset, {})) if cfg.preset else {}
    defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                for f in dataclasses.fields(type(cfg))}
    teacher = getattr(cfg, "teacher", "")
    if teacher:
        parts = ["pcseg", "distill", "--teacher", portable_path(teacher)]
        parts += (["--student", cfg.preset] if cfg.preset else []) + ["-o", "student.safetensors"]
        parts += ["--teacher-cache"] if getattr(cfg, "teacher_cache", False) else []
        # the student reads the teacher's data settings: they are not the student's to set
        skip = _NOT_SETTINGS | {"teacher", "teacher_cache", "features", "dl0", "sphere_radius", "class_map"}
    else:
        parts = ["pcseg", "train"] + (["--config", cfg.preset] if cfg.preset else [])
        skip = _NOT_SETTINGS
    parts += [a for p in cfg.data for a in ("-d", portable_path(p))]
    parts += [a for p in cfg.val for a in ("--val", portable_path(p))]
    for key, value in dataclasses.asdict(cfg).items():
        if key in skip or value == base.get(key, defaults.get(key)):
            continue
        if key == "init":
            value = portable_path(value)
        parts.append(f"{key}={json.dumps(value) if isinstance(value, (list, dict)) else value}")
    return " ".join(shlex.quote(p) for p in parts)


# --- distributed ------------------------------------------------------------------------------------------

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK: gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


# --- the run ----------------------------------------------------------------------------------------------

class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False,
                 echo=None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.echo = echo or (lambda msg: None)
        device = resolve_device(cfg.device)  # auto: CUDA when available
        self.dist = init_distributed(device)
        if device.startswith("cuda") and self.dist.world > 1:
            device = f"cuda:{self.dist.local_rank}"
        self.device = torch.device(device)
        if not cfg.data:
            raise UsageError("no training data: pass --data (files, globs, folders or synthetic:rooms)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not resume and (self.run_dir / "last.state.safetensors").exists() and self.dist.main:
            raise UsageError(f"{self.run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")
        torch.manual_seed(cfg.seed)
        self._prepare_data()
        self._build_model()
        self.step, self.best_miou = 0, -1.0
        if resume:
            self._resume()

    def _load_init(self, model: torch.nn.Module, init: str) -> None:
        """Fine-tuning: the weights of ``init`` (a shipped model or a checkpoint of the same network, classes and
        input channels), checked shape by shape.

        A run whose input channels are the init's followed by new ones (``one, rgb, z`` then ``shape``) starts
        from the init too: the input layer's columns of the old channels are copied and those of the new
        channels start at zero, so the widened network computes exactly what the init computed, whatever the new
        channels hold, and training learns what to read from them."""
        from ..models import zoo

        ck = zoo.load(init, "cpu")
        names = ck.card.get("classes", {}).get("names")
        if names is not None and list(names) != list(self.class_map.names):
            raise UsageError(f"init={init}: its classes ({', '.join(names)}) are not those of the training data "
                             f"({', '.join(self.class_map.names)}); fine-tuning keeps the class set")
        theirs, ours = ck.model.state_dict(), model.state_dict()
        wrong = [k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape]
        old_feats = list(ck.card.get("features") or [])
        widened = (old_feats and list(self.cfg.features[:len(old_feats)]) == old_feats
                   and len(self.cfg.features) > len(old_feats) and len(wrong) == 1 and len(theirs) == len(ours)
                   and theirs[wrong[0]].ndim == 2 and ours[wrong[0]].shape[0] == theirs[wrong[0]].shape[0]
                   and ours[wrong[0]].shape[1] > theirs[wrong[0]].shape[1])
        if (wrong and not widened) or len(theirs) != len(ours):
            raise UsageError(f"init={init}: a {ck.card.get('model')} network that does not match this run's "
                             f"{self.cfg.model} ({len(wrong)} tensors differ, first {wrong[:1]}); use the preset "
                             f"and features it was trained with")
        if widened:
            key = wrong[0]
            grown = torch.zeros_like(ours[key])
            grown[:, :theirs[key].shape[1]] = theirs[key]
            theirs = {**theirs, key: grown}
            self.echo(f"init={init}: input layer widened from {', '.join(old_feats)} to "
                      f"{', '.join(self.cfg.features)}; the new channels' weights start at zero")
        model.load_state_dict(theirs)

    # data
    def _prepare_data(self) -> None:
        cfg = self.cfg
        self.workers = resolve_workers(cfg.workers, self.device)
        cache = DiskCache(Path(cfg.cache_dir) if cfg.cache_dir else default_cache_root())
        self.cache = cache
        train_src = resolve_data(cfg.data, cfg.features, role="train", class_map=cfg.class_map,
                                 label_field=cfg.label_field)
        val_src = resolve_data(cfg.val, cfg.features, role="val", class_map=cfg.class_map,
                               label_field=cfg.label_field) if cfg.val else []
        check_disjoint(train_src, val_src)
        # The checkpoint carries the map that reads the first training source: its raw codes are what
        # predictions decode to (e.g. ASPRS codes, S3DIS ids) and what `segment --eval` reads. Sources read
        # through different maps of the same classes (ScanNet through nyu40-to-s3dis beside S3DIS-id rooms)
        # give the target taxonomy's own map (s3dis), whatever the order of --data.
        self.class_map = train_src[0].class_map
        if len({src.class_map.name for src in train_src}) > 1 and "-to-" in self.class_map.name:
            target = self.class_map.name.rsplit("-to-", 1)[1]
            if target in BUILTIN_CLASS_MAPS and load_class_map(target).names == self.class_map.names:
                self.class_map = load_class_map(target)
        self.train_sources, self.val_sources = train_src, val_src
        self.train_clouds = prepare_clouds(train_src, cfg.dl0, cache, workers=self.workers)
        self.val_clouds = prepare_clouds(val_src, cfg.dl0, cache, workers=self.workers) if val_src else []

    def _build_model(self) -> None:
        cfg = self.cfg
        in_features = self.train_clouds[0].features.shape[1]
        model = build(cfg.model, num_classes=self.class_map.num_classes, in_features=in_features,
                      dl0=cfg.dl0, **cfg.model_options)
        if cfg.init:
            self._load_init(model, cfg.init)
        aug = AUGMENTATIONS.get(cfg.augmentation)
        if aug is None:
            raise UsageError(f"unknown augmentation {cfg.augmentation!r}; known: {', '.join(AUGMENTATIONS)}")
        self.augmentation = aug()
        if cfg.color_drop is not None:
            if not 0 <= cfg.color_drop <= 1:
                raise UsageError(f"color_drop must be in [0, 1], got {cfg.color_drop}")
            self.augmentation = dataclasses.replace(self.augmentation, color_drop=float(cfg.color_drop))
        if cfg.echo_drop is not None:
            if not 0 <= cfg.echo_drop <= 1:
                raise UsageError(f"echo_drop must be in [0, 1], got {cfg.echo_drop}")
            self.augmentation = dataclasses.replace(self.augmentation, echo_drop=float(cfg.echo_drop))
        thin = cfg.thin_density  # its values and thin_share are checked by the sampler
        if thin is not None and len(thin) != 2:
            raise UsageError(f"thin_density needs two densities [lowest, highest] in points/m^2, got {thin}")
        sampler = SphereSampler(self.train_clouds, model.pyramid_spec, point_budget=10**9, radius=cfg.sphere_radius,
                                balance_classes=cfg.balance_classes, augmentation=self.augmentation,
                                partial_share=cfg.partial_share, per_cloud=cfg.per_cloud,
                                synthetic_share=cfg.synthetic_share,
                                thin=None if thin is None else (float(thin[0]), float(thin[1])), thin_share=cfg.thin_share,
                                density_cap=cfg.density_cap)
        budget = cfg.point_budget or suggest_point_budget(sampler, cfg.spheres_per_batch, seed=cfg.seed)
        sampler.point_budget = int(budget)
        if cfg.neighbor_limits is not None:
            limits = cfg.neighbor_limits
            if (not isinstance(limits, list) or len(limits) != sampler.spec.num_layers
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in limits)):
                raise UsageError(f"neighbor_limits must be {sampler.spec.num_layers} positive integers, not {limits!r}")
            self.spec = dataclasses.replace(sampler.spec, neighbor_limits=list(limits))
        else:
            self.spec = calibrated_spec(sampler, self.cache, seed=cfg.seed)
        sampler.spec = self.spec
        self.sampler = sampler
        self.model = model.to(self.device)
        self.params = count_params(model)
        base = [{"params": [p for p in model.parameters()], "lr": cfg.lr}]
        if hasattr(model, "parameter_groups"):
            base = model.parameter_groups(cfg.lr)
        # Modules trained with the model but not part of it (distillation's projection heads): optimised,
        # kept in the resume state, never in the checkpoint.
        self.auxiliary = self._auxiliary_modules(model)
        if self.auxiliary is not None:
            self.auxiliary.to(self.device)
            base.append({"params": list(self.auxiliary.parameters()), "lr": cfg.lr})
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(base, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(base, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            raise UsageError(f"unknown optimizer {cfg.optimizer!r}; use sgd or adamw")
        # exponential decay per epoch: x0.1 every lr_decay_epochs epochs (KPConv supp. A)
        gamma = 0.1 ** (1.0 / cfg.lr_decay_epochs)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=gamma)
        self.class_weight = self._class_weights()
        self.ddp_model = self.model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model = DistributedDataParallel(self.model, device_ids=[self.device.index]
                                                     if self.device.type == "cuda" else None)

    def _auxiliary_modules(self, model: torch.nn.Module) -> torch.nn.Module | None:
        return None

    def _class_weights(self) -> torch.Tensor | None:
        if self.cfg.class_weights is None:
            return None
        if self.cfg.class_weights != "inverse-sqrt":
            raise UsageError("class_weights is None or 'inverse-sqrt'")
        labels = np.concatenate([c.labels for c in self.train_clouds])
        counts = np.bincount(labels[labels >= 0], minlength=self.class_map.num_classes).astype(np.float64)
        w = 1.0 / np.sqrt(np.maximum(counts, 1.0))
        w = w / w[counts > 0].mean()
        return torch.tensor(w, dtype=torch.float32, device=self.device)

    # checkpoints
    def card(self, metrics: dict | None = None) -> dict:
        cfg = self.cfg
        config = dataclasses.asdict(cfg)
        config["data"], config["val"] = [portable_path(p) for p in cfg.data], [portable_path(p) for p in cfg.val]
        if config.get("cache_dir"):
            config["cache_dir"] = None  # a folder of the machine it was trained on
        if config.get("init"):
            config["init"] = portable_path(config["init"])
        return {
            "model": cfg.model, "task": "segment", "classes": self.class_map.to_dict(), "features": list(cfg.features),
            "dl0": cfg.dl0, "sphere_radius": cfg.sphere_radius, "neighbor_limits": list(self.spec.neighbor_limits or []),
            "trained_on": [portable_path(s.path) for s in self.train_sources],
            "validated_on": [portable_path(s.path) for s in self.val_sources],
            "training": {"preset": cfg.preset, "source": cfg.source, "steps": self.step,
                         "command": reproduce_command(cfg), "config": config},
            "metrics": metrics or {},
            **({"vegetation_split": split} if (split := default_split(self.class_map.names, cfg.features)) else {}),
            **({"building_test": test} if (test := default_building_test(self.class_map.names)) else {}),
            # a model that saw colourless spheres reads clouds without colour (pcseg.data.features)
            **({"color_drop": self.augmentation.color_drop}
               if "rgb" in cfg.features and self.augmentation.color_drop > 0 else {}),
            # a model that saw spheres without return numbers reads files without them (zero echo columns)
            **({"echo_drop": self.augmentation.echo_drop}
               if "echo" in cfg.features and self.augmentation.echo_drop > 0 else {}),
            **({"thin_density": [float(v) for v in cfg.thin_density], "thin_share": cfg.thin_share}
               if cfg.thin_density is not None else {}),
            # inference thins clouds to the density the spheres were capped at (pcseg.engine.infer.vote_logits)
            **({"density_cap": float(cfg.density_cap)} if cfg.density_cap is not None else {}),
        }

    def save(self, metrics: dict | None = None, best: bool = False) -> None:
        if not self.dist.main:
            return
        card = portable_card(self.card(metrics))  # nothing a user sees names a folder of this machine
        save_checkpoint(self.run_dir / "last.safetensors", self.model, card)
        if best:
            save_checkpoint(self.run_dir / "best.safetensors", self.model, card)
        state = {"step": self.step, "best_miou": self.best_miou, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                 "config": json.dumps(dataclasses.asdict(self.cfg))}
        if self.auxiliary is not None:
            state["auxiliary"] = self.auxiliary.state_dict()
        save_state(self.run_dir / "last.state.safetensors", state)

    def _resume(self) -> None:
        ck = load_checkpoint(self.run_dir / "last.safetensors", device=self.device)
        self.model.load_state_dict(ck.model.state_dict())
        state = load_state(self.run_dir / "last.state.safetensors")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if self.auxiliary is not None:
            self.auxiliary.load_state_dict(state["auxiliary"])
        self.step, self.best_miou = int(state["step"]), float(state["best_miou"])
        self.echo(f"resumed from step {self.step}")

    def log(self, record: dict) -> None:
        if self.dist.main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    # validation
    def validate(self) -> dict:
        names = self.class_map.names
        cm = np.zeros((len(names), len(names)), dtype=np.int64)
        for cloud in self.val_clouds:
            logits = vote_logits(self.model, self.spec, cloud.points, cloud.features, self.cfg.sphere_radius,
                                    len(names), votes=self.cfg.val_votes, device=self.device,
                                    density_cap=self.cfg.density_cap)[0]
            cm += confusion_matrix(logits.argmax(axis=1), cloud.labels, len(names), IGNORE)
        return scores(cm, names)

    # the loop
    def total_steps(self) -> int:
        total = self.cfg.epochs * self.cfg.steps_per_epoch
        return min(total, self.cfg.max_steps) if self.cfg.max_steps is not None else total

    def compute_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(loss, logits, {term name: value}) of one batch: cross-entropy + the deformable regularisation."""
        # On this project's CPU (AMX), bf16 autocast made a KP-FCNN train step 2.2x faster (15k points, 0.48 ->
        # 0.22 s) and a SALANet step no faster (gather-bound); its effect on mIoU is not measured yet, so on a CPU
        # it stays opt-in (bf16=true).
        cuda = self.device.type == "cuda"
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                            enabled=(self.cfg.amp and cuda) or self.cfg.bf16):
            logits = self.ddp_model(batch)
        logits = logits.float()
        # Cross-entropy; partial labels (a file labelled ground / not ground) by their marginal likelihood.
        loss_ce = partial_cross_entropy(logits, batch.labels, weight=self.class_weight)
        loss, terms = loss_ce, {"loss_ce": loss_ce.item()}
        if hasattr(self.model, "regularization_loss"):
            reg = self.model.regularization_loss()
            if reg is not None:
                loss = loss + self.cfg.reg_weight * reg
                terms["loss_reg"] = float(reg)
        return loss, logits, terms

    def batch_seed(self, step: int) -> tuple[int, int, int]:
        """The seed of the batch of ``step``: the same batches whether a run is resumed or built by workers."""
        return (self.cfg.seed, self.dist.rank, step)

    def train(self, progress=None) -> dict:
        total = self.total_steps()
        self.ddp_model.train()
        batches = BatchPrefetcher(self.sampler, [self.batch_seed(s) for s in range(self.step, total)],
                                  self.workers)
        try:
            return self._loop(batches, total, progress)
        finally:
            batches.close()

    def _loop(self, batches: "BatchPrefetcher", total: int, progress) -> dict:
        cfg = self.cfg
        last_val: dict = {}
        t_start, window = time.perf_counter(), []
        while self.step < total:
            batch = next(batches).to(self.device)
            t0 = time.perf_counter()
            loss, logits, terms = self.compute_loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                raise RuntimeError(f"the loss became {loss.item()} at step {self.step}; lower the learning rate")
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                               cfg.grad_clip)
            self.optimizer.step()
            self.step += 1
            window.append(time.perf_counter() - t0)
            with torch.no_grad():
                valid = batch.labels >= 0
                acc = (logits.argmax(1)[valid] == batch.labels[valid]).float().mean().item() if valid.any() else float("nan")
            if progress is not None:
                progress(self.step, total, loss.item(), acc, self.optimizer.param_groups[0]["lr"])
            if self.step % cfg.log_every == 0 or self.step == total:
                rec = {"step": self.step, "epoch": self.step / cfg.steps_per_epoch, "loss": loss.item(), **terms,
                       "lr": self.optimizer.param_groups[0]["lr"], "acc": acc,
                       "points": int(batch.points[0].shape[0]), "step_seconds": float(np.median(window))}
                self.log(rec)
                window = []
            epoch_end = self.step % cfg.steps_per_epoch == 0
            if epoch_end:
                self.scheduler.step()
            out_of_time = cfg.time_limit is not None and time.perf_counter() - t_start > cfg.time_limit
            if epoch_end or self.step == total or out_of_time:
                epoch = math.ceil(self.step / cfg.steps_per_epoch)
                best = False
                if (self.val_clouds and (epoch % cfg.val_every == 0 or self.step == total or out_of_time)
                        and self.dist.main):
                    last_val = self.validate()
                    self.log({"step": self.step, "epoch": self.step / cfg.steps_per_epoch, **{k: last_val[k] for k in
                              ("miou", "oa", "macc", "iou")}})
                    if last_val["miou"] is not None and last_val["miou"] > self.best_miou:
                        self.best_miou, best = last_val["miou"], True
                    self.echo(f"step {self.step}: validation mIoU {100 * (last_val['miou'] or 0):.1f}, "
                              f"OA {100 * (last_val['oa'] or 0):.1f}")
                self.save(last_val, best=best or not self.val_clouds)
            elif cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save(last_val)
            if out_of_time:
                self.echo(f"time limit of {cfg.time_limit:g} s reached at step {self.step}; continue with --resume")
                break
        return {"steps": self.step, "seconds": time.perf_counter() - t_start, "validation": last_val,
                "params": self.params, "run_dir": str(self.run_dir)}


# --- batches built in worker processes ----------------------------------------------------------------------

def check_workers(workers: int) -> None:
    """``workers`` is a count, and worker processes are forked (Linux, macOS): a one-line error otherwise."""
    import multiprocessing

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UsageError(f"workers must be 0 or more, not {workers!r}")
    if workers and "fork" not in multiprocessing.get_all_start_methods():
        raise UsageError("workers=N forks processes, which this system cannot do; use workers=0")


def resolve_workers(workers: int | None, device: torch.device) -> int:
    """``workers`` as given, or by default: none on a CPU (the model and the batch building share its cores,
    and one process keeps up with a CPU step), and on a GPU all cores but two, at most 8, where forking is
    possible (one process builds ~5 batches of 8 spheres per second; an H200 trains ~8 per second)."""
    import multiprocessing

    if workers is None:
        if device.type == "cpu" or "fork" not in multiprocessing.get_all_start_methods():
            return 0
        return max(0, min(8, (os.cpu_count() or 1) - 2))
    check_workers(workers)
    return workers


_WORKER_SAMPLER: SphereSampler | None = None


def _worker_start(sampler: SphereSampler) -> None:
    global _WORKER_SAMPLER
    _WORKER_SAMPLER = sampler
    torch.set_num_threads(1)


def _worker_batch(seed: tuple[int, int, int]):
    return _WORKER_SAMPLER.sample_batch(np.random.default_rng(seed))


class BatchPrefetcher:
    """The batches of ``seeds`` in order: built here one by one (``workers`` 0), or by ``workers`` forked
    processes that keep ``2 * workers`` batches ahead of the model. Each batch comes from its own seed, so both
    ways give the same batches. Workers pay where the model outruns one process's batch building: on a GPU
    (8 spheres of 2 m: ~0.2 s to build on one core of this project's CPU, a few ms to train on an H200)."""

    def __init__(self, sampler: SphereSampler, seeds: list, workers: int = 0):
        check_workers(workers)
        self.sampler, self.seeds, self.next_index = sampler, seeds, 0
        self.pool, self.pending = None, []
        if workers > 0 and seeds:
            import multiprocessing

            # fork: the workers share the prepared clouds instead of receiving a copy; they never touch CUDA
            self.pool = multiprocessing.get_context("fork").Pool(workers, _worker_start, (sampler,))
            self.ahead = 2 * workers

    def __iter__(self):
        return self

    def __next__(self):
        if self.next_index >= len(self.seeds):
            raise StopIteration
        if self.pool is None:
            batch = self.sampler.sample_batch(np.random.default_rng(self.seeds[self.next_index]))
        else:
            queued = self.next_index + len(self.pending)
            while len(self.pending) < self.ahead and queued < len(self.seeds):
                self.pending.append(self.pool.apply_async(_worker_batch, (self.seeds[queued],)))
                queued += 1
            batch = self.pending.pop(0).get()
        self.next_index += 1
        return batch

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
