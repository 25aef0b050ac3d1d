"""`pcseg models ...`: networks in the registry and (later) shipped checkpoints."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CLOUD = REPO_ROOT / "examples" / "ign_lidarhd_77060_627760.laz"


def _parse_options(pairs: list[str]) -> dict:
    opts = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--option takes key=value, got {pair!r}")
        try:
            opts[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            opts[key.strip().replace("-", "_")] = value
    return opts


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
        opts.update(_parse_options(option))
        cloud_path = input or EXAMPLE_CLOUD
        if not cloud_path.exists():
            raise UsageError(f"no example cloud at {cloud_path}; pass --input FILE")
        result = describe_network(name, classes, in_features, opts, str(cloud_path), points)
        if json_out:
            typer.echo(json.dumps(result))
        else:
            typer.echo(f"{name}: {result['params']:,} parameters, {result['macs'] / 1e9:.2f} GMACs on "
                       f"{result['points']:,} points of {Path(result['cloud']).name}")
