"""``cmkd-doctor derive-teacher``: a modality-general, -specific or random teacher."""

from __future__ import annotations

from pathlib import Path

import typer

from cmkd_doctor.cli._common import out, print_json, progress_bars
from cmkd_doctor.cli.train_options import train_options
from cmkd_doctor.derive import derive_teacher
from cmkd_doctor.errors import InputError
from cmkd_doctor.outputs import check_out_dir
from cmkd_doctor.rundir import DEFAULT_RUN, load_run
from cmkd_doctor.runtime import resolve_device
from cmkd_doctor.teachers import FILLS, MODES, TeacherSpec, export_onnx


def derive_teacher_command(
    run_dir: Path = typer.Option(DEFAULT_RUN, "--run", help="Run directory written by rank."),
    mode: str = typer.Option("general", help="; ".join(f"{k}: {v}" for k, v in MODES.items())
                             + "."),
    ratio: float = typer.Option(0.5, help="Fraction r of channels to nullify, in (0, 1); "
                                "exactly round(r * d) are."),
    fill: str = typer.Option("mean", help="A nullified channel becomes " + "; or ".join(
        f"{k}: {v}" for k, v in FILLS.items()) + "."),
    source: str = typer.Option("trained", "--from", help="The teacher to mask: trained (a "
                               "regular teacher trained on modality a with CE, cached in the "
                               "run), aligned (rank's f1), or a checkpoint path."),
    teacher: str = typer.Option(None, help="A user checkpoint to mask: a cmkd-doctor "
                                ".safetensors or any .onnx model mapping features (n, d) to "
                                "logits (same as --from PATH)."),
    refit: bool = typer.Option(False, help="Retrain the teacher on the masked features "
                               "instead of only masking (paper Sec. 5.1)."),
    seed: int = typer.Option(0, help="Seed of random masks and of training."),
    export: Path = typer.Option(None, "--export-onnx", help="Also write the derived teacher, "
                                "mask baked in, as ONNX."),
    hidden: str = typer.Option(None, help="Teacher widths when one is trained "
                               "[default: the rank run's]."),
    epochs: int = train_options.epochs,
    batch_size: int = train_options.batch_size,
    lr: float = train_options.lr,
    patience: int = train_options.patience,
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    json_output: bool = typer.Option(False, "--json", help="Print the teacher's sidecar as one "
                                     "JSON document."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary."),
) -> None:
    """Derive a teacher from a rank run by nullifying channels (paper Sec. 5.4).

    Writes RUN/teachers/<mode>-r<ratio>[...].safetensors and a JSON sidecar (mask, fill
    values, source, test metrics). Saved teachers are reused when their options match.
    """
    if teacher is not None:
        if source != "trained":
            raise InputError("--teacher and --from both name the source; give one")
        source = teacher
    spec = TeacherSpec(mode=mode, ratio=ratio, fill=fill, source=source, refit=refit,
                       seed=seed).checked()
    train = train_options.build(hidden, epochs, batch_size, lr, patience)
    run = load_run(run_dir)
    if export is not None:
        check_out_dir(export.parent, "--export-onnx")
    dev = resolve_device(device)
    with progress_bars(quiet or json_output) as progress:
        derived = derive_teacher(run, spec, train, dev, progress=progress)
    if export is not None:
        export_onnx(derived.teacher, export, len(run.salience))
    if json_output:
        print_json({**derived.sidecar, "file": str(derived.path), "reused": derived.reused,
                    "onnx": str(export) if export else None})
        return
    if quiet:
        return
    side = derived.sidecar
    metric = next(iter(side["metrics"] or {"metric": None}))
    value = derived.test_metric
    shown = "-" if value is None else f"{100 * value:.2f}%"
    nullified = side["nullified"]
    listed = ", ".join(map(str, nullified[:20])) + (" ..." if len(nullified) > 20 else "")
    out.print(f"teacher {side['name']} ({'reused' if derived.reused else 'derived'}): "
              f"{side['mode']}, {len(nullified)} of {side['n_channels']} channels of modality "
              f"{side['modality']} nullified ({side['fill']} fill), source {side['source']}"
              f"{', refit' if side['refit'] else ''}", markup=False)
    if nullified:
        out.print(f"nullified: {listed}", markup=False)
    out.print(f"test {metric}: {shown};  wrote {derived.path}"
              + (f" and {export}" if export else ""), markup=False)
