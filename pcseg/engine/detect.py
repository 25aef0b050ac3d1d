"""Detection: inference on lidar frames and the training loop of ``focals-centerpoint``.

Inference: :func:`load_frame` reads a frame (KITTI ``.bin``, or any cloud ``pcseg.io.read`` knows, with an
``intensity`` field when there is one), :func:`detect_points` runs the network and decodes boxes. A fusion model
(``model_options.fusion=true``, Focals Conv-F) also takes the frame's camera image and its lidar -> image matrix
(:func:`frame_projection`).

Training (:func:`train_detector`): optional synthetic pre-training (64-beam scenes from
``pcseg.data.detection.synthetic_scene``, or with ``synthetic_source="meshes"`` streets of CAD meshes from
``pcseg.data.street_scenes.mesh_street_scene``) then KITTI frames with the usual augmentation chain (ground-truth
sampling, flip, rotation, scaling; ``paste_occlusion`` / ``paste_far`` paste the sampled objects as the beam
would see them, ``pcseg.data.detection.gt_sampling``). Run directory conventions are those of segmentation training:
``metrics.jsonl`` (one JSON object per logged step and per validation), ``last.safetensors`` /
``best.safetensors`` (self-contained checkpoints, ``pcseg detect --model`` takes them) and
``last.state.safetensors`` (optimiser, step: what ``--resume`` needs). Batches are drawn from
``np.random.default_rng((seed, rank, step))`` so a resumed run sees the batches the uninterrupted run would
have seen. Under ``torchrun`` each process trains on its own batches with DistributedDataParallel and rank 0
validates and writes.

Explicit splits (k-fold, ``pcseg.engine.detect_folds``): ``train_frames`` names the KITTI frames to train on
(default: every frame but ``val_frames``) and ``val_scans`` holds SemanticKITTI scans out; they are validated on
the Car boxes fitted to their instances (:func:`scan_objects`: a virtual camera, difficulty from distance), both
as recorded and turned around, and may not be in ``gt_scans``.

Fusion training reads ``image_2/<frame>.png`` beside the scans. Training frames without an image are *left out*
(logged, and listed in the card), not given zero image features: at inference a fusion model always has an
image (``pcseg detect`` refuses to run one without), and every training point is inside camera 2's view (the
``fov_only`` crop), so a frame with no image features at all is an input the model never meets in use; training
on it would only teach the importance branch and the output fusion to do without the image. A validation frame
without an image is a usage error, and synthetic pre-training (no camera) is refused for fusion models.
Ground-truth sampling pastes the objects' image crops as well (``pcseg.data.detection.augment_with_image``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from .runtime import resolve_device

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# inference
# ---------------------------------------------------------------------------------------------------------------

KITTI_SENSOR_HEIGHT = 1.73
"""Height of KITTI's Velodyne above the road (m): the frame the shipped detectors learned (ground at z = -1.73)."""


def scale_intensity(values: np.ndarray) -> np.ndarray:
    """Intensity on KITTI's 0-1 scale, whatever the sensor wrote: values already within 0-1 stay; larger ones
    are divided by the range they fit, 255 (8-bit sensors, and 8-bit values stored in 16-bit LAS fields) or
    65535 (16-bit). The range is read from the values, not the dtype: a uint16 LAS field often holds 0-255."""
    v = np.asarray(values, dtype=np.float64)
    top = float(v.max()) if len(v) else 0.0
    if top <= 1.0:
        return v.clip(0.0, 1.0)
    return (v / (255.0 if top <= 255.0 else 65535.0)).clip(0.0, 1.0)


