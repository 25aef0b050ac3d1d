"""`pcseg segment`, `pcseg eval` and the shipped-model commands `models list` / `models info`."""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Optional

import typer

from ..errors import BadInputError, UsageError
from .common import FORMAT_HELP, check_not_input, in_format, out_format
from .ui import err, note, progress


def _expand_inputs(inputs: list[str]) -> list[str]:
    out = []
    for item in inputs:
        if item == "-" or os.path.exists(item):
            out.append(item)
            continue
        matches = sorted(glob.glob(item))
        if not matches:
            raise BadInputError("no such file or directory (and no file matches it as a pattern)", item)
        out.extend(matches)
    return out


def _default_output(src: str, out_dir: Optional[Path]) -> str:
    """<input>_seg.<ext> beside the input (or in --out-dir); an S3DIS room folder gives <room>_seg.ply."""
    base = Path(src)
    name = base.name + "_seg.ply" if base.is_dir() else base.stem + "_seg" + base.suffix
    return str((out_dir or base.parent) / name)


def _print_summary(s: dict) -> None:
    from rich.table import Table

    total = max(s["points"], 1)
    table = Table(title=f"{s['input']} -> {s['output'] or '(not written)'}", show_edge=False)
    table.add_column("class")
    table.add_column("points", justify="right")
    table.add_column("%", justify="right")
    if "metrics" in s:
        table.add_column("IoU", justify="right")
    for name, count in s["classes"].items():
        row = [name, f"{count:,}", f"{100 * count / total:.1f}"]
        if "metrics" in s:
            iou = s["metrics"]["iou"].get(name)
            row.append("-" if iou is None else f"{100 * iou:.1f}")
        table.add_row(*row)
    err.print(table)
    line = f"{s['points']:,} points in {s['seconds']:.1f} s ({s['points_per_second']:,.0f} points/s, {s['votes']} votes)"
    if "metrics" in s:
        m = s["metrics"]
        line += f"; mIoU {100 * m['miou']:.1f}, OA {100 * m['oa']:.1f}"
    if "metrics_asprs" in s:
        iou = s["metrics_asprs"]["iou"]
        parts = ", ".join(f"{k} {'-' if iou.get(k) is None else f'{100 * iou[k]:.1f}'}"
                          for k in ("low vegetation", "medium vegetation", "high vegetation"))
        line += f"; ASPRS codes (vegetation split by height): {parts}"
    err.print(line)


