"""``cmkd-doctor examples``: the paper's datasets as built-in examples."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from cmkd_doctor.cli._common import out, print_json, show_help_without_command
from cmkd_doctor.datasets import DATASETS
from cmkd_doctor.gaussian import GaussianSpec, make_gaussian, write_gaussian
from cmkd_doctor.outputs import check_out_dir
from cmkd_doctor.reproduce import reproduce
from cmkd_doctor.runtime import resolve_device

app = typer.Typer(help="The paper's datasets as built-in examples.")
make_app = typer.Typer(help="Generate or build an example dataset.")
app.add_typer(make_app, name="make")
app.callback(invoke_without_command=True)(show_help_without_command)
make_app.callback(invoke_without_command=True)(show_help_without_command)

_D = GaussianSpec()


@make_app.command("gaussian")
def gaussian(
    d1: int = typer.Option(_D.d1, help="Channels of modality a."),
    d2: int = typer.Option(_D.d2, help="Channels of modality b."),
    d: int = typer.Option(_D.d, help="Dimension of the decisive vector x* (all of it sets y)."),
    j1: int = typer.Option(_D.j1, help="|J1|: decisive features copied into modality a."),
    j2: int = typer.Option(_D.j2, help="|J2|: decisive features copied into modality b."),
    shared: int = typer.Option(_D.shared, help="|J1 & J2|: the modality-general ones."),
    n_train: int = typer.Option(_D.n_train, help="Training rows."),
    n_test: int = typer.Option(_D.n_test, help="Held-out test rows."),
    seed: int = typer.Option(_D.seed, help="Seed of everything drawn."),
    delta: str = typer.Option(_D.delta, help="Hyperplane: normal (delta ~ N(0, I), "
                              "Appendix B.2) or ones (equal weights, the official Table 2 "
                              "script)."),
    out_dir: Path = typer.Option(Path("gaussian"), "--out", "-o", help="Folder to write."),
) -> None:
    """Synthetic multimodal Gaussian data (Appendix B.2, Eq. 27) with its truth.json."""
    spec = GaussianSpec(d1=d1, d2=d2, d=d, j1=j1, j2=j2, shared=shared, n_train=n_train,
                        n_test=n_test, seed=seed, delta=delta)
    check_out_dir(out_dir)
    data = make_gaussian(spec)
    write_gaussian(data, out_dir)
    t = data.truth
    out.print(f"wrote {out_dir}/: feats_a.npy {data.xa.shape}, feats_b.npy {data.xb.shape}, "
              f"labels.npy, the *_test.npy set and truth.json", markup=False)
    out.print(f"alpha {t['alpha']:.2f}, beta {t['beta']:.2f}, gamma {t['gamma']:.2f};  "
              f"modality-general channels of a: {t['channels_a']['general']}", markup=False)


@make_app.command("avmnist")
def avmnist(
    mnist: Path = typer.Option(None, help="Folder with MNIST's idx files (t10k-*, and train-* "
                               "if present; .gz or not)."),
    fsdd: Path = typer.Option(None, help="Free Spoken Digit Dataset folder (its recordings/ "
                              "or the wav files)."),
    multibench: Path = typer.Option(None, help="Instead of raw files: MultiBench's "
                                    "preprocessed AV-MNIST folder."),
    snr_db: float = typer.Option(0.0, help="Signal-to-noise ratio of the injected white "
                                 "noise, dB."),
    energy_removed: float = typer.Option(0.75, help="Share of the images' PCA energy "
                                         "removed."),
    seed: int = typer.Option(0, help="Seed of the split, pairing and noise."),
    out_dir: Path = typer.Option(Path("avmnist"), "--out", "-o", help="Folder to write."),
) -> None:
    """AV-MNIST (paper Sec. 3, App. B.1): noisy spoken digits paired with PCA-degraded
    MNIST images. Writes image.npy, audio.npy, labels.npy, split.npz and avmnist.json.

    Then: cmkd-doctor diagnose OUT/image.npy OUT/audio.npy OUT/labels.npy --split
    OUT/split.npz
    """
    from cmkd_doctor.avmnist import AVMnistSpec, build_avmnist, read_multibench, write_avmnist
    from cmkd_doctor.errors import InputError

    check_out_dir(out_dir)
    if multibench is not None:
        if mnist is not None or fsdd is not None:
            raise InputError("--multibench replaces --mnist and --fsdd; give one or the other")
        data = read_multibench(multibench)
    elif mnist is None or fsdd is None:
        raise InputError("examples make avmnist needs --mnist DIR and --fsdd DIR (the raw "
                         "files), or --multibench DIR")
    else:
        data = build_avmnist(mnist, fsdd, AVMnistSpec(energy_removed=energy_removed,
                                                      snr_db=snr_db, seed=seed))
    write_avmnist(data, out_dir)
    out.print(f"wrote {out_dir}/: image.npy {data.image.shape}, audio.npy {data.audio.shape}, "
              f"labels.npy, split.npz ({len(data.train)} train / {len(data.test)} test rows) "
              "and avmnist.json", markup=False)
    out.print(f"next: cmkd-doctor diagnose {out_dir}/image.npy {out_dir}/audio.npy "
              f"{out_dir}/labels.npy --split {out_dir}/split.npz", markup=False)


@make_app.command("ravdess")
def ravdess(
    root: Path = typer.Option(None, help="The official code's preprocessed layout: CSV files "
                              "plus aud_features/ and vid_features/."),
    raw_audio: Path = typer.Option(None, help="Instead: a folder of raw RAVDESS speech wav "
                                   "files (MFCC features, labels from the file names)."),
    image_size: int = typer.Option(32, help="--root: images are resized to this square."),
    out_dir: Path = typer.Option(Path("ravdess"), "--out", "-o", help="Folder to write."),
) -> None:
    """RAVDESS emotion recognition (paper Sec. 5.4, App. B.4): audio teacher, image
    student. Writes audio.npy (and image.npy), labels.npy, split.npz, ravdess.json."""
    from cmkd_doctor.errors import InputError
    from cmkd_doctor.preparers import read_ravdess_audio, read_ravdess_official, write_prepared

    check_out_dir(out_dir)
    if (root is None) == (raw_audio is None):
        raise InputError("examples make ravdess needs --root DIR (the official preprocessed "
                         "layout) or --raw-audio DIR (wav files), one of them")
    data = (read_ravdess_official(root, image_size) if root is not None
            else read_ravdess_audio(raw_audio))
    write_prepared(data, out_dir, "ravdess")
    _report(out_dir, data)


@make_app.command("mmimdb")
def mmimdb(
    hdf5: Path = typer.Option(..., help="MultiBench's multimodal_imdb.hdf5."),
    columns: str = typer.Option(None, help="Genre columns to keep, e.g. 0,1 (the paper's task "
                                "keeps drama and comedy) [default: all]."),
    out_dir: Path = typer.Option(Path("mmimdb"), "--out", "-o", help="Folder to write."),
) -> None:
    """MM-IMDB multi-label genres (paper App. B.3): text and poster features. Writes
    text.npy, image.npy, labels.npy (multi-hot), split.npz and mmimdb.json."""
    from cmkd_doctor.distill import parse_list
    from cmkd_doctor.preparers import read_mmimdb, write_prepared

    check_out_dir(out_dir)
    data = read_mmimdb(hdf5, parse_list(columns, "columns", int) if columns else None)
    write_prepared(data, out_dir, "mmimdb")
    _report(out_dir, data)


@make_app.command("vggsound")
def vggsound(
    csv_file: Path = typer.Option(..., "--csv", help="VGGSound's public vggsound.csv."),
    clips: Path = typer.Option(..., help="The clips in the order of your feature rows, one "
                               "per line: <youtube id>_<start seconds>."),
    classes: int = typer.Option(None, help="Keep the first N classes alphabetically (the "
                                "paper uses 100) [default: all]."),
    out_dir: Path = typer.Option(Path("vggsound"), "--out", "-o", help="Folder to write."),
) -> None:
    """VGGSound labels and split (paper Sec. 5.4) for features you extracted (see
    examples/vggsound.md). Writes labels.npy, split.npz, rows.npy (the kept feature
    rows) and vggsound.json."""
    from cmkd_doctor.preparers import read_vggsound, write_prepared

    check_out_dir(out_dir)
    data = read_vggsound(csv_file, clips, classes)
    write_prepared(data, out_dir, "vggsound")
    _report(out_dir, data)


@make_app.command("nyu")
def nyu(
    mat: Path = typer.Option(..., help="nyu_depth_v2_labeled.mat (MATLAB v7.3)."),
    splits: Path = typer.Option(None, help="The official splits.mat (795 train / 654 test)."),
    size: int = typer.Option(224, help="Images are resized to size x size."),
    out_dir: Path = typer.Option(Path("nyu"), "--out", "-o", help="Folder to write."),
) -> None:
    """NYU Depth V2 (paper Sec. 3, 5.3): RGB and depth image arrays for 'cmkd-doctor
    extract --array', scene-type labels and the official split (examples/nyu_depth_v2.md).
    """
    from cmkd_doctor.preparers import read_nyu, write_prepared

    check_out_dir(out_dir)
    data = read_nyu(mat, size, splits)
    write_prepared(data, out_dir, "nyu")
    _report(out_dir, data)


def _report(out_dir: Path, data) -> None:
    arrays = "".join(f"{k}.npy {v.shape}, " for k, v in data.features.items())
    out.print(f"wrote {out_dir}/: {arrays}labels.npy, split.npz ({len(data.train)} train / "
              f"{len(data.test)} test rows)", markup=False)


@app.command("list")
def list_examples(
    json_output: bool = typer.Option(False, "--json", help="One JSON document."),
) -> None:
    """The paper's six datasets: what each is, its licence, and how to prepare it."""
    if json_output:
        print_json([asdict(d) for d in DATASETS.values()])
        return
    table = Table(title="The paper's datasets", title_justify="left", show_lines=True)
    for column in ("name", "what", "modalities", "licence", "availability", "prepare"):
        table.add_column(column)
    for d in DATASETS.values():
        table.add_row(d.name, f"{d.title}: {d.task} ({d.paper})", d.modalities, d.licence,
                      d.availability, d.prepare)
    out.print(table)