def load_frame(path: str, data: bytes | None = None, sensor_height: float | None = None,
               model_height: float = KITTI_SENSOR_HEIGHT) -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity in the detector's frame. ``.bin`` (or stdin bytes) is a KITTI scan; other
    formats go through ``pcseg.io.read``, intensity rescaled by :func:`scale_intensity` (0 without one).

    The frame must be the sensor's (origin at the lidar, x forward, z up). ``sensor_height``: the lidar's height
    above the ground in this frame; z is shifted so that the ground sits where the model learned it
    (``-model_height``). Undo the shift on the boxes with :func:`frame_shift`."""
    if data is not None or path.lower().endswith(".bin"):
        from ..io.kitti import read_velodyne

        points = read_velodyne(data if data is not None else path)
    else:
        from ..io import read

        cloud = read(path)
        inten = cloud.fields.get("intensity")
        inten = np.zeros(len(cloud)) if inten is None else scale_intensity(inten)
        points = np.concatenate([cloud.xyz, inten[:, None]], 1).astype(np.float32)
    points[:, 2] += frame_shift(sensor_height, model_height)
    return points


def frame_shift(sensor_height: float | None, model_height: float = KITTI_SENSOR_HEIGHT) -> float:
    """What :func:`load_frame` adds to z (boxes found in the shifted frame are moved back by it)."""
    if sensor_height is None:
        return 0.0
    if not 0.0 < sensor_height < 100.0:
        raise UsageError(f"--sensor-height is the lidar's height above the ground in metres, not {sensor_height}")
    return float(sensor_height - model_height)


def load_detector(name_or_path: str, device: str = "cpu"):
    """(model in eval mode, card) from a shipped model name (checksum verified) or a checkpoint file."""
    from ..models import zoo

    ckpt = zoo.load(name_or_path, device=device)
    if ckpt.card.get("task") != "detect":
        raise UsageError(f"{name_or_path} is not a detection model (task {ckpt.card.get('task', 'segment')!r})")
    return ckpt.model, ckpt.card


def frame_projection(calib, undo: np.ndarray | None = None) -> np.ndarray:
    """(3, 4) lidar -> image 2 matrix of a ``pcseg.io.kitti.Calibration`` (``undo``: see
    ``pcseg.geometry.camera.lidar_to_image_matrix``)."""
    from ..geometry.camera import lidar_to_image_matrix

    return lidar_to_image_matrix(calib.P2, calib.R0_rect, calib.Tr_velo_to_cam, undo)


@torch.no_grad()
def detect_points(model, points: np.ndarray, score_thresh: float = 0.3, device: str | None = None,
                  image: np.ndarray | None = None, calib=None):
    """Boxes of one frame (``Detections`` with lidar-frame boxes). A fusion model also needs the frame's
    (H, W, 3) uint8 ``image`` and its ``calib`` (``pcseg.io.kitti.Calibration``)."""
    dev = device or next(model.parameters()).device
    pts = torch.from_numpy(np.ascontiguousarray(points[:, : model.in_features], dtype=np.float32)).to(dev)
    if not model.fusion:
        return model.decode(model([pts]), score_thresh=score_thresh)[0]
    if image is None or calib is None:
        raise UsageError("this model fuses camera images (Focals Conv-F): give the frame's image and calibration")
    out = model([pts], [torch.from_numpy(np.ascontiguousarray(image))], [torch.from_numpy(frame_projection(calib))])
    return model.decode(out, score_thresh=score_thresh)[0]


# ---------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------

SYNTHETIC_SOURCES = ("boxes", "meshes")


@dataclass
class DetectTrainConfig:
    """A detection run. ``kitti``: a KITTI ``training/`` folder; ``val_frames`` are held out of training."""

    kitti: str | None = None
    val_frames: list[str] = field(default_factory=lambda: ["004139"])
    preset: str = "cpu"               # range and voxel size: "cpu" (coarse, fast) or "kitti" (0.05 m voxels)
    model_options: dict = field(default_factory=dict)   # builder options; they win over the preset
    synthetic_steps: int = 0          # pre-training steps on synthetic scenes
    steps: int = 1000                 # steps on KITTI frames (after pre-training)
    batch_size: int = 2
    lr: float = 3e-3
    weight_decay: float = 0.01
    grad_clip: float = 10.0
    gt_sampling: bool = True
    gt_scans: list[str] = field(default_factory=list)  # SemanticKITTI scans (.bin) whose cars join the gt database
    scan_frames: bool = False         # the gt_scans also train as whole frames, front and rear half (Car labels only)
    log_every: int = 10
    val_every: int = 100
    checkpoint_every: int = 50
    time_limit: float | None = None   # seconds; the run stops cleanly (checkpoint written) when reached
    seed: int = 0
    device: str = "auto"
    init: str | None = None           # start from these weights (e.g. a pre-trained checkpoint); model_options
    #                                   then may only add layers (iou_head=true), which start fresh
    train_frames: list[str] | None = None  # KITTI frames to train on (None: every frame of `kitti` but val_frames)
    val_scans: list[str] = field(default_factory=list)  # SemanticKITTI scans held out: validated on the Car boxes
    #                                   fitted to their instances (not annotated); never in gt_scans
    synthetic_source: str = "boxes"   # pre-training scenes: "boxes" (detection.synthetic_scene) or "meshes" (CAD
    #                                   streets cast exactly, pcseg.data.street_scenes.mesh_street_scene)
    synthetic_cad: str | None = None  # the CAD folder of "meshes" (default $PCSEG_SHARED_DATA/cad, ../shared/data/cad)
    paste_occlusion: bool = False     # ground-truth sampling pastes objects as the beam sees them (hidden parts
    #                                   dropped, what they hide removed: detection.visible_paste)
    paste_far: float = 0.0            # share of the pasted objects moved to paste_far_range metres, thinned there
    paste_far_range: list[float] = field(default_factory=lambda: [40.0, 62.0])  # inside the cpu preset's 64 m

    @classmethod
    def from_overrides(cls, overrides: dict) -> "DetectTrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UsageError(f"unknown detection setting {', '.join(unknown)}; settings: {', '.join(sorted(known))}")
        cfg = cls(**overrides)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Refuse settings that cannot run (one line each)."""
        if self.synthetic_source not in SYNTHETIC_SOURCES:
            raise UsageError(f"synthetic_source must be one of {', '.join(SYNTHETIC_SOURCES)}, not "
                             f"{self.synthetic_source!r}")
        if not 0.0 <= float(self.paste_far) <= 1.0:
            raise UsageError(f"paste_far is a share of the pasted objects, in [0, 1], not {self.paste_far}")
        if len(self.paste_far_range) != 2 or not 0 < self.paste_far_range[0] <= self.paste_far_range[1]:
            raise UsageError(f"paste_far_range is [near, far] metres, not {self.paste_far_range}")

    @property
    def paste(self) -> dict:
        """The ground-truth sampling options (``pcseg.data.detection.gt_sampling``); empty: the default paste."""
        if not self.paste_occlusion and not self.paste_far:
            return {}
        return {"occlusion": bool(self.paste_occlusion), "far_share": float(self.paste_far),
                "far_range": tuple(float(v) for v in self.paste_far_range)}

    @property
    def total_steps(self) -> int:
        return self.synthetic_steps + self.steps


