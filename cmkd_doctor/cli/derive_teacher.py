"""``cmkd-doctor derive-teacher``: a modality-general, -specific or random teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cmkd_doctor import curves
from cmkd_doctor.classifiers import TrainOptions
from cmkd_doctor.cli import render
from cmkd_doctor.cli._common import print_json, progress_bars
from cmkd_doctor.cli.options import (
    DEFAULT_RUN,
    BatchSize,
    ChunkRows,
    Device,
    Epochs,
    Hidden,
    JsonOutput,
    Lr,
    Patience,
    Quiet,
    RunOption,
    Tensorboard,
)
from cmkd_doctor.derive import derive
from cmkd_doctor.teachers import FILLS, MODES, TeacherSpec


def derive_teacher_command(
    run_dir: RunOption = DEFAULT_RUN,
    mode: Annotated[str, typer.Option(help=MODES.describe() + ".")] = "general",
    ratio: Annotated[float, typer.Option(help="Fraction r of channels to nullify, in (0, "
                                         "1); exactly round(r * d) are.")] = 0.5,
    fill: Annotated[str, typer.Option(help="A nullified channel becomes " + FILLS.describe()
                                      + ".")] = "mean",
    source: Annotated[str, typer.Option(
        "--from", help="The teacher to mask: trained (a regular teacher trained on modality "
                       "a with CE, cached in the run), aligned (rank's f1), or a checkpoint "
                       "path.")] = "trained",
    teacher: Annotated[str | None, typer.Option(
        help="A user checkpoint to mask: a cmkd-doctor .safetensors or any .onnx model "
             "mapping features (n, d) to logits (same as --from PATH).")] = None,
    refit: Annotated[bool, typer.Option(help="Retrain the teacher on the masked features "
                                        "instead of only masking (paper Sec. 5.1).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of random masks and of training.")] = 0,
    export: Annotated[Path | None, typer.Option(
        "--export-onnx", help="Also write the derived teacher, mask baked in, as ONNX (with "
                              "--model: the masked whole network; required then).")
    ] = None,
    model: Annotated[Path | None, typer.Option(
        help="Your whole teacher as ONNX (raw input -> logits): the mask goes inside it, "
             "after --layer, the tensor whose features were extracted and ranked "
             "(paper App. B.4).")] = None,
    layer: Annotated[str | None, typer.Option(
        help="With --model: the tensor the ranked features were taken from.")] = None,
    channel_axis: Annotated[int, typer.Option(
        help="With --model: the layer's channel axis (spatial axes broadcast).")] = 1,
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

    Writes RUN/teachers/<mode>-r<ratio>[...].safetensors and a JSON sidecar (mask, fill
    values, source, test metrics). Saved teachers are reused when their options match.
    """
    spec = TeacherSpec.given(mode, ratio, fill, source, teacher, refit, seed)
    if model is not None or layer is not None:
        _whole_network(run_dir, model, layer, spec, export, channel_axis, json_output,
                       quiet)
        return
    train = TrainOptions(hidden=hidden, epochs=epochs, batch_size=batch_size, lr=lr,
                         patience=patience, chunk_rows=chunk_rows)
    with curves.tensorboard(tensorboard), progress_bars(quiet or json_output) as progress:
        found = derive(run_dir, spec, train, device, export, progress)
    if json_output:
        print_json(found.to_dict(export))
    elif not quiet:
        render.derived(found, export)


def _whole_network(run_dir: Path, model: Path | None, layer: str | None, spec: TeacherSpec,
                   export: Path | None, channel_axis: int, json_output: bool,
                   quiet: bool) -> None:
    from cmkd_doctor.networks import derive_onnx_network
    from cmkd_doctor.schemas import stamp

    found = derive_onnx_network(run_dir, model, layer, spec, export, channel_axis)
    if json_output:
        print_json(stamp("network", found))
    elif not quiet:
        render.line(f"wrote {found['onnx']}: {model} with {len(found['nullified'])} of "
                    f"{found['n_channels']} channels of {layer} nullified ({spec.mode}, "
                    f"r = {spec.ratio:g}, filled with their {spec.fill})")