@app.command("reproduce")
def reproduce_command(
    experiment: str = typer.Argument(..., help="table2, fig2 or fig3 (paper Sec. 5.2), or "
                                     "table1-avmnist (Sec. 3, needs --data)."),
    data: Path = typer.Option(None, help="table1-avmnist: the folder 'examples make avmnist' "
                              "wrote."),
    runs: int = typer.Option(10, help="Runs per setting (the paper's 10)."),
    seed: int = typer.Option(42, help="Seed of the runs' data and initialisations."),
    device: str = typer.Option("cpu", help="cpu, auto, cuda or cuda:N."),
    json_output: bool = typer.Option(False, "--json", help="One JSON document with a rows "
                                     "list."),
    plot: Path = typer.Option(None, help="Also draw our series beside the paper's figures "
                              "as a PNG file (table2, fig2, fig3)."),
) -> None:
    """The paper's Gaussian experiments, our figures beside the paper's (Appendix B.2).

    Logistic-regression teachers and students, 200 training / 1000 test rows, full-batch
    SGD, rho 0.5, all runs of an experiment trained as one batched model.
    """
    if experiment == "table1-avmnist":
        from cmkd_doctor.errors import InputError
        from cmkd_doctor.reproduce import reproduce_avmnist

        if data is None:
            raise InputError("examples reproduce table1-avmnist needs --data DIR (from "
                             "'cmkd-doctor examples make avmnist')")
        found = reproduce_avmnist(data, runs=runs, seed=seed, device=resolve_device(device))
        if json_output:
            print_json(found)
        else:
            print_avmnist(found)
        return
    if plot is not None:
        check_out_dir(plot.parent)
    result = reproduce(experiment, runs=runs, seed=seed, device=resolve_device(device))
    if plot is not None:
        from cmkd_doctor.outputs import write_bytes
        from cmkd_doctor.report import plot_reproduction

        write_bytes(plot, plot_reproduction(result.rows, experiment, result.experiment.title,
                                            PAPER_SOURCE))
    if json_output:
        print_json({"experiment": result.experiment.name, "title": result.experiment.title,
                    "runs": runs, "seed": seed, "seconds": round(result.seconds, 3),
                    "claim": result.experiment.claim, "rows": result.rows,
                    "source": PAPER_SOURCE})
        return
    print_reproduction(result)