def _labels(names: list[str], classes: list[str]) -> np.ndarray:
    return np.array([classes.index(n) if n in classes else -1 for n in names], dtype=np.int64)


@dataclass
class _ScanFrame:
    """A SemanticKITTI scan as a training frame: Car boxes only, the unboxed objects' points removed."""

    points: np.ndarray
    boxes: np.ndarray
    names: list[str]
    source: str = ""                  # the scan's frame id (``semantickitti:<sequence>/<scan>``)


def _scan_frames(scans: list[str], fusion: bool) -> list[_ScanFrame]:
    """Each scan twice: as recorded and turned around (its rear half in the detector's x >= 0 range)."""
    from ..data.detection import semantickitti_objects, turned_around

    if fusion:
        raise UsageError("scan_frames: SemanticKITTI scans have no camera image; a fusion model cannot train on them")
    if not scans:
        raise UsageError("scan_frames=true needs SemanticKITTI scans in gt_scans=[...]")
    from .detect_folds import scan_frame_id

    frames = []
    for scan in scans:
        points, boxes, names = semantickitti_objects(scan)
        fid = scan_frame_id(scan)
        frames.append(_ScanFrame(points, boxes, names, fid))
        frames.append(_ScanFrame(*turned_around(points, boxes), names, fid))
    return frames


