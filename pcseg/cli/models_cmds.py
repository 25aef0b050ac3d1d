"""`pcseg models ...`: networks in the registry and (later) shipped checkpoints."""
from __future__ import annotations

import json
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
    def list_models(json_out: bool = typer.Option(False, "--json", help="a JSON list of objects")):
        """Shipped models: name, task, classes, parameters, what they were trained and measured on."""
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
                         "measured_on": measured_on, "size_bytes": card.get("size_bytes")})
        if json_out:
            typer.echo(json.dumps(rows))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(show_edge=False)
        for col in ("name", "task", "network", "classes", "params", "trained on", "measured on"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["name"], r["task"], str(r["model"]), str(len(r["classes"])),
                          f"{r['params'] / 1e6:.2f} M" if r["params"] else "?", _short(r["trained_on"]),
                          _short(r["measured_on"]))
        Console().print(table if rows else "no shipped models")

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


def _short(value) -> str:
    if value is None:
        return "?"
    text = value if isinstance(value, str) else ", ".join(map(str, value)) if isinstance(value, list) else json.dumps(value)
    return text if len(text) < 60 else text[:57] + "..."