PAPER_SOURCE = ("Xue et al., The Modality Focusing Hypothesis, ICLR 2023: Table 2 and "
                "Sec. 4.2 (Fig. 2: +2.1 points at gamma = 1)")
_COLUMNS = {
    "table2": ("regular_teacher", "general_teacher", "random_teacher", "no_kd", "regular_kd",
               "general_kd", "random_kd", "general_kd_minus_regular_kd"),
    "fig2": ("regular_teacher", "no_kd", "regular_kd", "kd_minus_no_kd"),
    "fig3": ("regular_teacher", "no_kd", "regular_kd", "kd_minus_no_kd"),
}


def print_reproduction(result) -> None:
    """Mean ± std over runs, the paper's figure in brackets where it gives one."""
    name = result.experiment.name
    axis = "alpha" if name == "fig3" else "gamma"
    table = Table(title=escape(f"{result.experiment.title} (accuracy %, mean ± std over "
                               f"{result.runs} runs; [paper])"), title_justify="left")
    table.add_column(axis, justify="right")
    columns = _COLUMNS[name]
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    for row in result.rows:
        cells = []
        for column in columns:
            value = row[column]
            cell = f"{value['mean']:.2f} ± {value['std']:.2f}"
            paper = row["paper"].get(column)
            if paper is None and column == "general_kd_minus_regular_kd" and row["paper"]:
                paper = row["paper"]["general_kd"] - row["paper"]["regular_kd"]
            cells.append(cell + (f" [{paper:.2f}]" if paper is not None else ""))
        table.add_row(f"{row[axis]:.2f}", *cells)
    out.print(table)
    out.print(f"paper's claim: {result.experiment.claim}", markup=False)
    for line in claim_check(result):
        out.print(line, markup=False)
    out.print(f"source: {PAPER_SOURCE};  {result.seconds:.1f} s", markup=False)


