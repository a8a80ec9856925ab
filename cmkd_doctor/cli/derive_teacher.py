"""``cmkd-doctor derive-teacher``: a modality-general, -specific or random teacher."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cmkd_doctor.choices import FILLS, MODES
from cmkd_doctor.cli import render
from cmkd_doctor.cli._common import print_json, progress_bars
from cmkd_doctor.cli.options import (
    DEFAULT_RUN,
    OUTPUT,
    TEACHERS,
    BatchSize,
    ChannelAxis,
    ChunkRows,
    Device,
    Epochs,
    Hidden,
    JsonOutput,
    Layer,
    Lr,
    Patience,
    Quiet,
    RunOption,
    Tensorboard,
    Weights,
    WholeModel,
)
from cmkd_doctor.errors import InputError
from cmkd_doctor.training import curves

if TYPE_CHECKING:
    from cmkd_doctor.teachers.masks import TeacherSpec


# derive-teacher's own options (those several commands share are in cli.options)
Mode = Annotated[str, typer.Option(help=MODES.describe() + ".", rich_help_panel=TEACHERS)]
Ratio = Annotated[float, typer.Option(help="Fraction r of channels to nullify, in (0, 1); "
                                      "exactly round(r * d) are.", rich_help_panel=TEACHERS)]
Fill = Annotated[str, typer.Option(help="A nullified channel becomes " + FILLS.describe()
                                   + ".", rich_help_panel=TEACHERS)]
TeacherSource = Annotated[str, typer.Option(
    "--from", help="The teacher to mask: trained (a regular teacher trained on modality a "
                   "with CE, cached in the run), aligned (rank's f1), or a checkpoint path.",
    rich_help_panel=TEACHERS)]
Checkpoint = Annotated[str | None, typer.Option(
    "--teacher", help="A user checkpoint to mask: a cmkd-doctor .safetensors or any .onnx "
                      "model mapping features (n, d) to logits (same as --from PATH).",
    rich_help_panel=TEACHERS)]
Refit = Annotated[bool, typer.Option(help="Retrain the teacher on the masked features "
                                     "instead of only masking (paper Sec. 5.1).",
                                     rich_help_panel=TEACHERS)]
MaskSeed = Annotated[int, typer.Option(help="Seed of random masks and of training.",
                                       rich_help_panel=TEACHERS)]
ExportOnnx = Annotated[Path | None, typer.Option(
    "--export-onnx", help="Also write the derived teacher, mask baked in, as ONNX (with "
                          "--model: the masked whole network).",
    rich_help_panel=OUTPUT)]
ExportPt2 = Annotated[Path | None, typer.Option(
    "--export-pt2", help="With a torch --model: write the masked whole network as a "
                         "torch.export program.",
    rich_help_panel=OUTPUT)]
InputShape = Annotated[str | None, typer.Option(
    help="With --model NAME: the shape of one input, such as 3,224,224 (a .pt2 records its "
         "own).",
    rich_help_panel=TEACHERS)]


def derive_teacher_command(
    run_dir: RunOption = DEFAULT_RUN,
    mode: Mode = "general",
    ratio: Ratio = 0.5,
    fill: Fill = "mean",
    source: TeacherSource = "trained",
    teacher: Checkpoint = None,
    refit: Refit = False,
    seed: MaskSeed = 0,
    export: ExportOnnx = None,
    model: WholeModel = None,
    layer: Layer = None,
    weights: Weights = None,
    export_pt2: ExportPt2 = None,
    input_shape: InputShape = None,
    channel_axis: ChannelAxis = 1,
    hidden: Hidden = None,
    epochs: Epochs = None,
    batch_size: BatchSize = 256,
    lr: Lr = 1e-3,
    patience: Patience = 10,
    chunk_rows: ChunkRows = None,
    device: Device = "auto",
    json_output: JsonOutput = False,
    tensorboard: Tensorboard = None,
    quiet: Quiet = False,
) -> None:
    """Derive a teacher from a rank run by nullifying channels (paper Sec. 5.4).

    Writes RUN/teachers/MODE-rRATIO[...].safetensors and a JSON sidecar (mask, fill
    values, source, test metrics). Saved teachers are reused when their options match.
    With --model: your whole network, masked after --layer, at --export-onnx or
    --export-pt2, with its record (mode, ratio, layer, nullified channels, fills, run id)
    beside it as JSON and inside its metadata.
    """
    from cmkd_doctor.teachers.masks import TeacherSpec  # torch: to run, not for --help

    spec = TeacherSpec.given(mode, ratio, fill, source, teacher, refit, seed)
    if model is not None or layer is not None:
        _whole_network(run_dir, model, layer, spec, export, export_pt2, channel_axis,
                       weights, input_shape, json_output, quiet)
        return
    _refuse_whole_network_options(weights, export_pt2, input_shape, channel_axis)
    from cmkd_doctor.teachers.derivation import derive
    from cmkd_doctor.training.stacked import TrainOptions

    train = TrainOptions(hidden=hidden, epochs=epochs, batch_size=batch_size, lr=lr,
                         patience=patience, chunk_rows=chunk_rows)
    with curves.tensorboard(tensorboard), progress_bars(quiet or json_output) as progress:
        found = derive(run_dir, spec, train, device, export, progress)
    if json_output:
        print_json(found.to_dict(export))
    elif not quiet:
        render.derived(found, export)


def _refuse_whole_network_options(weights: Path | None, export_pt2: Path | None,
                                  input_shape: str | None, channel_axis: int) -> None:
    """Without --model, an option that could only act on a whole network is refused."""
    whole_only = {"--weights": weights, "--export-pt2": export_pt2,
                  "--input-shape": input_shape,
                  "--channel-axis": None if channel_axis == 1 else channel_axis}
    for name, value in whole_only.items():
        if value is not None:
            raise InputError(f"{name} {value} goes with --model (your whole network, masked "
                             "after --layer); without --model the teacher is the run's "
                             "feature-level one")


def _whole_network(run_dir: Path, model: str | None, layer: str | None, spec: TeacherSpec,
                   export: Path | None, export_pt2: Path | None, channel_axis: int,
                   weights: Path | None, input_shape: str | None, json_output: bool,
                   quiet: bool) -> None:
    from cmkd_doctor.teachers.derivation import derive_network
    from cmkd_doctor.teachers.whole_networks import parse_shape

    found = derive_network(run_dir, model, layer, spec, export, export_pt2, channel_axis,
                           weights, parse_shape(input_shape, "--input-shape"))
    if json_output:
        print_json(found)
    elif not quiet:
        files = [f for f in (found["onnx"], found["pt2"]) if f]
        records = dict.fromkeys(str(Path(f).with_suffix(".json")) for f in files)
        render.line(f"wrote {' and '.join(files)}: {model} with {len(found['nullified'])} "
                    f"of {found['n_channels']} channels of {layer} nullified ({spec.mode}, "
                    f"r = {spec.ratio:g}, filled with their {spec.fill}); its record: "
                    f"{' and '.join(records)}")