# Held-out SemanticKITTI scans. Their Car boxes are fitted to the labelled instances
# (``pcseg.data.detection.semantickitti_objects``), not annotated, and they have no camera: the KITTI evaluator
# sees them through a virtual camera whose axes are the lidar's (camera x = -lidar y, y = -z, z = x; no offset),
# which leaves every IoU as it is in the lidar frame. KITTI's difficulty needs a 2D box height, an occlusion and
# a truncation: a fitted box gets the height KITTI's camera (focal 721.5 px) would give it facing it at its
# distance (easy within about 28 m for a car, moderate and hard within about 45 m), occlusion and truncation 0
# (unknown); a box whose centre is outside the detector's x-y range gets height 0, so that it is ignored (never a
# miss), as are detections there.
SCAN_FOCAL = 721.5377


def scan_camera():
    """The virtual camera of held-out scans (see above): a ``pcseg.io.kitti.Calibration``."""
    from ..io.kitti import Calibration

    p2 = np.array([[SCAN_FOCAL, 0.0, 609.6, 0.0], [0.0, SCAN_FOCAL, 172.9, 0.0], [0.0, 0.0, 1.0, 0.0]])
    axes = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    return Calibration(p2, np.eye(3), axes)


def scan_objects(boxes, names, scores=None, point_range=None) -> list:
    """Lidar boxes of a held-out scan as ``KittiObject``s for the evaluator (virtual camera, distance-based
    difficulty, see above). ``point_range``: the detector's; boxes centred outside its x-y range are ignored."""
    from ..io.kitti import lidar_boxes_to_objects

    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    objects = lidar_boxes_to_objects(b, names, scores, scan_camera())
    dist = np.maximum(np.hypot(b[:, 0], b[:, 1]), 1.0)
    height = SCAN_FOCAL * b[:, 5] / dist
    if point_range is not None:
        r = point_range
        inside = (b[:, 0] >= r[0]) & (b[:, 0] < r[3]) & (b[:, 1] >= r[1]) & (b[:, 1] < r[4])
        height = np.where(inside, height, 0.0)
    for o, h in zip(objects, height):
        o.bbox = np.array([0.0, 0.0, 1.0, float(h)])
        o.truncated, o.occluded = 0.0, 0
    return objects


@dataclass
class ScanEvalFrame:
    """One half of a held-out SemanticKITTI scan (``half`` "front": as recorded; "rear": turned around, its rear
    half in the detector's x >= 0 range), with its fitted Car boxes."""

    frame_id: str                     # the scan's frame id (``semantickitti:<sequence>/<scan>``)
    half: str
    points: np.ndarray
    boxes: np.ndarray
    names: list[str]
    image: None = None

    @property
    def eval_id(self) -> str:
        return f"{self.frame_id}#{self.half}"

    @property
    def calib(self):
        return scan_camera()


def scan_eval_frames(scans: list[str]) -> list[ScanEvalFrame]:
    """Both halves of each held-out scan (points and boxes as :func:`pcseg.data.detection.semantickitti_objects`
    gives them: the points of unboxed objects removed, as in training)."""
    from ..data.detection import semantickitti_objects, turned_around
    from .detect_folds import scan_frame_id

    out = []
    for scan in scans:
        points, boxes, names = semantickitti_objects(scan)
        fid = scan_frame_id(scan)
        out.append(ScanEvalFrame(fid, "front", points, boxes, names))
        out.append(ScanEvalFrame(fid, "rear", *turned_around(points, boxes), names))
    return out