def register(app: typer.Typer) -> None:
    @app.command()
    def segment(
        inputs: list[str] = typer.Argument(..., help="clouds, globs, S3DIS room folders, or - for stdin"),
        model: str = typer.Option(..., "--model", "-m", help="shipped model name (pcseg models list) or checkpoint path"),
        output: Optional[str] = typer.Option(None, "-o", "--output", help="output file (or - for stdout); one input only"),
        out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="folder for outputs named <input>_seg.<ext>"),
        votes: int = typer.Option(3, "--votes", help="test-time rotations about z averaged per point"),
        confidence: bool = typer.Option(False, "--confidence", help="also write the top class probability"),
        proba: bool = typer.Option(False, "--proba", help="also write prob_<class> for every class"),
        as_classification: bool = typer.Option(False, "--as-classification",
                                                help="write ASPRS codes into the LAS classification (ASPRS models)"),
        vegetation_heights: Optional[str] = typer.Option(
            None, "--vegetation-heights", metavar="LOW,MEDIUM",
            help="airborne models: upper heights (m above the predicted ground) of low and medium vegetation "
                 "(default from the model card: 0.5,1.5, the IGN LiDAR HD rule)"),
        region_scale: Optional[float] = typer.Option(
            None, "--region-scale", min=1.0,
            help="inference regions this many times the training sphere radius (default: the model card's; larger "
                 "regions send each point through the network fewer times)"),
        bf16: bool = typer.Option(False, "--bf16", help="run the network in bfloat16 (faster on CPUs with AMX / "
                                  "AVX-512 BF16 and on recent GPUs; labels may differ on a few points)"),
        eval_field: Optional[str] = typer.Option(None, "--eval", help="ground-truth field: report mIoU, OA, per-class IoU"),
        no_write: bool = typer.Option(False, "--no-write", help="only report (with --eval); write no output"),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N"),
        batch_points: int = typer.Option(60_000, "--batch-points", help="points per forward pass"),
        tile_points: int = typer.Option(5_000_000, "--tile-points",
                                        help="LAS/LAZ inputs with more points are processed in tiles of about this many "
                                             "points, with bounded memory"),
        format: Optional[str] = typer.Option(None, "--format", "-f", help=FORMAT_HELP),
        in_fmt: Optional[str] = typer.Option(None, "--in-format"),
        out_fmt: Optional[str] = typer.Option(None, "--out-format"),
        force: bool = typer.Option(False, "--force", help="allow writing over the input file"),
        json_out: bool = typer.Option(False, "--json", help="one JSON object per input on stdout"),
        quiet: bool = typer.Option(False, "--quiet", "-q"),
    ):
        """Segment clouds with a model: labels written back into a copy of each input (KPConv/SALA voting)."""
        import torch

        from ..engine.segment import segment_file
        from ..models import zoo

        if votes < 1:
            raise UsageError("--votes must be at least 1")
        heights = None
        if vegetation_heights is not None:
            try:
                heights = tuple(float(v) for v in vegetation_heights.split(","))
            except ValueError:
                heights = ()
            if len(heights) != 2:
                raise UsageError(f"--vegetation-heights takes two numbers LOW,MEDIUM, not {vegetation_heights!r}")
        files = _expand_inputs(inputs)
        if output is not None and len(files) > 1:
            raise UsageError("-o names one output; with several inputs use --out-dir")
        if output == "-" and json_out:
            raise UsageError("--json and -o - both use stdout; write the cloud to a file or drop --json")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError("--device cuda asked but no CUDA device is available; use --device cpu")
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        ck = zoo.load(model, device)
        for src in files:
            if no_write:
                dest = None
            elif output is not None:
                dest = output
            elif src == "-":
                raise UsageError("reading stdin needs -o (a file or - for stdout)")
            else:
                dest = _default_output(src, out_dir)
            if dest is not None:
                check_not_input([src], dest, force)
            with progress(f"segmenting {Path(src).name}", None, quiet or json_out or dest == "-") as advance:
                summary = segment_file(ck, src, dest, in_format(src, format, in_fmt),
                                       out_format(dest, format, out_fmt) if dest else None, votes=votes,
                                       device=device, confidence=confidence, with_proba=proba,
                                       as_classification=as_classification, eval_field=eval_field,
                                       batch_points=batch_points, tile_points=tile_points, progress=advance,
                                       vegetation_heights=heights, region_scale=region_scale, bf16=bf16)
            for n in summary.pop("notes", []):
                note(n, quiet or json_out)
            if json_out:
                typer.echo(json.dumps(summary))
            elif not quiet:
                _print_summary(summary)

    @app.command("eval")
    def eval_cmd(
        src: str = typer.Argument(..., help="a segmented cloud holding both fields"),
        truth: str = typer.Option(..., "--truth", help="ground-truth field"),
        pred: str = typer.Option(..., "--pred", help="prediction field"),
        ignore: list[int] = typer.Option([], "--ignore", help="truth values to skip (repeatable)"),
        format: Optional[str] = typer.Option(None, "--format", "-f", help=FORMAT_HELP),
        json_out: bool = typer.Option(False, "--json"),
    ):
        """mIoU, OA, mAcc and per-class IoU of a prediction field against a truth field of the same file."""
        import numpy as np

        from ..engine.metrics import confusion_matrix, scores
        from ..io import read

        cloud = read(src, in_format(src, format, None))
        for f in (truth, pred):
            if f not in cloud.fields:
                raise BadInputError(f"no field {f!r} (fields: {', '.join(cloud.fields)})", src)
        t, p = cloud.fields[truth].astype(np.int64), cloud.fields[pred].astype(np.int64)
        keep = ~np.isin(t, ignore)
        values = np.unique(t[keep])  # classes = the truth values; other predicted values count as errors
        c = len(values)
        ti = np.searchsorted(values, t[keep])
        pos = np.minimum(np.searchsorted(values, p[keep]), c - 1)
        pi = np.where(values[pos] == p[keep], pos, c)
        s = scores(confusion_matrix(pi, ti, c + 1), [str(int(v)) for v in values] + ["other"])
        s["iou"].pop("other")
        s["acc"].pop("other")
        ious = [v for v in s["iou"].values() if v is not None]
        s["miou"] = float(np.mean(ious)) if ious else None
        if json_out:
            typer.echo(json.dumps(s))
        else:
            err.print(f"mIoU {100 * s['miou']:.1f}  OA {100 * s['oa']:.1f}  mAcc {100 * s['macc']:.1f}  ({s['points']:,} points)")
            for k, v in s["iou"].items():
                err.print(f"  {k:>6}: IoU {'-' if v is None else f'{100 * v:.1f}'}")