def claim_check(result) -> list[str]:
    """Say, with the spread, what we measure of the paper's claim."""
    rows, name = result.rows, result.experiment.name
    lines = []
    if name == "table2":
        for row in rows:
            gap = row["regular_teacher"]["mean"] - row["general_teacher"]["mean"]
            gain = row["general_kd_minus_regular_kd"]
            beyond = gain["mean"] > 2 * gain["std"] / result.runs**0.5
            lines.append(
                f"gamma {row['gamma']:.2f}: general teacher {gap:.1f} points below the regular "
                f"one; general-KD - regular-KD {gain['mean']:+.2f} ± {gain['std']:.2f} per run "
                f"({'beyond' if beyond else 'within'} run-to-run noise)")
    else:
        first, last = rows[0], rows[-1]
        lines.append(f"KD - No-KD: {first['kd_minus_no_kd']['mean']:+.2f} ± "
                     f"{first['kd_minus_no_kd']['std']:.2f} at the first setting, "
                     f"{last['kd_minus_no_kd']['mean']:+.2f} ± "
                     f"{last['kd_minus_no_kd']['std']:.2f} at the last; teacher "
                     f"{first['regular_teacher']['mean']:.1f} -> "
                     f"{last['regular_teacher']['mean']:.1f}")
    return lines


def print_avmnist(found: dict) -> None:
    """Table 5's shape: teacher accuracy and audio-student accuracy at rho 0 and 0.5."""
    table = Table(title=escape(f"AV-MNIST, audio student (accuracy %, mean ± std over "
                               f"{found['runs']} seeds; [paper's Table 5])"),
                  title_justify="left")
    for column in ("", "teacher", "student, rho = 0", "student, rho = 0.5"):
        table.add_column(column, justify="right" if column else "left")
    labels = {"no_kd": "No-KD", "um_kd": "UM-KD (audio teacher)",
              "cm_kd": "CM-KD (image + audio teacher)"}
    for row in found["rows"]:
        paper = row["paper"]
        teacher = "-" if row["teacher"] is None else (
            f"{row['teacher']:.2f} [{paper['teacher']:.2f}]")
        cells = [f"{row[r]['mean']:.2f} ± {row[r]['std']:.2f} "
                 f"[{paper[r]['mean']:.2f} ± {paper[r]['std']:.2f}]" for r in ("rho_0",
                                                                               "rho_0.5")]
        table.add_row(labels[row["row"]], teacher, *cells)
    out.print(table)
    out.print(f"paper's claim: {found['claim']}", markup=False)
    by = {row["row"]: row for row in found["rows"]}
    for rho in ("rho_0", "rho_0.5"):
        gap = by["cm_kd"][rho]["mean"] - by["um_kd"][rho]["mean"]
        spread = max(by["cm_kd"][rho]["std"], by["um_kd"][rho]["std"])
        out.print(f"{rho.replace('_', ' = ')}: CM-KD - UM-KD student {gap:+.2f} (seed spread "
                  f"{spread:.2f}); teachers {by['cm_kd']['teacher']:.1f} vs "
                  f"{by['um_kd']['teacher']:.1f}", markup=False)
    out.print(f"source: {found['source']};  {found['seconds']:.1f} s", markup=False)
