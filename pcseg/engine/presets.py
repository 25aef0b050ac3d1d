"""Training presets: the papers' settings, each with where its numbers come from.

A preset is a flat dict of :class:`pcseg.engine.train.TrainConfig` fields. ``pcseg train --config NAME|FILE.toml
key=value ...`` starts from a preset (or a TOML file, which may name a ``preset`` to start from) and applies
overrides.
"""
from __future__ import annotations

# KPConv supp. A / §4.2 (KP-FCNN on scenes): SGD momentum 0.98, lr 1e-2 divided by 10 every 100 epochs, an epoch
# of 500 optimizer steps, input spheres of radius 50*dl0, batch of ~10 spheres (the deformable regularisation
# weight 0.1 of supp. A is applied inside KP-FCNN.regularization_loss). Weight decay 1e-3 and gradient-norm clipping at 100 are not in the paper
# and come from the public KPConv-PyTorch configurations.
_KPCONV_OPT = {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.98, "weight_decay": 1e-3, "lr_decay_epochs": 100,
               "grad_clip": 100.0, "steps_per_epoch": 500, "spheres_per_batch": 10}

PRESETS: dict[str, dict] = {
    "s3dis-salanet": {
        "source": "SALA §4.1 + supp. B.1: SALANet C=36, S=2, ZRGB1 input, 2 m spheres, dl0 4 cm (CloserLook3D "
                  "S3DIS framework), augmentation of supp. B.1; optimiser as KPConv supp. A (the framework SALA "
                  "trains in follows KPConv's recipe)",
        "model": "salanet", "model_options": {"width": 36, "groups": 2}, "features": ["one", "rgb", "z"],
        "dl0": 0.04, "sphere_radius": 2.0, "class_map": "s3dis", "augmentation": "sala-s3dis", **_KPCONV_OPT,
    },
    "s3dis-salanet-shape": {
        "source": "s3dis-salanet (SALA §4.1 + supp. B.1) with the indoor geometry channel of issue #28 added to "
                  "ZRGB1: |n_z|, planarity, linearity, height above the floor, depth below the ceiling, ceiling "
                  "found (pcseg.data.features, channel shape); not a paper setting (the input layer is 6 "
                  "columns wider, everything else is s3dis-salanet's)",
        "model": "salanet", "model_options": {"width": 36, "groups": 2}, "features": ["one", "rgb", "z", "shape"],
        "dl0": 0.04, "sphere_radius": 2.0, "class_map": "s3dis", "augmentation": "sala-s3dis", **_KPCONV_OPT,
    },
    "s3dis-kpfcnn": {
        "source": "KPConv §4.2 + supp. A: KP-FCNN rigid, dl0 4 cm, spheres of radius 50*dl0 = 2 m, "
                  "features 1 + RGB (KPConv feeds colour when the data has it)",
        "model": "kpfcnn", "model_options": {"deformable": False}, "features": ["one", "rgb"],
        "dl0": 0.04, "sphere_radius": 2.0, "class_map": "s3dis", "augmentation": "kpconv", **_KPCONV_OPT,
    },
    "s3dis-kpfcnn-deform": {
        "source": "KPConv §4.2 + supp. A: KP-FCNN deformable (last 5 blocks), otherwise as s3dis-kpfcnn",
        "model": "kpfcnn", "model_options": {"deformable": True}, "features": ["one", "rgb"],
        "dl0": 0.04, "sphere_radius": 2.0, "class_map": "s3dis", "augmentation": "kpconv", **_KPCONV_OPT,
    },
    "s3dis-salanet-bank": {
        "source": "s3dis-salanet (SALA §4.1 + supp. B.1: SALANet C=36, S=2, ZRGB1, 2 m spheres, dl0 4 cm) trained on "
                  "real rooms mixed with rooms furnished from the object bank of real scans (issue #16): half of "
                  "the spheres in synthetic:bank-rooms, half in the real clouds, each cloud of a group drawn "
                  "uniformly; classes read with nyu40-to-s3dis so ScanNet, S3DIS and the rooms share S3DIS ids. "
                  "Data on the command line, e.g. -d ../shared/data/indoor/scannet_scene0000_00.ply "
                  "-d ../shared/data/indoor/scannet_scene0000_01.ply -d synthetic:bank-rooms:32 "
                  "--val ../shared/data/indoor/scannet_scene0000_02.ply (a rescan of the training room: it "
                  "overstates quality). Colour is dropped on half of the spheres (supp. B.1 drops it on 20%) so "
                  "that one model also reads indoor lidar without colour",
        "model": "salanet", "model_options": {"width": 36, "groups": 2}, "features": ["one", "rgb", "z"],
        "dl0": 0.04, "sphere_radius": 2.0, "class_map": "nyu40-to-s3dis", "augmentation": "sala-s3dis",
        "color_drop": 0.5, "per_cloud": True, "synthetic_share": 0.5, **_KPCONV_OPT,
    },
    "s3dis-salanet-bank-xyz": {
        "source": "s3dis-salanet-bank without colour, for indoor lidar scans that store none: features 1 + "
                  "height above the cloud's lowest point (the floor of a room), x, y, z only",
        "model": "salanet", "model_options": {"width": 36, "groups": 2}, "features": ["one", "z"],
        "dl0": 0.04, "sphere_radius": 2.0, "class_map": "nyu40-to-s3dis", "augmentation": "sala-s3dis",
        "per_cloud": True, "synthetic_share": 0.5, **_KPCONV_OPT,
    },
    "als-kpfcnn": {
        "source": "KPConv on outdoor scans (§4.2 Semantic3D/Paris-Lille: dl0 6 cm, 3 m spheres) scaled to "
                  "airborne lidar density (~10-40 pts/m2): dl0 0.5 m, spheres 50*dl0 = 25 m; features 1 + "
                  "intensity + height (airborne tiles often carry no colour)",
        "model": "kpfcnn", "model_options": {"deformable": False}, "features": ["one", "intensity", "z"],
        "dl0": 0.5, "sphere_radius": 25.0, "class_map": "asprs", "augmentation": "kpconv", **_KPCONV_OPT,
    },
    "als-salanet": {
        "source": "SALANet (C=36, S=2) with the airborne settings of als-kpfcnn",
        "model": "salanet", "model_options": {"width": 36, "groups": 2}, "features": ["one", "intensity", "z"],
        "dl0": 0.5, "sphere_radius": 25.0, "class_map": "asprs", "augmentation": "kpconv", **_KPCONV_OPT,
    },
    "als-salanet-tiny": {
        "source": "SALANet C=18, S=2 (SALA Table 2's 0.41 M-parameter width) with the airborne settings of "
                  "als-kpfcnn and 12 neighbours per layer (instead of ~30 calibrated): the student of "
                  "`pcseg distill` from an airborne KP-FCNN teacher (als-kpfcnn), an eighth of its parameters",
        "model": "salanet", "model_options": {"width": 18, "groups": 2}, "features": ["one", "intensity", "z"],
        "dl0": 0.5, "sphere_radius": 25.0, "class_map": "asprs", "augmentation": "kpconv",
        "neighbor_limits": [12, 12, 12, 12, 12], **_KPCONV_OPT,
    },
    "semantickitti-kpfcnn": {
        "source": "KPConv-PyTorch's SemanticKITTI setting (the paper predates the benchmark): dl0 6 cm, 4 m "
                  "spheres, features 1 + intensity; optimiser of KPConv supp. A",
        "model": "kpfcnn", "model_options": {"deformable": False}, "features": ["one", "intensity"],
        "dl0": 0.06, "sphere_radius": 4.0, "class_map": "semantickitti", "augmentation": "kpconv", **_KPCONV_OPT,
    },
    "als-salanet-xyz": {
        "source": "SALANet C=36, S=2 (SALA §3.4) on airborne lidar from any sensor: x, y, z only (features 1 + "
                  "height above two label-free ground estimates), the six classes a network can tell apart "
                  "(ground, vegetation, building, water, bridge, other; low / medium / high vegetation split by "
                  "height after prediction), dl0 0.5 m and 25 m spheres as als-kpfcnn; each sphere's tile drawn "
                  "uniformly (five decimated 1 km^2 tiles hold most of the points), a quarter of the spheres "
                  "in ground / not-ground-only files (partial labels); KPConv supp. A optimiser with 4 spheres "
                  "per batch, 12 epochs of 250 steps, learning rate divided by 10 every 5 epochs",
        "model": "salanet", "model_options": {"width": 36, "groups": 2}, "features": ["one", "hag"],
        "dl0": 0.5, "sphere_radius": 25.0, "class_map": "als", "augmentation": "kpconv",
        "per_cloud": True, **{**_KPCONV_OPT, "steps_per_epoch": 250, "spheres_per_batch": 4,
                                "lr_decay_epochs": 5}, "epochs": 12, "val_every": 4,
    },
    "als-salanet-terrain": {
        "source": "SALANet C=36, S=2 (SALA §3.4) on airborne lidar from any sensor: features 1 + height above "
                  "a 10 m opening and a progressive morphological terrain model (roofs up to 256 m wide and "
                  "roofs cut by the tile's edge stand above it) + return numbers (recorded, single, first and "
                  "last of several), the echo columns zeroed on 30% of the spheres so that x, y, z-only files "
                  "keep the model; every sphere thinned to at most 4 points/m^2 (the density a 0.5 m grid "
                  "holds on one surface; inference thins clouds to the same cap) and half of them to a density "
                  "drawn log-uniformly in 0.1-4 points/m^2 (sparse surveys inside the training distribution); "
                  "classes, dl0 0.5 m, 25 m spheres, tile sampling and optimiser of als-salanet-xyz, 12 epochs "
                  "of 250 steps, learning rate divided by 10 every 6 epochs",
        "model": "salanet", "model_options": {"width": 36, "groups": 2}, "features": ["one", "terrain", "echo"],
        "dl0": 0.5, "sphere_radius": 25.0, "class_map": "als", "augmentation": "kpconv",
        "echo_drop": 0.3, "thin_density": [0.1, 4.0], "thin_share": 0.5, "density_cap": 4.0,
        "per_cloud": True, **{**_KPCONV_OPT, "steps_per_epoch": 250, "spheres_per_batch": 4,
                                "lr_decay_epochs": 6}, "epochs": 12, "val_every": 6,
    },
    "als-salanet-xyz-tiny": {
        "source": "SALANet C=12, S=2 with 16 neighbours per layer: the student of `pcseg distill --teacher "
                  "sala-als` (x, y, z only; 187 k parameters, 8.7x fewer than the teacher; 3x its points/s on "
                  "the example); data, classes and schedule of als-salanet-xyz",
        "model": "salanet", "model_options": {"width": 12, "groups": 2}, "features": ["one", "hag"],
        "dl0": 0.5, "sphere_radius": 25.0, "class_map": "als", "augmentation": "kpconv",
        "neighbor_limits": [16, 16, 16, 16, 16],
        "per_cloud": True, **{**_KPCONV_OPT, "steps_per_epoch": 250, "spheres_per_batch": 4,
                                "lr_decay_epochs": 5}, "epochs": 12, "val_every": 4,
    },
}
