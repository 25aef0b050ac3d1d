"""`pcseg adapt`: fine-tune a segmentation model on a few labelled files of one's own survey."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from .common import check_not_input, device_option, json_option, quiet_option, threads_option
from .ui import err, note, show_progress

def register(app: typer.Typer) -> None:
    @app.command()
    def adapt(
        model: str = typer.Argument(..., help="shipped model name (sala-als, sala-als-tiny, ...) or checkpoint file"),
        data: list[str] = typer.Argument(..., help="labelled files of your survey (globs, folders; MAP:FILE reads "
                                         "FILE with the built-in class map MAP, e.g. als-ahn3:tile.laz)"),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="adapted checkpoint to write "
                                              "(.safetensors added if missing)"),
        steps: int = typer.Option(200, "--steps", min=1, help="optimiser steps (sala-als: 0.4-1.7 s each on "
                                  "one thread of a 2-core AMD EPYC, sparse to dense tiles)"),
        lr: Optional[float] = typer.Option(None, "--lr", help="learning rate (default: a tenth of the one the "
                                           "model's recipe starts from: 0.001 for sala-als and sala-als-tiny), "
                                           "divided by 10 over the run"),
        minutes: float = typer.Option(5.0, "--minutes", help="wall-clock budget of the whole command: training "
                                      "stops early enough to validate and write the model in time"),
        val: list[str] = typer.Option([], "--val", help="labelled files that decide which checkpoint (or the model "
                                      "unchanged) is written, and its reported mIoU (repeatable; never the "
                                      "training files)"),
        holdout: float = typer.Option(0.2, "--holdout", help="share of your labelled area (blocks of half a sphere "
                                      "radius) held out of training to check that adapting helps; the output is "
                                      "the best checkpoint there, or the model unchanged when none beats it by 1 "
                                      "point (with --val, those files decide instead; 0: no check)"),
        seed: int = typer.Option(0, "--seed", help="seed of the training spheres"),
        device: str = device_option(),
        threads: Optional[int] = threads_option(),
        json_out: bool = json_option(),
        quiet: bool = quiet_option(),
    ):
        """Adapt a model to your survey: fine-tune it on files where you labelled a patch, for `pcseg segment --model OUT`.

        Unlabelled points (ASPRS 0 and 1 for the airborne models) are ignored. Defaults: 200 steps at a tenth of the model's learning rate, every weight trained with the model's batch-norm statistics kept, at most 5 minutes in all. A fifth of your labelled area is held out: the model and 5 checkpoints are scored there, and the output is the best of them (the model unchanged unless a checkpoint beats it by 1 point).

        The model's recipe gives the rest (spheres, batch size, input channels, neighbour caps). The airborne building test is turned off when that scores 2 points or more better on your labelled files. The output's card says what it was adapted from, on which files and with which settings.
        """
        started = time.perf_counter()  # --minutes counts from here
        from ..engine.adapt import AdaptSettings
        from ..engine.adapt import adapt as run_adapt
        from ..engine.runtime import set_threads
        from ..models import zoo

        if output is None:
            raise UsageError("pass -o/--output: where to write the adapted model")
        if output.suffix != ".safetensors":
            output = output.with_name(output.name + ".safetensors")
        if output.is_dir():
            raise UsageError(f"output {output} is a folder; give a file name")
        set_threads(threads)
        quiet = quiet or json_out
        model_file = str(zoo.resolve(model)[0])
        from ..data.datasets import split_class_map

        inputs = [model_file] + [split_class_map(d)[1] for d in list(data) + list(val)]
        check_not_input(inputs, str(output), force=False)
        settings = AdaptSettings(steps=steps, lr=lr, minutes=minutes, seed=seed, device=device, holdout=holdout)
        echo = lambda m: note(m, quiet)  # noqa: E731
        if show_progress(quiet):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn("adapting"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.2f}"), TimeElapsedColumn(),
                          console=err, transient=True) as bar:
                task = bar.add_task("adapting", total=steps, loss=0.0, acc=0.0)
                result = run_adapt(model, list(data), output, settings, val=list(val), echo=echo,
                                   started=started, progress=lambda step, total, loss, acc, lr_now: bar.update(
                                       task, completed=step, loss=loss, acc=acc if acc == acc else 0.0))
        else:
            result = run_adapt(model, list(data), output, settings, val=list(val), echo=echo, started=started)
        a = result.card["adaptation"]
        summary = {"output": str(result.output), "from": a["from"], "files": a["files"], "steps": result.steps,
                   "planned_steps": result.planned_steps, "stopped_by": result.stopped_by,
                   "seconds": round(result.seconds, 1), "lr": a["settings"]["lr"]}
        if result.validation.get("miou") is not None:
            summary["validation"] = {k: result.validation.get(k) for k in ("miou", "oa", "iou")}
        if json_out:
            typer.echo(json.dumps(summary))
            return
        msg = (f"{result.steps} steps in {result.seconds:.0f} s"
               + (" (stopped by the --minutes budget)" if result.stopped_by == "time budget" else ""))
        check = a.get("check") or {}
        if "validation" in summary:
            msg += (f"; mIoU {100 * summary['validation']['miou']:.1f} on "
                    + ("the held-out blocks" if check.get("on") == "held-out blocks" else "the --val files"))
        if check.get("chosen_step") is not None:
            summary["chosen_step"] = check["chosen_step"]
            msg += (f"; kept step {check['chosen_step']}" if check["chosen_step"] else
                    "; the output keeps the model's weights (no step beat them)")
        note(msg, quiet)
        typer.echo(str(result.output))