class _Data:
    """Training frames (KITTI in memory + GT database) and synthetic scenes, drawn per step. ``fusion``: frames
    carry their image (frames without one are left out, see the module's docstring)."""

    def __init__(self, cfg: DetectTrainConfig, fusion: bool = False):
        from ..data.detection import GtDatabase, KittiFrame, list_kitti_frames

        self.cfg, self.fusion = cfg, fusion
        self.train, self.val, self.without_image, self.val_scans = [], [], [], []
        if fusion and cfg.synthetic_steps > 0:
            raise UsageError("synthetic scenes have no camera images: train a fusion model with synthetic_steps=0")
        cfg.check()
        if fusion and cfg.paste:
            raise UsageError("paste_occlusion and paste_far move and cut the pasted objects' points, not their image "
                             "crops: a fusion model trains with the default paste")
        if cfg.synthetic_steps > 0 and cfg.synthetic_source == "meshes":
            from ..data.street_scenes import load_library

            load_library(cfg.synthetic_cad)       # read the meshes once, before the first step (and check them)
        if cfg.val_scans:
            from .detect_folds import scan_frame_id

            if fusion:
                raise UsageError("val_scans: SemanticKITTI scans have no camera image; a fusion model cannot be "
                                 "validated on them")
            shared = sorted({scan_frame_id(s) for s in cfg.val_scans} & {scan_frame_id(s) for s in cfg.gt_scans})
            if shared:
                raise UsageError(f"scan(s) {', '.join(shared)} both held out (val_scans) and trained on (gt_scans)")
            self.val_scans = scan_eval_frames(cfg.val_scans)
        if cfg.kitti is not None:
            ids = list_kitti_frames(cfg.kitti)
            missing = sorted(set(cfg.val_frames) - set(ids))
            if missing:
                raise UsageError(f"validation frame(s) {', '.join(missing)} not in {cfg.kitti}")
            if cfg.train_frames is not None:
                missing = sorted(set(cfg.train_frames) - set(ids))
                if missing:
                    raise UsageError(f"training frame(s) {', '.join(missing)} not in {cfg.kitti}")
                both = sorted(set(cfg.train_frames) & set(cfg.val_frames))
                if both:
                    raise UsageError(f"frame(s) {', '.join(both)} both in train_frames and val_frames")
                ids = [fid for fid in ids if fid in set(cfg.train_frames) | set(cfg.val_frames)]
            for fid in ids:
                # KITTI labels only what camera 2 sees: train on that part so unlabelled objects are no negatives
                frame = KittiFrame.load(cfg.kitti, fid, fov_only=True, image=fusion)
                if fusion and frame.image is None:
                    if fid in cfg.val_frames:
                        raise UsageError(f"validation frame {fid} has no image_2/{fid}.png, which a fusion model "
                                         "needs: choose --val among the frames with an image")
                    self.without_image.append(fid)
                    continue
                (self.val if fid in cfg.val_frames else self.train).append(frame)
            if self.without_image:
                log.warning("fusion: %d frame(s) without image_2/<frame>.png left out: %s", len(self.without_image),
                            ", ".join(self.without_image))
            if not self.train and cfg.steps > 0 and fusion:
                raise UsageError(f"no training frames with an image_2/<frame>.png in {cfg.kitti} once "
                                 f"{', '.join(cfg.val_frames)} are held out")
            if not self.train and cfg.steps > 0:
                raise UsageError(f"no training frames left in {cfg.kitti} once {', '.join(cfg.val_frames)} are held out")
            self.database = GtDatabase.from_frames(self.train, scans=cfg.gt_scans) if cfg.gt_sampling else None
            if cfg.scan_frames:
                self.train += _scan_frames(cfg.gt_scans, fusion)
        elif cfg.steps > 0:
            raise UsageError("training on KITTI needs a KITTI training/ folder (kitti=...)")

    def batch(self, step: int, rank: int = 0):
        """Per frame (points, boxes, names, image, lidar -> image matrix); the last two are None without fusion."""
        from ..data.detection import augment, augment_with_image, synthetic_scene

        rng = np.random.default_rng((self.cfg.seed, rank, step))
        out = []
        for _ in range(self.cfg.batch_size):
            if step < self.cfg.synthetic_steps:
                if self.cfg.synthetic_source == "meshes":
                    from ..data.street_scenes import mesh_street_scene

                    pts, boxes, names = mesh_street_scene(rng, cad=self.cfg.synthetic_cad)
                else:
                    pts, boxes, names = synthetic_scene(rng)
                pts, boxes, names = augment(pts, boxes, names, rng)
                out.append((pts, boxes, list(names), None, None))
                continue
            f = self.train[int(rng.integers(len(self.train)))]
            if self.fusion:
                pts, boxes, names, image, undo = augment_with_image(f.points, f.boxes, f.names, f.image, rng,
                                                                    self.database)
                out.append((pts, boxes, names, image, frame_projection(f.calib, undo)))
            else:
                pts, boxes, names = augment(f.points, f.boxes, f.names, rng, self.database, paste=self.cfg.paste)
                out.append((pts, boxes, list(names), None, None))
        return out


