"""Options shared by several commands, declared once as ``typing.Annotated`` aliases.

A command writes ``device: Device = "auto"``: the default stays a plain Python default,
and the help text lives here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cmkd_doctor import choices
from cmkd_doctor.io.outputs import DEFAULT_RUN

# the panels --help groups the options into, in this order where a command has them
PANELS = INPUTS, RANKING, TEACHERS, STUDENTS, TRAINING, OUTPUT = (
    "Inputs", "Ranking (Algorithm 1)", "Teachers", "Students", "Training", "Output")

Device = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.",
    rich_help_panel=TRAINING)]
Seed = Annotated[int, typer.Option(help="Seed of everything this command draws.",
    rich_help_panel=TRAINING)]
Tensorboard = Annotated[Path | None, typer.Option(
    "--tensorboard", help="Also write every network's loss curves and metrics to this "
                          "folder as TensorBoard event files (needs the tensorboard "
                          "package).",
    rich_help_panel=OUTPUT)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary.",
    rich_help_panel=OUTPUT)]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout "
                                          "instead of tables.",
    rich_help_panel=OUTPUT)]
RunOption = Annotated[Path, typer.Option("--run", help="Run directory written by rank or "
                                         "diagnose.",
    rich_help_panel=INPUTS)]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.",
    rich_help_panel=OUTPUT)]
Hidden = Annotated[str | None, typer.Option(
    help="Hidden widths: 0 for a linear model, H for Linear-ReLU-Linear, a comma list for "
         "deeper MLPs [default: the rank run's].",
    rich_help_panel=TRAINING)]
Epochs = Annotated[int | None, typer.Option(
    help=f"Most training epochs [default: {choices.EPOCHS_DEFAULT}].",
    rich_help_panel=TRAINING)]
BatchSize = Annotated[int, typer.Option(help="Minibatch size.",
    rich_help_panel=TRAINING)]
Lr = Annotated[float, typer.Option(help="Adam learning rate.",
    rich_help_panel=TRAINING)]
Patience = Annotated[int, typer.Option(help="Early stopping on a validation tenth of the "
                                       "training rows, keeping the best epoch; 0 trains all "
                                       "epochs.",
    rich_help_panel=TRAINING)]
ChunkRows = Annotated[int | None, typer.Option(
    help=f"Rows read at a time from memory-mapped .npy inputs [default: "
         f"{choices.CHUNK_ROWS_DEFAULT}].",
    rich_help_panel=TRAINING)]
# the user's whole teacher network (derive-teacher --model, distill --model)
WholeModel = Annotated[str | None, typer.Option(
    "--model", help="Your whole teacher (raw input -> logits): an .onnx model, a "
                    "torch.export program (.pt2) or an architecture name with --weights. "
                    "The mask goes inside it, after --layer, whose features were extracted "
                    "and ranked (paper App. B.4).",
    rich_help_panel=TEACHERS)]
Layer = Annotated[str | None, typer.Option(
    help="With --model: the layer the ranked features were taken from (an ONNX tensor, a "
         ".pt2 node or module path, an architecture's module).",
    rich_help_panel=TEACHERS)]
Weights = Annotated[Path | None, typer.Option(
    help="With --model NAME: its weights as .safetensors (a state dict).",
    rich_help_panel=TEACHERS)]
ChannelAxis = Annotated[int, typer.Option(
    help="With --model: the layer's channel axis (spatial axes broadcast).",
    rich_help_panel=TEACHERS)]

# where an example's published files are and come from (downloads.FetchOptions), for
# every command that reads them: diagnose --example, examples fetch, examples make avmnist
Download = Annotated[bool, typer.Option(
    "--download", help="Fetch the example's files into the data root first when they are "
                       "not there (checked against their SHA-256).",
    rich_help_panel=INPUTS)]
DataDir = Annotated[Path | None, typer.Option(
    help="Data root holding the examples' files [default: $CMKD_DOCTOR_DATA, else the "
         "cache folder].", show_default=False,
    rich_help_panel=INPUTS)]
Mirror = Annotated[str | None, typer.Option(
    help="Fetch from this http(s) URL or folder, laid out like a data root, instead of "
         "the publishers' servers [default: $CMKD_DOCTOR_MIRROR].", show_default=False,
    rich_help_panel=INPUTS)]
Timeout = Annotated[float, typer.Option(
    help="Seconds a server may take to connect or to send more of a file.",
    rich_help_panel=INPUTS)]
MaxSeeds = Annotated[int | None, typer.Option(
    help=f"With --seeds auto: the most seeds a row gets (2-{choices.SEEDS_PRACTICAL}) "
         f"[default: {choices.SEEDS_MAX}].", show_default=False,
    rich_help_panel=STUDENTS)]
SeedsBudget = Annotated[float | None, typer.Option(
    help="With --seeds auto: seconds of student training after which no look is started "
         "(estimated from the students so far) [default: no limit].", show_default=False,
    rich_help_panel=STUDENTS)]


SEEDS_HELP = (f"Student seeds per teacher: auto (start with {choices.SEEDS_START} and add "
              "seeds to the rows whose comparisons the verdict needs and cannot yet decide, "
              "up to --max-seeds, at a stricter threshold per look), or a number (every "
              "row gets that many, and a difference is clear beyond "
              f"{choices.Z:g} standard errors) [default: auto]")

__all__ = ["BatchSize", "ChannelAxis", "ChunkRows", "DEFAULT_RUN", "DataDir", "Device", "Download",
           "Epochs", "Hidden", "INPUTS", "JsonOutput", "Layer", "Lr", "MaxSeeds", "Mirror",
           "OUTPUT", "OutDir", "Patience", "Quiet", "RANKING", "RunOption", "SEEDS_HELP",
           "STUDENTS", "Seed", "SeedsBudget", "TEACHERS", "TRAINING", "Timeout", "Weights",
           "WholeModel"]
