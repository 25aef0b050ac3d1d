"""`pcseg distill`: SRKD knowledge distillation from a frozen teacher checkpoint into a small student."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from .common import check_not_input, device_option, json_option, quiet_option, threads_option
from .train_cmds import load_config, run_training, training_overrides
from .ui import note


def register(app: typer.Typer) -> None:
    @app.command()
    def distill(
        overrides: list[str] = typer.Argument(None, help="key=value settings (e.g. weights.cross=0 temperature=2 max_steps=2000)"),
        teacher: Optional[str] = typer.Option(None, "--teacher", "-t", help="shipped model name or checkpoint file (frozen)"),
        student: Optional[str] = typer.Option(None, "--student", "-s", help="student preset (als-salanet-tiny, ...) or TOML file"),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="student checkpoint to write (.safetensors added if missing)"),
        data: list[str] = typer.Option([], "--data", "-d", help="training clouds: files, globs, folders (repeatable)"),
        val: list[str] = typer.Option([], "--val", help="validation clouds; the comparison table is measured on them"),
        label_field: Optional[str] = typer.Option(None, "--label-field", help="field holding the ground truth"),
        baseline: Optional[str] = typer.Option(None, "--baseline", help="the same student trained alone (pcseg train), for the comparison table"),
        votes: int = typer.Option(1, "--votes", help="votes when measuring the comparison table"),
        teacher_cache: bool = typer.Option(False, "--teacher-cache", help="run the teacher once per training cloud instead of every step"),
        max_steps: Optional[int] = typer.Option(None, "--max-steps"),
        epochs: Optional[int] = typer.Option(None, "--epochs"),
        run_dir: Path = typer.Option(Path("runs/distill"), "--run-dir", help="where metrics.jsonl and checkpoints go"),
        resume: bool = typer.Option(False, "--resume", help="continue the run in --run-dir exactly where it stopped"),
        seed: Optional[int] = typer.Option(None, "--seed"),
        device: str = device_option(),
        threads: Optional[int] = threads_option(),
        json_out: bool = json_option(),
        quiet: bool = quiet_option(),
    ):
        """Distill a large segmentation model into a small one (SRKD: KD + relation + channel + cross-sample losses)."""
        from ..engine.distill import DistillConfig, Distiller
        from ..engine.runtime import set_threads

        set_threads(threads)
        quiet = quiet or json_out

        if teacher is None and not resume:
            raise UsageError("pass --teacher: the model to distill (e.g. sala-als)")
        if student is None and not resume:
            raise UsageError("pass --student: a student preset (e.g. als-salanet-tiny) or a TOML file")
        if output is None:
            raise UsageError("pass -o/--output: where to write the distilled student")
        if output.suffix != ".safetensors":
            output = output.with_name(output.name + ".safetensors")
        check_not_input([t for t in (teacher, baseline) if t], str(output), force=False)
        extra = training_overrides(overrides, data=data, val=val, label_field=label_field, max_steps=max_steps,
                                   epochs=epochs, seed=seed, device=device, teacher=teacher)
        if teacher_cache:
            extra["teacher_cache"] = True
        cfg = load_config(DistillConfig, student, extra, run_dir, resume and student is None)
        distiller = Distiller(cfg, run_dir, resume=resume, quiet=quiet, echo=lambda m: note(m, quiet))
        note(f"teacher {cfg.teacher}: {distiller.teacher_params:,} parameters; student {cfg.model} "
             f"{distiller.params:,} parameters ({distiller.teacher_params / distiller.params:.1f}x fewer); "
             f"{distiller.total_steps()} steps", quiet)
        run_training(distiller, run_dir, quiet, label="distilling")
        best = run_dir / "best.safetensors"
        written = finish(distiller.teacher, list(distiller.cfg.val), best if best.exists() else run_dir / "last.safetensors",
                         output, baseline, votes, lambda m: note(m, quiet))
        if json_out:
            from ..models.checkpoint import read_card

            card = read_card(written)
            typer.echo(json.dumps({"output": str(written), "params": card.get("params"),
                                   "params_ratio": card.get("params_ratio"), "comparison": card.get("comparison"),
                                   "speed_ratio": card.get("speed_ratio")}))
        else:
            typer.echo(str(written))


def finish(teacher, files: list[str], student: Path, output: Path, baseline: str | None, votes: int, echo) -> Path:
    """Copy the ``student`` checkpoint to ``output`` with a card that compares teacher, student alone and
    distilled student on the validation files (quality and segmentation time)."""
    from ..engine.quality import measure_quality
    from ..models import zoo
    from ..models.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(student)
    card = dict(ck.card)
    if files:
        table = {}
        echo("measuring the teacher, the distilled student" + (" and the student alone" if baseline else "")
             + f" on {len(files)} validation file(s)")
        table["teacher"] = measure_quality(teacher, files, votes, echo)
        if baseline:
            table["student_alone"] = measure_quality(zoo.load(baseline), files, votes, echo)
        table["distilled"] = measure_quality(ck, files, votes, echo)
        card["comparison"] = {"measured_on": files, "votes": votes, **{
            k: {"miou": v["pooled"]["miou"], "oa": v["pooled"]["oa"], "seconds": v["seconds"],
                "per_file": {f: {"miou": r["miou"], "oa": r["oa"]} for f, r in v["per_file"].items()}}
            for k, v in table.items()}}
        card["speed_ratio"] = round(table["teacher"]["seconds"] / max(table["distilled"]["seconds"], 1e-9), 2)
        for k, v in table.items():
            echo(f"{k}: pooled mIoU {100 * (v['pooled']['miou'] or 0):.1f}, OA {100 * (v['pooled']['oa'] or 0):.1f}, "
                 f"{v['seconds']:.2f} s")
    save_checkpoint(output, ck.model, card)
    return output