def _card(model, cfg: DetectTrainConfig, data: _Data, step: int, metrics: dict | None) -> dict:
    from .train import portable_card, portable_path  # (not at import: `pcseg detect` needs none of the training stack)

    return portable_card({  # no folder of the machine it was trained on (the KITTI data folder)
        "model": "focals-centerpoint", "task": "detect", "classes": {"names": model.class_names},
        "point_range": model.point_range, "voxel_size": model.voxel_size,
        "training": {"kitti_frames": [f.frame_id for f in data.train if not isinstance(f, _ScanFrame)],
                     "held_out": [f.frame_id for f in data.val],
                     **({"held_out_scans": [f"{portable_path(s)} (Car boxes fitted to its instances, not annotated)"
                                            for s in cfg.val_scans]} if cfg.val_scans else {}),
                     **({"scan_frames": [f"{portable_path(s)} (front and turned around)" for s in cfg.gt_scans]}
                        if cfg.scan_frames else {}),
                     **({"left_out_without_image": data.without_image} if data.without_image else {}),
                     "synthetic_steps": cfg.synthetic_steps, "steps": step, "config": dataclasses.asdict(cfg)},
        "metrics": metrics or {}})


def predict_frames(model, frames, score_thresh: float = 0.1) -> tuple[dict, dict]:
    """(predictions, labels): evaluation id -> ``KittiObject``s in the camera frame, for ``KittiFrame``s (the
    detections inside camera 2's view) and :class:`ScanEvalFrame`s (Car detections only: the scans' other
    classes have no boxes; the virtual camera and difficulty of :func:`scan_objects`)."""
    from ..io.kitti import lidar_boxes_to_objects

    was = model.training
    model.eval()
    pred, truth = {}, {}
    for f in frames:
        if isinstance(f, ScanEvalFrame):
            det = detect_points(model, f.points, score_thresh)
            det = det.subset(np.array([n == "Car" for n in det.names], dtype=bool))
            pred[f.eval_id] = scan_objects(det.boxes, det.names, det.scores, model.point_range)
            truth[f.eval_id] = scan_objects(f.boxes, f.names, None, model.point_range)
            continue
        det = detect_points(model, f.points, score_thresh, image=f.image, calib=f.calib)
        det = det.subset(f.calib.fov_mask(det.boxes[:, :3]) if len(det) else np.zeros(0, bool))
        pred[f.frame_id] = lidar_boxes_to_objects(det.boxes, det.names, det.scores, f.calib)
        truth[f.frame_id] = f.objects
    model.train(was)
    return pred, truth


def evaluate_frames(model, frames, score_thresh: float = 0.1, min_overlap: dict | None = None) -> dict:
    """KITTI AP (``pcseg.engine.detection_eval.evaluate``) of the model on ``KittiFrame``s (and held-out scans,
    :class:`ScanEvalFrame`); with ``min_overlap="both"`` the benchmark's overlaps and, under ``"loose"``, the
    devkit's looser set."""
    from ..engine.detection_eval import LOOSE_OVERLAP, evaluate

    pred, truth = predict_frames(model, frames, score_thresh)
    if min_overlap == "both":
        return {**evaluate(pred, truth), "loose": evaluate(pred, truth, min_overlap=LOOSE_OVERLAP)}
    return evaluate(pred, truth, min_overlap=min_overlap)


