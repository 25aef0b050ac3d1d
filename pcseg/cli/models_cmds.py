"""`pcseg models ...`: networks in the registry and (later) shipped checkpoints."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import typer

from ..errors import BadInputError, UsageError
from .common import parse_key_values

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CLOUD = REPO_ROOT / "examples" / "ign_lidarhd_77060_627760.laz"


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="Networks and shipped models.", no_args_is_help=True)
    app.add_typer(models, name="models")

    @models.command("describe")
    def describe(
        name: str = typer.Argument(..., help="registered network, e.g. kpfcnn, kpcnn, salanet"),
        classes: int = typer.Option(..., "--classes", help="number of output classes"),
        in_features: int = typer.Option(..., "--in-features", help="number of input features per point"),
        points: int = typer.Option(15000, "--points", help="points of the real cloud fed to one forward pass"),
        deformable: Optional[bool] = typer.Option(None, "--deformable/--rigid", help="KPConv kernels"),
        width: Optional[int] = typer.Option(None, "--width", help="first-stage width C"),
        groups: Optional[int] = typer.Option(None, "--groups", help="SALA groups S"),
        reduction: Optional[str] = typer.Option(None, "--reduction", help="SALA reduction: max or sum"),
        assignment: Optional[str] = typer.Option(None, "--assignment", help="SALA assignment: soft, hard or none"),
        pos_encoding: Optional[bool] = typer.Option(None, "--pos-encoding/--no-pos-encoding"),
        option: list[str] = typer.Option([], "--option", help="any other builder option as key=value"),
        input: Optional[Path] = typer.Option(None, "--input", help="real cloud to count MACs on (default: the shipped example)"),
        json_out: bool = typer.Option(False, "--json", help="print {params, macs, ...} as JSON"),
    ):
        """Parameters and multiply-accumulates of a network on P points of a real cloud."""
        from ..engine.describe import describe_network

        opts = {k: v for k, v in dict(deformable=deformable, width=width, groups=groups, reduction=reduction,
                                      assignment=assignment, pos_encoding=pos_encoding).items() if v is not None}
        opts.update(parse_key_values(option))
        cloud_path = input or EXAMPLE_CLOUD
        if not cloud_path.exists():
            raise UsageError(f"no example cloud at {cloud_path}; pass --input FILE")
        result = describe_network(name, classes, in_features, opts, str(cloud_path), points)
        if json_out:
            typer.echo(json.dumps(result))
        else:
            typer.echo(f"{name}: {result['params']:,} parameters, {result['macs'] / 1e9:.2f} GMACs on "
                       f"{result['points']:,} points of {Path(result['cloud']).name}")

    @models.command("list")
    def list_models(json_out: bool = typer.Option(False, "--json", help="a JSON list of objects, with every file")):
        """Shipped models: name, task, network, parameters, classes, the data sets they were trained on and
        their headline quality."""
        import shutil

        from ..models.zoo import shipped

        rows = []
        for name, card in shipped().items():
            # a detector's card names its KITTI frames and scans under training / quality
            training = card.get("training", {})
            trained_on = card.get("trained_on") or ([f"KITTI {f}" for f in training.get("kitti_frames", [])]
                                                    + list(training.get("scan_frames", [])) or None)
            measured_on = card.get("measured_on") or (
                [f"KITTI {f}" for f in card.get("quality", {}).get("frames", [])] or None)
            rows.append({"name": name, "task": card.get("task", "segment"), "model": card.get("model"),
                         "classes": card.get("classes", {}).get("names", card.get("class_names", [])),
                         "params": card.get("params"), "trained_on": trained_on,
                         "measured_on": measured_on, "size_bytes": card.get("size_bytes"),
                         "data_sets": data_sets(trained_on or []),
                         "headline": headline(card, trained_on or [], measured_on or []),
                         "quality": card.get("quality")})
        if json_out:
            typer.echo(json.dumps(rows))
            return
        if not rows:
            typer.echo("no shipped models")
            return
        typer.echo("\n".join(models_table(rows, shutil.get_terminal_size((80, 24)).columns)))

    @models.command("average")
    def average_models(
        checkpoints: list[Path] = typer.Argument(..., help="checkpoints of one network (e.g. fine-tunings of the same model with other seeds)"),
        output: Path = typer.Option(..., "--output", "-o", help="the averaged checkpoint (.safetensors)"),
    ):
        """Average the weights of checkpoints of one network (a model soup) into one checkpoint."""
        from ..models.checkpoint import average_checkpoints, save_checkpoint

        for p in checkpoints:
            if not p.is_file():
                raise BadInputError("no such checkpoint", str(p))
            if p.resolve() == output.resolve():
                raise UsageError(f"--output {output} is one of the inputs; write the average to another file")
        ck = average_checkpoints([str(p) for p in checkpoints])
        save_checkpoint(output, ck.model, ck.card)
        typer.echo(f"averaged {len(checkpoints)} checkpoints of {ck.card['model']} into {output}", err=True)

    @models.command("info")
    def info_model(
        model: str = typer.Argument(..., help="shipped model name or checkpoint path"),
        json_out: bool = typer.Option(False, "--json", help="print the whole card as JSON"),
    ):
        """The card of a shipped model or checkpoint: network, options, classes, features, metrics, data."""
        from ..models.zoo import resolve

        _, card, _ = resolve(model)
        if json_out:
            typer.echo(json.dumps(card))
            return
        for key in ("name", "task", "model", "params", "features", "dl0", "sphere_radius", "trained_on",
                    "measured_on", "teacher"):
            if key in card:
                typer.echo(f"{key:>14}: {card[key]}")
        if "classes" in card:
            typer.echo(f"{'classes':>14}: {', '.join(card['classes']['names'])}")
        for key in ("metrics", "quality"):
            if key in card:
                typer.echo(f"{key:>14}: {json.dumps(card[key])}")


# Data sets by file name (lower-cased), first match wins: the names of ../shared/data/README.md's sources.
_DATA_SETS = (
    (("semantickitti",), "SemanticKITTI"), (("kitti",), "KITTI"),
    (("la93_ign69", "ign_"), "IGN LiDAR HD"), (("ahn3",), "AHN3"),
    (("autzen", "sample_c", "mvk-thin", "warsaw_small", "pdal_"), "PDAL samples"),
    (("bcts_", "lidr_"), "lidR/lasR forest"), (("scannet",), "ScanNet"), (("s3dis",), "S3DIS"),
    (("synthetic:bank-rooms", "synthetic:varied-rooms", "synthetic:cad-rooms"), "synthetic rooms"),
    (("synthetic",), "synthetic scenes"),
    (("sensat",), "SensatUrban"), (("osd",), "OSD"))


def data_set(file: str) -> str:
    """The data set a training file comes from (``IGN LiDAR HD``, ``AHN3``...), else its file name."""
    low = file.lower()
    base = low.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    for words, name in _DATA_SETS:
        if any(base.startswith(w) if w.endswith("_") else w in low for w in words):
            return name
    return _key(file)


def data_sets(files: list[str]) -> dict[str, int]:
    """{data set: number of files}, in order of first appearance."""
    out: dict[str, int] = {}
    for name in map(data_set, map(str, files)):
        out[name] = out.get(name, 0) + 1
    return out


def _key(file: str) -> str:
    """A training or measuring file's name without its folder or a trailing note in brackets."""
    return re.sub(r"\s*\(.*\)$", "", str(file)).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def headline(card: dict, trained_on: list[str], measured_on: list[str]) -> str:
    """One line of the card's quality: pooled mIoU (segmentation) or Car AP (detection), and on what: files
    that also chose a recipe or a step are ``validation`` clouds, others outside training ``held-out``."""
    q = card.get("quality") or {}
    measured = {_key(f) for f in measured_on}
    if measured and measured <= {_key(f) for f in card.get("validated_on") or []}:
        kind = "validation "
    elif measured and not measured & {_key(f) for f in trained_on}:
        kind = "held-out "
    else:
        kind = ""
    n = len(measured_on)
    if card.get("task") == "detect":
        ap = (q.get("AP_R40", {}).get("Car 3d @0.5") or {}).get("moderate")
        if ap is None:
            return "not measured"
        return f"Car 3D AP {ap:.1f} (R40 moderate, IoU 0.5) on {n} {kind}KITTI frame{'s' * (n != 1)}"
    miou = (q.get("pooled") or {}).get("miou")
    if miou is None:
        return "not measured"
    votes = f", votes {q['votes']}" if "votes" in q else ""
    return f"mIoU {100 * miou:.1f} pooled over {n} {kind}cloud{'s' * (n != 1)}{votes}"


def models_table(rows: list[dict], width: int = 80) -> list[str]:
    """Lines of `pcseg models list`: one row of whole names, numbers and network per model, then what it was
    trained on and its headline quality, each line cut to ``width`` columns (never the first row's names)."""
    head = ("name", "task", "network", "params", "classes")
    cells = [(r["name"], r["task"], str(r["model"]), f"{r['params'] / 1e6:.2f} M" if r["params"] else "?",
              str(len(r["classes"]))) for r in rows]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]

    def line(values) -> str:  # text left, numbers right
        cols = (v.rjust(w) if i >= 3 else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))
        return "  ".join(cols).rstrip()

    def fit(text: str) -> str:
        return text if len(text) <= width else text[:max(width - 1, 0)] + "\u2026"

    out = [line(head)]
    for r, c in zip(rows, cells):
        sets = r["data_sets"]
        total = sum(sets.values())
        trained = f"{', '.join(sets)}: {total} cloud{'s' * (total != 1)}" if sets else "?"
        out += [line(c), fit(f"  trained on  {trained}"), fit(f"  quality     {r['headline']}")]
    return out
