"""`pcseg segment`, `pcseg eval` and the shipped-model commands `models list` / `models info`."""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from pathlib import Path
from typing import Optional

import typer

from ..errors import BadInputError, UsageError
from .common import (FORMAT_HELP, check_not_input, device_option, in_format, json_option, out_format, quiet_option,
                     threads_option)
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


def _segment_one(ck, src: str, dest: str | None, opts, fmt: dict, progress=None) -> dict:
    from ..engine.segment import segment_file

    return segment_file(ck, src, dest, opts, in_format(src, fmt["format"], fmt["in"]),
                        out_format(dest, fmt["format"], fmt["out"]) if dest else None, progress=progress)


# --jobs: worker processes, each with its own model and its share of the threads.
_worker: dict = {}


def _worker_init(model: str, device: str, threads: int) -> None:
    from ..engine.runtime import configure_allocator, set_threads
    from ..models import zoo

    configure_allocator()
    set_threads(threads)
    _worker["ck"] = zoo.load(model, device)


def _worker_run(job: tuple) -> tuple[str, dict | None, str | None, int]:
    """(input, summary, error message, exit code); errors are per file, so one bad tile stops nothing."""
    from ..errors import PcsegError

    src, dest, opts, fmt = job
    try:
        return src, _segment_one(_worker["ck"], src, dest, opts, fmt), None, 0
    except PcsegError as e:
        return src, None, str(e), e.exit_code
    except MemoryError:
        return src, None, f"{src}: out of memory; process a smaller file or fewer points at once", 1
    except Exception as e:  # an internal failure of one file: reported, the others go on
        return src, None, f"{src}: internal error: {type(e).__name__}: {e}", 1