def summary(result: dict) -> dict:
    """Moderate AP (R40) per class and metric, and their mean over classes with ground truth (the 'best' key)."""
    out, means = {}, []
    for cls, entry in result["classes"].items():
        for metric in ("bev", "3d"):
            v = entry[metric]["R40"]["moderate"]
            out[f"{cls}_{metric}_R40_moderate"] = v
            if v is not None and metric == "3d":
                means.append(v)
    out["mean_3d_R40_moderate"] = float(np.mean(means)) if means else None
    for cls, entry in result.get("loose", {}).get("classes", {}).items():  # Car at IoU 0.5, the others at 0.25
        iou = result["loose"]["min_overlap"][cls]
        for metric in ("bev", "3d"):
            out[f"{cls}_{metric}_R40_moderate_iou{iou:g}"] = entry[metric]["R40"]["moderate"]
    return out


def saved_config(run_dir: str | Path) -> DetectTrainConfig:
    """The configuration a run was started with (for ``--resume`` without settings)."""
    from ..models.checkpoint import load_state

    return DetectTrainConfig(**json.loads(load_state(Path(run_dir) / "last.state.safetensors")["config"]))


def one_cycle(lr: float, frac: float, warmup: float = 0.05) -> float:
    """One-cycle learning rate (OpenPCDet's adam_onecycle shape): linear warm-up from lr/10, cosine to lr/100."""
    if frac < warmup:
        return lr * (0.1 + 0.9 * frac / warmup)
    t = (frac - warmup) / (1 - warmup)
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def _with_options(model, options: dict):
    """``model`` rebuilt with builder ``options`` on top of its own configuration, its weights carried over. Only
    options that add layers (``iou_head=true``: the IoU head starts fresh) are possible; one that changes or
    removes a trained layer is refused in one line."""
    from ..models import build

    new = build("focals-centerpoint", **{**model.config(), **options})
    try:
        missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    except RuntimeError:  # a shape differs
        missing, unexpected = [], ["a layer's shape"]
    if unexpected:
        raise UsageError(f"model_options {options} change the init model ({unexpected[0]}): with init they may only "
                         "add layers, such as iou_head=true")
    log.info("init model extended with %s: %d new tensors start fresh", options, len(missing))
    return new


