"""`pcseg train`: segmentation (and, with --task detect, detection) training."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from .common import device_option, json_option, parse_key_values, quiet_option, threads_option
from .ui import err, note, show_progress


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_extra_args": False})
    def train(
        overrides: list[str] = typer.Argument(None, help="key=value settings over the preset (e.g. lr=0.005 model_options.width=18)"),
        config: Optional[str] = typer.Option(None, "--config", "-c", help="preset name (s3dis-salanet, als-kpfcnn, ...) or TOML file"),
        data: list[str] = typer.Option([], "--data", "-d", help="training clouds: files, globs, folders, synthetic:rooms (repeatable)"),
        val: list[str] = typer.Option([], "--val", help="validation clouds (repeatable)"),
        label_field: Optional[str] = typer.Option(None, "--label-field", help="field holding the labels"),
        class_map: Optional[str] = typer.Option(None, "--class-map", help="built-in class map name or JSON file"),
        features: Optional[str] = typer.Option(None, "--features", help="input channels, e.g. one,rgb,z"),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="stop after this many optimizer steps"),
        epochs: Optional[int] = typer.Option(None, "--epochs"),
        run_dir: Path = typer.Option(Path("runs/train"), "--run-dir", help="where metrics.jsonl and checkpoints go"),
        resume: bool = typer.Option(False, "--resume", help="continue the run in --run-dir exactly where it stopped"),
        task: str = typer.Option("segment", "--task", help="segment or detect"),
        seed: Optional[int] = typer.Option(None, "--seed"),
        list_presets: bool = typer.Option(False, "--list-presets", help="print the presets and their sources"),
        device: str = device_option(),
        threads: Optional[int] = threads_option(),
        json_out: bool = json_option(),
        quiet: bool = quiet_option(),
    ):
        """Train a segmentation model on labelled clouds (presets give the papers' settings)."""
        from ..engine.presets import PRESETS

        if list_presets:
            for name, p in PRESETS.items():
                typer.echo(f"{name}: {p['model']} {json.dumps(p['model_options'])}, features {','.join(p['features'])}, "
                           f"dl0 {p['dl0']}, spheres {p['sphere_radius']} m\n    source: {p['source']}")
            return
        from ..engine.runtime import set_threads

        set_threads(threads)
        if task == "detect":
            try:
                from .detect_cmds import train_detect
            except ImportError:
                raise UsageError("detection training is not available in this installation") from None
            return train_detect(overrides=overrides or [], config=config, data=data, val=val, max_steps=max_steps,
                                epochs=epochs, run_dir=run_dir, device=device, resume=resume, seed=seed,
                                quiet=quiet or json_out, json_out=json_out)
        if task != "segment":
            raise UsageError("--task is segment or detect")
        from ..engine.train import Trainer, TrainConfig

        extra = training_overrides(overrides, data=data, val=val, label_field=label_field, class_map=class_map,
                                   max_steps=max_steps, epochs=epochs, seed=seed, device=device)
        if features:
            extra["features"] = [c.strip() for c in features.split(",") if c.strip()]
        cfg = load_config(TrainConfig, config, extra, run_dir, resume and config is None and not data)
        quiet = quiet or json_out
        trainer = Trainer(cfg, run_dir, resume=resume, quiet=quiet, echo=lambda m: note(m, quiet))
        note(f"{cfg.model} {trainer.params:,} parameters; {sum(len(c) for c in trainer.train_clouds):,} training "
             f"points at dl0 {cfg.dl0}; batches of ~{trainer.sampler.point_budget:,} points; neighbour limits "
             f"{trainer.spec.neighbor_limits}; {trainer.total_steps()} steps", quiet)
        result = run_training(trainer, run_dir, quiet)
        if json_out and trainer.dist.main:
            typer.echo(json.dumps(result))
        if trainer.dist.world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()


def run_training(trainer, run_dir: Path, quiet: bool, label: str = "training") -> dict:
    """Run a Trainer (or Distiller) with a progress bar on a terminal; one summary line at the end."""
    if show_progress(quiet):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.2f} lr {task.fields[lr]:.2e}"),
                      TimeRemainingColumn(), console=err, transient=True) as bar:
            task_id = bar.add_task(label, total=trainer.total_steps(), completed=trainer.step, loss=0.0, acc=0.0,
                                   lr=trainer.cfg.lr)
            result = trainer.train(lambda step, total, loss, acc, lr: bar.update(
                task_id, completed=step, loss=loss, acc=acc if acc == acc else 0.0, lr=lr))
    else:
        result = trainer.train()
    if trainer.dist.main:
        v = result["validation"]
        msg = f"{result['steps']} steps in {result['seconds']:.0f} s; checkpoints in {run_dir}"
        if v.get("miou") is not None:
            msg += f"; validation mIoU {100 * v['miou']:.1f}"
        note(msg, quiet)
    return result


def training_overrides(pairs: list[str] | None, **options) -> dict:
    """``key=value`` settings plus the command-line options that were given (None and empty lists are not)."""
    extra = parse_key_values(pairs or [])
    for key, value in options.items():
        if isinstance(value, (list, tuple)):
            value = list(value) or None
        if value is not None:
            extra[key] = value
    return extra


def load_config(cls, preset: str | None, extra: dict, run_dir: Path, from_run_dir: bool):
    """``cls`` (TrainConfig or DistillConfig) from a preset, or, when resuming without one, from the
    configuration the run directory remembers; ``key=value`` overrides apply on top (e.g. a longer max_steps)."""
    if from_run_dir:
        from ..models.checkpoint import load_state

        saved = json.loads(load_state(run_dir / "last.state.safetensors")["config"])
        return cls.from_preset(None, {**saved, **extra})
    return cls.from_preset(preset, extra)