def _run_many(jobs_list: list, model: str, device: str, threads: int | None, jobs: int, quiet: bool,
              report) -> list[tuple[str, int]]:
    """Segment several files, in ``jobs`` worker processes when asked; failures are reported per file and
    returned as (input, exit code). Summaries come in input order."""
    failures = []
    if jobs == 1 or len(jobs_list) <= 1:
        from ..engine.runtime import set_threads

        set_threads(threads)
        _worker_init_loaded(model, device)
        results = map(_worker_run, jobs_list)
        pool = None
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        share = max(1, (threads or os.cpu_count() or 1) // jobs)
        # spawn: a fresh interpreter per worker (torch's thread pools do not survive fork)
        pool = ProcessPoolExecutor(max_workers=min(jobs, len(jobs_list)), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(model, device, share))
        results = pool.map(_worker_run, jobs_list)
    try:
        with progress("segmenting", len(jobs_list), quiet) as advance:
            for src, summary, error, code in results:
                if error is None:
                    report(summary)
                else:
                    err.print(f"pcseg: error: {error}", markup=False, highlight=False)
                    failures.append((src, code))
                advance()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return failures


def _worker_init_loaded(model: str, device: str) -> None:
    from ..models import zoo

    _worker["ck"] = zoo.load(model, device)


def register(app: typer.Typer) -> None:
    @app.command()
    def segment(
        inputs: list[str] = typer.Argument(..., help="clouds, globs, S3DIS room folders, or - for stdin"),
        model: str = typer.Option(..., "--model", "-m", help="shipped model name (pcseg models list) or checkpoint path"),
        output: Optional[str] = typer.Option(None, "-o", "--output", help="output file (or - for stdout); one input only"),
        out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="folder for outputs named <input>_seg.<ext>"),
        votes: int = typer.Option(3, "--votes", min=1, help="test-time rotations about z averaged per point"),
        confidence: bool = typer.Option(False, "--confidence", help="also write the top class probability"),
        proba: bool = typer.Option(False, "--proba", help="also write prob_<class> for every class"),
        as_classification: bool = typer.Option(False, "--as-classification",
                                                help="write ASPRS codes into the LAS classification (ASPRS models)"),
        vegetation_heights: Optional[str] = typer.Option(
            None, "--vegetation-heights", metavar="LOW,MEDIUM",
            help="airborne models: upper heights (m above the predicted ground) of low and medium vegetation "
                 "(default from the model card: 0.5,1.5, the IGN LiDAR HD rule)"),
        ground_tolerance: Optional[str] = typer.Option(
            None, "--ground-tolerance", metavar="METRES",
            help="airborne models: a point predicted ground that stands more than this above the plane of its "
                 "nearest ground points becomes vegetation (default from the model card: 0.5); 'off' keeps the "
                 "network's labels"),
        building_min_height: Optional[str] = typer.Option(
            None, "--building-min-height", metavar="METRES",
            help="airborne models: a point predicted building that stands less than this above the label-free "
                 "ground estimates takes its second most likely class (default from the model card: 2); 'off' "
                 "keeps the network's labels"),
        bf16: bool = typer.Option(False, "--bf16", help="run the network in bfloat16 (faster on CPUs with AMX / "
                                  "AVX-512 BF16 and on recent GPUs; labels may differ on a few points)"),
        eval_field: Optional[str] = typer.Option(None, "--eval", help="ground-truth field: report mIoU, OA, per-class IoU"),
        no_write: bool = typer.Option(False, "--no-write", help="only report (with --eval); write no output"),
        png: Optional[Path] = typer.Option(None, "--png", help="also draw the result (top view, class colours) to "
                                           "this PNG; with several inputs, a folder for <input>_seg.png"),
        jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="worker processes for several inputs, each with "
                                 "its share of --threads"),
        skip_existing: bool = typer.Option(False, "--skip-existing",
                                           help="leave inputs whose output already exists (reruns resume a batch)"),
        batch_points: int = typer.Option(60_000, "--batch-points", help="points per forward pass"),
        tile_points: int = typer.Option(5_000_000, "--tile-points",
                                        help="LAS/LAZ inputs with more points are processed in tiles of about this many "
                                             "points, with bounded memory"),
        format: Optional[str] = typer.Option(None, "--format", "-f", help=FORMAT_HELP),
        in_fmt: Optional[str] = typer.Option(None, "--in-format"),
        out_fmt: Optional[str] = typer.Option(None, "--out-format"),
        force: bool = typer.Option(False, "--force", help="allow writing over the input file"),
        device: str = device_option(),
        threads: Optional[int] = threads_option(),
        json_out: bool = json_option(),
        quiet: bool = quiet_option(),
    ):
        """Segment clouds with a model: labels written back into a copy of each input (KPConv/SALA voting)."""
        from ..engine.options import SegmentOptions
        from ..engine.runtime import resolve_device, set_threads
        from ..models import zoo

        heights = None
        if vegetation_heights is not None:
            try:
                heights = tuple(float(v) for v in vegetation_heights.split(","))
            except ValueError:
                heights = ()
            if len(heights) != 2:
                raise UsageError(f"--vegetation-heights takes two numbers LOW,MEDIUM, not {vegetation_heights!r}")
        from ..engine.options import metres_or_off

        tolerance = metres_or_off(ground_tolerance, "--ground-tolerance")
        min_height = metres_or_off(building_min_height, "--building-min-height")
        files = _expand_inputs(inputs)
        many = len(files) > 1
        if output is not None and many:
            raise UsageError("-o names one output; with several inputs use --out-dir")
        if output == "-" and json_out:
            raise UsageError("--json and -o - both use stdout; write the cloud to a file or drop --json")
        if "-" in files and jobs > 1:
            raise UsageError("--jobs reads files; stdin (-) is one input")
        device = resolve_device(device)
        if png is not None:
            from ..engine.render import require_pillow

            require_pillow()  # before any heavy work: one line on how to install it
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        if png is not None and many:
            png.mkdir(parents=True, exist_ok=True)
        opts = SegmentOptions(votes=votes, device=device, confidence=confidence, proba=proba,
                              as_classification=as_classification, eval_field=eval_field, batch_points=batch_points,
                              tile_points=tile_points, vegetation_heights=heights,
                              ground_tolerance=tolerance, building_min_height=min_height, bf16=bf16)
        fmt = {"format": format, "in": in_fmt, "out": out_fmt}
        jobs_list, skipped = [], []
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
            if skip_existing and dest not in (None, "-") and os.path.exists(dest):
                skipped.append((src, dest))
                continue
            picture = None
            if png is not None:
                picture = str(png / (Path(src).stem + "_seg.png")) if many else str(png)
            jobs_list.append((src, dest, dataclasses.replace(opts, png=picture), fmt))

        def report(summary: dict) -> None:
            for n in summary.pop("notes", []):
                note(n, quiet or json_out)
            if json_out:
                typer.echo(json.dumps(summary))
            elif not quiet:
                _print_summary(summary)

        for src, dest in skipped:
            note(f"{src}: {dest} exists, skipped (--skip-existing)", quiet or json_out)
            if json_out:
                typer.echo(json.dumps({"input": src, "output": dest, "skipped": True}))
        if not many:  # one input: its errors are the command's errors
            if jobs_list:
                set_threads(threads)
                ck = zoo.load(model, device)
                src, dest, o, _ = jobs_list[0]
                with progress(f"segmenting {Path(src).name}", None, quiet or json_out or dest == "-") as advance:
                    report(_segment_one(ck, src, dest, o, fmt, progress=advance))
            return
        failures = _run_many(jobs_list, model, device, threads, jobs, quiet or json_out, report)
        done = len(jobs_list) - len(failures)
        note(f"{done} of {len(files)} inputs segmented" + (f", {len(skipped)} skipped" if skipped else "")
             + (f", {len(failures)} failed" if failures else ""), quiet or json_out)
        if failures:
            raise typer.Exit(max(code for _, code in failures))

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
