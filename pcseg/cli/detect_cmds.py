"""`pcseg detect` (3D boxes on lidar frames), `pcseg eval-detect` (KITTI AP) and the detection side of
`pcseg train --task detect`. Nothing heavy is imported at module import: the CLI starts fast."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import BadInputError, UsageError
from .common import device_option, json_option, quiet_option, threads_option
from .ui import note, progress

FRAME_SUFFIXES = (".bin", ".ply", ".las", ".laz", ".npy", ".pcd", ".txt")
FORMATS = ("kitti", "json", "ply")


def _expand_frames(frames: list[str]) -> list[str]:
    """Files as given; folders give their frames (sorted); ``-`` is one ``.bin`` scan on stdin."""
    out = []
    for f in frames:
        if f == "-":
            out.append(f)
        elif os.path.isdir(f):
            found = sorted(str(p) for p in Path(f).iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
            if not found:
                raise BadInputError(f"no frames ({', '.join(FRAME_SUFFIXES)}) in this folder", f)
            out.extend(found)
        elif not os.path.exists(f):
            raise BadInputError("no such file or folder", f)
        else:
            out.append(f)
    if not out:
        raise UsageError("give at least one frame (file, folder or - for a .bin scan on stdin)")
    return out


def _frame_id(path: str) -> str:
    return "stdin" if path == "-" else Path(path).stem


def _output_path(out: Optional[Path], src: str, fmt: str, many: bool) -> str:
    """``-o`` is a file for one frame (``-`` = stdout), a folder for several (created) or an existing folder;
    default: stdout for kitti/json, ``<frame>_boxes.ply`` beside the input for ply."""
    ext = {"kitti": ".txt", "json": ".json", "ply": ".ply"}[fmt]
    name = _frame_id(src) + ("_boxes.ply" if fmt == "ply" else ext)
    if out is None:
        if fmt == "ply":
            if src == "-":
                raise UsageError("--format ply from stdin needs -o FILE")
            return str(Path(src).with_name(name))
        return "-"
    if many or out.is_dir():
        if out.exists() and not out.is_dir():
            raise UsageError(f"-o {out} must be a folder when detecting on several frames")
        out.mkdir(parents=True, exist_ok=True)
        return str(out / name)
    return str(out)


def _write_text(dest: str, text: str) -> None:
    if dest == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    folder = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(folder):
        raise BadInputError("output folder does not exist", folder)
    tmp = dest + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, dest)


def format_detections(det, fmt: str, frame_id: str, calib=None, points=None) -> str | object:
    """KITTI label lines (camera frame with a calibration, lidar frame otherwise, said in a header line), JSON,
    or a PointCloud of the frame with a per-point ``box_id`` (-1 outside every box) for PLY."""
    import numpy as np

    from ..io.kitti import format_label_lines, lidar_boxes_to_objects

    if fmt == "kitti":
        objs = lidar_boxes_to_objects(det.boxes, det.names, det.scores, calib)
        return format_label_lines(objs, frame="camera" if calib is not None else "lidar")
    if fmt == "json":
        boxes = [{"class": n, "score": round(float(s), 4),
                  "box": {k: round(float(v), 4) for k, v in zip(("x", "y", "z", "dx", "dy", "dz", "yaw"), b)}}
                 for b, s, n in zip(det.boxes, det.scores, det.names)]
        return json.dumps({"frame": frame_id, "coordinates": "lidar: box centre x y z, size dx (length) dy dz, "
                           "yaw about +z from +x", "boxes": boxes}, indent=1) + "\n"
    from ..geometry.boxes import points_in_boxes
    from ..io.cloud import PointCloud

    box_id = points_in_boxes(points[:, :3], det.boxes) if len(det) else np.full(len(points), -1, np.int64)
    return PointCloud(points[:, :3].astype(np.float64), {"intensity": points[:, 3].astype(np.float32),
                                                          "box_id": box_id.astype(np.int32)})


def register(app: typer.Typer) -> None:
    @app.command("detect")
    def detect(
        frames: list[str] = typer.Argument(..., help="lidar frames: KITTI .bin (or ply/las/npy...), folders, - for a .bin on stdin"),
        model: str = typer.Option("focals-kitti", "--model", "-m", help="shipped model name or checkpoint file"),
        calib: Optional[Path] = typer.Option(None, "--calib", help="KITTI calib file (or folder of <frame>.txt): kitti output in the camera frame, boxes outside camera 2's view left out"),
        image: Optional[Path] = typer.Option(None, "--image", help="camera image 2 (PNG, or a folder of <frame>.png) for a fusion model (Focals Conv-F); needs --calib"),
        fmt: str = typer.Option("kitti", "--format", "-f", help="kitti (label_2 lines with scores), json, or ply (frame with box_id)"),
        output: Optional[Path] = typer.Option(None, "-o", "--output", help="output file (one frame) or folder (several); default stdout"),
        score_thresh: float = typer.Option(0.3, "--score-thresh", help="keep boxes scoring at least this"),
        sensor_height: Optional[float] = typer.Option(
            None, "--sensor-height", help="frames that are not KITTI's: the lidar's height above the ground (m) "
            "in the frame's coordinates (origin at the sensor, x forward, z up); default: the model's (1.73 m, "
            "KITTI's Velodyne)"),
        png: Optional[Path] = typer.Option(None, "--png", help="also draw a top view with the boxes to this PNG "
                                           "(a folder of <frame>_boxes.png with several frames)"),
        device: str = device_option(),
        threads: Optional[int] = threads_option(),
        json_out: bool = json_option(),
        quiet: bool = quiet_option(),
    ):
        """3D boxes (Car, Pedestrian, Cyclist) in lidar frames with a focal sparse conv detector (a fusion model
        also reads each frame's camera image: --image and --calib).

        With --json, stdout carries one JSON object per frame (its boxes included); result files are then
        written only where -o says."""
        import time

        if fmt not in FORMATS:
            raise UsageError(f"--format is one of {', '.join(FORMATS)}")
        if not 0.0 <= score_thresh <= 1.0:
            raise UsageError("--score-thresh is between 0 and 1")
        paths = _expand_frames(frames)
        if calib is not None and not calib.exists():
            raise BadInputError("no such calibration file or folder", str(calib))
        if image is not None and not image.exists():
            raise BadInputError("no such image file or folder", str(image))
        if image is not None and len(paths) > 1 and not image.is_dir():
            raise UsageError("with several frames, --image is a folder of <frame>.png (one image per frame)")
        from ..engine.detect import KITTI_SENSOR_HEIGHT, detect_points, frame_shift, load_detector, load_frame
        from ..engine.runtime import resolve_device, set_threads
        from ..io import write
        from ..io.kitti import Calibration

        set_threads(threads)
        if png is not None:
            from ..engine.render import require_pillow

            require_pillow()
        net, card = load_detector(model, resolve_device(device))
        if net.fusion and image is None:
            raise UsageError(f"{model} fuses camera images (Focals Conv-F): give each frame's image with --image "
                             "FRAME.png (or a folder of <frame>.png) and its calibration with --calib")
        if net.fusion and calib is None:
            raise UsageError(f"{model} fuses camera images: --image needs the frame's calibration too (--calib)")
        if image is not None and not net.fusion:
            raise UsageError(f"--image is for fusion models (model_options.fusion=true); {model} reads lidar only")
        many = len(paths) > 1
        if png is not None and many:
            png.mkdir(parents=True, exist_ok=True)
        # a bar only on a terminal and for several frames (stdout may carry the results)
        with progress("detecting", len(paths), quiet or json_out or not many) as advance:
            for src in paths:
                t0 = time.perf_counter()
                data = sys.stdin.buffer.read() if src == "-" else None
                shift = frame_shift(sensor_height, float(card.get("sensor_height", KITTI_SENSOR_HEIGHT)))
                points = load_frame(src, data, sensor_height, float(card.get("sensor_height", KITTI_SENSOR_HEIGHT)))
                cal = None
                if calib is not None:
                    cf = calib / f"{_frame_id(src)}.txt" if calib.is_dir() else calib
                    if not cf.is_file():
                        raise BadInputError(f"no calibration for frame {_frame_id(src)}", str(cf))
                    cal = Calibration.from_file(cf)
                pixels = None
                if image is not None:
                    from ..io.image import read_image

                    pf = image / f"{_frame_id(src)}.png" if image.is_dir() else image
                    if not pf.is_file():
                        raise BadInputError(f"no image for frame {_frame_id(src)}", str(pf))
                    pixels = read_image(pf)
                det = detect_points(net, points, score_thresh, image=pixels, calib=cal)
                if shift:  # results in the user's frame
                    det.boxes[:, 2] -= shift
                    points[:, 2] -= shift
                if cal is not None and fmt == "kitti" and len(det):
                    # camera-frame labels: KITTI annotates only what camera 2 sees, keep the boxes it sees
                    det = det.subset(cal.fov_mask(det.boxes[:, :3]))
                dest = None if (json_out and output is None) else _output_path(output, src, fmt, many)
                if dest is not None:
                    result = format_detections(det, fmt, _frame_id(src), cal, points)
                    if fmt == "ply":
                        write(result, dest, format="ply")
                    else:
                        _write_text(dest, result)
                if png is not None:
                    from ..engine.render import render_boxes_top, save_png

                    picture = png / f"{_frame_id(src)}_boxes.png" if many else png
                    r = card.get("point_range")  # KITTI frames reach far: draw the detector's range, not every point
                    extent = (r[0], r[1], r[3], r[4]) if r is not None and len(r) == 6 else None
                    save_png(render_boxes_top(points, det.boxes, det.names, det.scores, extent=extent), picture)
                if json_out:
                    summary = json.loads(format_detections(det, "json", _frame_id(src)))
                    typer.echo(json.dumps({"input": src, "output": dest, "frame": _frame_id(src), "count": len(det),
                                           "seconds": round(time.perf_counter() - t0, 3), "boxes": summary["boxes"]}))
                elif dest != "-" and not quiet:
                    note(f"{_frame_id(src)}: {len(det)} boxes -> {dest}")
                advance()

    @app.command("eval-detect")
    def eval_detect(
        pred: Path = typer.Option(..., "--pred", help="folder of <frame>.txt results (pcseg detect --format kitti)"),
        truth: Path = typer.Option(..., "--truth", help="folder of KITTI label_2 <frame>.txt files"),
        calib: Optional[Path] = typer.Option(None, "--calib", help="calib folder for lidar-frame results (default: truth/../calib)"),
        json_out: bool = typer.Option(False, "--json", help="print the full result as JSON"),
    ):
        """KITTI AP (BEV and 3D, R11 and R40, easy/moderate/hard) of detection results against labels."""
        from ..engine.detection_eval import evaluate_folders, format_results

        result = evaluate_folders(pred, truth, calib)
        typer.echo(json.dumps(result) if json_out else format_results(result))


def train_detect(overrides: list[str], config: str | None = None, data: list[str] | None = None,
                 val: list[str] | None = None, max_steps: int | None = None, epochs: int | None = None,
                 run_dir: Path = Path("runs/train"), device: str = "auto", resume: bool = False,
                 seed: int | None = None, quiet: bool = False, json_out: bool = False) -> None:
    """`pcseg train --task detect`: ``--data`` is a KITTI ``training/`` folder, ``--val`` frame ids held out
    (default 004139), ``key=value`` overrides of :class:`pcseg.engine.detect.DetectTrainConfig`
    (``synthetic_steps=200 steps=2000 model_options.focal=false`` ...). ``--max-steps`` caps the KITTI steps.
    ``model_options.fusion=true`` trains Focals Conv-F on the folder's ``image_2/<frame>.png`` as well (frames
    without an image are left out, see :mod:`pcseg.engine.detect`)."""
    from ..engine.detect import DetectTrainConfig, saved_config, train_detector
    from .common import parse_key_values

    if config is not None:
        raise UsageError("detection training has no presets; use key=value settings")
    if epochs is not None:
        raise UsageError("detection training counts steps: use steps=N or --max-steps")
    if data and len(data) > 1:
        raise UsageError("--data takes one KITTI training/ folder for detection")
    extra = parse_key_values(overrides or [])
    if data:
        extra["kitti"] = data[0]
    if val:
        extra["val_frames"] = list(val)
    if max_steps is not None:
        extra["steps"] = max_steps
    if seed is not None:
        extra["seed"] = seed
    extra["device"] = device
    if resume and not data and not overrides:
        # the run folder remembers its settings; only the step cap and the device may change
        cfg = dataclasses.replace(saved_config(run_dir), **{k: v for k, v in extra.items() if k in ("steps", "device")})
    else:
        cfg = DetectTrainConfig.from_overrides(extra)

    def progress(step: int, total: int, loss: float) -> None:
        if not quiet and (step % 10 == 0 or step == total):
            typer.echo(f"step {step}/{total} loss {loss:.3f}", err=True)

    result = train_detector(cfg, run_dir, resume=resume, progress=progress)
    if json_out:
        typer.echo(json.dumps(result, default=str))
    if not quiet:
        m = result["metrics"].get("mean_3d_R40_moderate") if result["metrics"] else None
        msg = f"{result['step']} steps; checkpoints in {run_dir}"
        if m is not None:
            msg += f"; held-out mean 3D AP (R40, moderate) {m:.1f}"
        typer.echo(msg, err=True)
