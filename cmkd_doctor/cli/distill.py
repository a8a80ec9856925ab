"""``cmkd-doctor distill``: students taught by each teacher, compared as in Table 4."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cmkd_doctor.choices import FILLS, TEACHER_CHOICES
from cmkd_doctor.cli import render
from cmkd_doctor.cli._common import print_json, progress_bars
from cmkd_doctor.cli.options import (
    DEFAULT_RUN,
    OUTPUT,
    SEEDS_HELP,
    STUDENTS,
    TEACHERS,
    TRAINING,
    BatchSize,
    ChannelAxis,
    ChunkRows,
    Device,
    Epochs,
    Hidden,
    JsonOutput,
    Layer,
    Lr,
    MaxSeeds,
    Patience,
    Quiet,
    RunOption,
    SeedsBudget,
    Tensorboard,
    Weights,
    WholeModel,
)
from cmkd_doctor.errors import ExpectationFailed
from cmkd_doctor.training import curves

if TYPE_CHECKING:
    from cmkd_doctor.diagnosis.comparison import Comparison


# distill's own options (those several commands share are in cli.options)
TeacherList = Annotated[str, typer.Option(
    help="Teachers, comma-separated: " + ", ".join(TEACHER_CHOICES) + " (all: every mode), "
         "or a .safetensors/.onnx checkpoint used as is. No-KD and Regular-KD rows are "
         "always included.",
    rich_help_panel=TEACHERS)]
Ratios = Annotated[str, typer.Option(
    help="Nullifying ratio r in (0, 1); a comma list runs a sweep; auto searches for the "
         "sweet spot (coarse grid, then a refinement).",
    rich_help_panel=TEACHERS)]
TeacherSource = Annotated[str, typer.Option(
    "--from", help="What derived teachers mask: trained, aligned (rank's f1) or a "
                   "checkpoint path.",
    rich_help_panel=TEACHERS)]
Fill = Annotated[str, typer.Option(help="Fill of nullified channels: " + FILLS.describe()
                                   + ".", rich_help_panel=TEACHERS)]
Refit = Annotated[bool, typer.Option(help="Retrain derived teachers on their masked "
                                     "features.", rich_help_panel=TEACHERS)]
Rho = Annotated[float, typer.Option(help="Weight of the task loss in Eq. 1 (1 - rho weighs "
                                    "KD).", rich_help_panel=STUDENTS)]
Temperature = Annotated[float, typer.Option(help="KD temperature T (the paper uses 1).",
                                            rich_help_panel=STUDENTS)]
Seeds = Annotated[str, typer.Option(
    help=f"{SEEDS_HELP}. The students of every teacher train as one stacked model.",
    show_default=False, rich_help_panel=STUDENTS)]
DistillSeed = Annotated[int, typer.Option(help="Seed of student seeds, random masks and "
                                          "teachers.", rich_help_panel=TRAINING)]
Expect = Annotated[str | None, typer.Option(
    help="CI gate, e.g. 'general>regular' or 'general@0.5>=random@0.5' (exit 3 when it "
         "fails on the means), 'aligned' (exit 3 when the ranking is unreliable) or "
         "'paired' (exit 3 when the rows share nothing beyond their class).",
    rich_help_panel=OUTPUT)]
Student = Annotated[str | None, typer.Option(
    help="Students that are networks on raw modality-b rows (--student-inputs): lenet5 "
         "(images), cnn3 (spectrograms) or a torchvision/timm architecture by name. "
         "Default: MLPs of --hidden on the run's features.",
    rich_help_panel=STUDENTS)]
StudentInputs = Annotated[str | None, typer.Option(
    help="With --student: the raw modality-b rows (n x C x H x W or n x H x W; .npy, "
         ".npz[:key], .safetensors) in the rank run's row order.",
    rich_help_panel=STUDENTS)]
TeacherInputs = Annotated[str | None, typer.Option(
    help="With --model: the raw modality-a rows it reads, in the run's row order.",
    rich_help_panel=TEACHERS)]


def distill_command(
    run_dir: RunOption = DEFAULT_RUN,
    teacher: TeacherList = "all",
    ratio: Ratios = "0.5",
    source: TeacherSource = "trained",
    fill: Fill = "mean",
    refit: Refit = False,
    rho: Rho = 0.5,
    temperature: Temperature = 1.0,
    seeds: Seeds = "auto",
    max_seeds: MaxSeeds = None,
    seeds_budget: SeedsBudget = None,
    hidden: Hidden = None,
    epochs: Epochs = None,
    batch_size: BatchSize = 256,
    lr: Lr = 1e-3,
    patience: Patience = 10,
    chunk_rows: ChunkRows = None,
    device: Device = "auto",
    seed: DistillSeed = 0,
    expect: Expect = None,
    student: Student = None,
    student_inputs: StudentInputs = None,
    model: WholeModel = None,
    layer: Layer = None,
    teacher_inputs: TeacherInputs = None,
    weights: Weights = None,
    channel_axis: ChannelAxis = 1,
    json_output: JsonOutput = False,
    tensorboard: Tensorboard = None,
    quiet: Quiet = False,
) -> None:
    """Distil students from No-KD, regular and derived teachers and compare them.

    Prints the paper's Table 4 shape with a verdict, and accumulates results in
    RUN/distill.json. Exit 3 when --expect fails.
    """
    # torch: imported to run, not for --help
    from cmkd_doctor.diagnosis.distill import DistillOptions, distill
    from cmkd_doctor.teachers.whole_networks import NetworkOptions
    from cmkd_doctor.training.stacked import TrainOptions

    train = TrainOptions(hidden=hidden, epochs=epochs, batch_size=batch_size, lr=lr,
                         patience=patience, chunk_rows=chunk_rows)
    options = DistillOptions(teachers=teacher, ratios=ratio, source=source, fill=fill,
                             refit=refit, rho=rho, temperature=temperature, seeds=seeds,
                             max_seeds=max_seeds, seeds_budget=seeds_budget,
                             train=train, device=device, seed=seed,
                             networks=NetworkOptions(
                                 student, student_inputs, model, teacher_inputs, layer,
                                 None if weights is None else str(weights), channel_axis))
    options = options.checked()  # bad options before a missing run
    with curves.tensorboard(tensorboard), progress_bars(quiet or json_output) as progress:
        try:
            found = distill(run_dir, options, progress, expect=expect)
        except ExpectationFailed as failed:  # recorded: shown, then exit 3
            _show(failed.comparison, json_output, quiet)
            raise
    _show(found, json_output, quiet)


def _show(found: Comparison, json_output: bool, quiet: bool) -> None:
    if json_output:
        print_json(found.to_dict())
    elif not quiet:
        render.comparison(found)