def train_detector(cfg: DetectTrainConfig, run_dir: str | Path, resume: bool = False, progress=None) -> dict:
    """Train; returns the final metrics. ``progress(step, total, loss)`` is called after each step."""
    from ..models import build, count_params
    from ..models.checkpoint import load_checkpoint, load_state, save_checkpoint, save_state

    from .train import init_distributed

    run = Path(run_dir)
    if run.exists() and any(run.iterdir()) and not resume:
        raise UsageError(f"run folder {run} is not empty: pass --resume to continue it or choose another folder")
    device = resolve_device(cfg.device)          # auto: CUDA when available
    distr = init_distributed(device)              # torchrun: one process per device, rank 0 writes
    if distr.world > 1:
        import torch.distributed as dist

        dist.barrier()                            # every rank has checked the folder before rank 0 writes
    if device.startswith("cuda") and distr.world > 1:
        device = f"cuda:{distr.local_rank}"
    dev = torch.device(device)
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if cfg.init is not None:
        model = load_detector(cfg.init)[0]
        if cfg.model_options:
            model = _with_options(model, cfg.model_options)
    else:
        from ..models.detector import PRESETS

        if cfg.preset not in PRESETS:
            raise UsageError(f"unknown detection preset {cfg.preset!r}; presets: {', '.join(PRESETS)}")
        model = build("focals-centerpoint", **{**PRESETS[cfg.preset], **cfg.model_options})
    data = _Data(cfg, model.fusion)
    model.to(dev).train()
    net = model
    if distr.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = max(cfg.total_steps, 1)
    step, best, spent = 0, -math.inf, 0.0
    if resume and (run / "last.state.safetensors").is_file():
        state = load_state(run / "last.state.safetensors")
        model.load_state_dict(load_checkpoint(run / "last.safetensors").model.state_dict())
        model.to(dev).train()
        opt.load_state_dict(state["optimizer"])
        step, best, spent = int(state["step"]), float(state["best"]), float(state["seconds"])
    metrics_file = open(run / "metrics.jsonl", "a") if distr.main else None
    log.info("focals-centerpoint: %d parameters, %d steps", count_params(model), total)
    start, metrics = time.time() - spent, {}

    def progress_fraction() -> float:
        """How far the run is: by steps, or by time when a time limit comes first."""
        frac = step / total
        if cfg.time_limit:
            frac = max(frac, (time.time() - start) / cfg.time_limit)
        return min(frac, 1.0)

    def save(which: str, metrics: dict) -> None:
        save_checkpoint(run / f"{which}.safetensors", model, _card(model, cfg, data, step, metrics))

    try:
        while step < total:
            batch = data.batch(step, distr.rank)
            pts = [torch.from_numpy(p[:, : model.in_features]).to(dev) for p, *_ in batch]
            boxes = [torch.from_numpy(np.asarray(b, np.float32)).to(dev) for _, b, *_ in batch]
            labels = [torch.from_numpy(_labels(n, model.class_names)).to(dev) for _, _, n, *_ in batch]
            # a fusion model also takes each frame's image and projection (undoing the augmentation, §3.3)
            camera = ([[torch.from_numpy(b[3]) for b in batch], [torch.from_numpy(b[4]) for b in batch]]
                      if model.fusion else [])
            t0 = time.time()
            lr = one_cycle(cfg.lr, progress_fraction())
            for g in opt.param_groups:
                g["lr"] = lr
            losses = model.loss(net(pts, *camera), boxes, labels)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            if progress is not None:
                progress(step, total, float(losses["total"].detach()))
            out_of_time = cfg.time_limit is not None and time.time() - start > cfg.time_limit
            if distr.world > 1:                   # all ranks stop at the same step
                flag = torch.tensor([float(out_of_time)], device=dev)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag.item())
            if not distr.main:
                if out_of_time:
                    break
                continue
            if step % cfg.log_every == 0 or step == total:
                rec = {"step": step, "phase": "synthetic" if step <= cfg.synthetic_steps else "kitti",
                       "lr": lr, "time": round(time.time() - t0, 3),
                       **{f"loss_{k}": round(float(v.detach()), 5) for k, v in losses.items()}}
                metrics_file.write(json.dumps(rec) + "\n")
                metrics_file.flush()
            validate = (data.val or data.val_scans) and step > cfg.synthetic_steps and (
                step % cfg.val_every == 0 or step == total or out_of_time)
            if validate:
                metrics = summary(evaluate_frames(model, data.val + data.val_scans, min_overlap="both"))
                metrics_file.write(json.dumps({"step": step, "val": metrics}) + "\n")
                metrics_file.flush()
                score = metrics["mean_3d_R40_moderate"]
                if score is not None and score > best:
                    best = score
                    save("best", metrics)
            if step % cfg.checkpoint_every == 0 or step == total or out_of_time:
                save("last", metrics)
                save_state(run / "last.state.safetensors", {"optimizer": opt.state_dict(), "step": step,
                                                             "best": best, "seconds": time.time() - start,
                                                             "config": json.dumps(dataclasses.asdict(cfg))})
            if out_of_time:
                log.info("time limit reached at step %d", step)
                break
    finally:
        if metrics_file is not None:
            metrics_file.close()
    if distr.main and not (run / "best.safetensors").exists() and (run / "last.safetensors").exists():
        # no validation frames (or nothing scored): the last weights are the best we know
        (run / "best.safetensors").write_bytes((run / "last.safetensors").read_bytes())
    return {"step": step, "metrics": metrics}
