"""``cmkd-doctor examples``: the paper's datasets as built-in examples."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cmkd_doctor.cli import render
from cmkd_doctor.cli._common import (
    PanelCommand,
    WholeSummaries,
    line,
    print_json,
    progress_bars,
    show_help_without_command,
)
from cmkd_doctor.cli.options import DataDir, Device, Download, Mirror, Timeout
from cmkd_doctor.errors import InputError
from cmkd_doctor.examples.datasets import DATASETS, example_urls, fetch_example
from cmkd_doctor.examples.downloads import FetchOptions
from cmkd_doctor.examples.gaussian import DELTAS, GaussianSpec, make_gaussian, write_gaussian
from cmkd_doctor.io.outputs import check_out_dir, check_out_file
from cmkd_doctor.schemas import stamp
from cmkd_doctor.validation import parse_list

# torch is imported by the commands that train (make avmnist, reproduce), not here:
# 'examples list' starts without it

app = typer.Typer(help="The paper's datasets as built-in examples.", cls=WholeSummaries)
make_app = typer.Typer(help="Generate or build an example dataset.", cls=WholeSummaries)
app.add_typer(make_app, name="make")
app.callback(invoke_without_command=True)(show_help_without_command)
make_app.callback(invoke_without_command=True)(show_help_without_command)

_D = GaussianSpec()
OutFolder = Annotated[Path, typer.Option("--out", "-o", help="Folder to write.")]


@make_app.command("gaussian", cls=PanelCommand)
def gaussian(
    d1: Annotated[int, typer.Option(help="Channels of modality a.")] = _D.d1,
    d2: Annotated[int, typer.Option(help="Channels of modality b.")] = _D.d2,
    d: Annotated[int, typer.Option(help="Dimension of the decisive vector x* (all of it "
                                   "sets y).")] = _D.d,
    j1: Annotated[int, typer.Option(help="|J1|: decisive features copied into modality a.")
                  ] = _D.j1,
    j2: Annotated[int, typer.Option(help="|J2|: decisive features copied into modality b.")
                  ] = _D.j2,
    shared: Annotated[int, typer.Option(help="|J1 & J2|: the modality-general ones.")
                      ] = _D.shared,
    n_train: Annotated[int, typer.Option(help="Training rows.")] = _D.n_train,
    n_test: Annotated[int, typer.Option(help="Held-out test rows.")] = _D.n_test,
    seed: Annotated[int, typer.Option(help="Seed of everything drawn.")] = _D.seed,
    delta: Annotated[str, typer.Option(help="Hyperplane: " + " or ".join(DELTAS) + " (normal: "
                                       "delta ~ N(0, I), Appendix B.2; ones: equal weights, "
                                       "the official Table 2 script).")] = _D.delta,
    out_dir: OutFolder = Path("gaussian"),
) -> None:
    """Synthetic multimodal Gaussian data (Appendix B.2, Eq. 27) with its truth.json."""
    spec = GaussianSpec(d1=d1, d2=d2, d=d, j1=j1, j2=j2, shared=shared, n_train=n_train,
                        n_test=n_test, seed=seed, delta=delta)
    check_out_dir(out_dir)
    data = make_gaussian(spec)
    write_gaussian(data, out_dir)
    t = data.truth
    line(f"wrote {out_dir}/: feats_a.npy {data.xa.shape}, feats_b.npy {data.xb.shape}, "
         f"labels.npy, the *_test.npy set and truth.json")
    line(f"alpha {t['alpha']:.2f}, beta {t['beta']:.2f}, gamma {t['gamma']:.2f};  "
         f"modality-general channels of a: {t['channels_a']['general']}")


@make_app.command("avmnist", cls=PanelCommand)
def avmnist(
    mnist: Annotated[Path | None, typer.Option(
        help="Folder with MNIST's idx files (t10k-*, and train-* if present; .gz or not).")
    ] = None,
    fsdd: Annotated[Path | None, typer.Option(
        help="Free Spoken Digit Dataset folder (its recordings/ or the wav files).")] = None,
    multibench: Annotated[Path | None, typer.Option(
        help="Instead of raw files: MultiBench's preprocessed AV-MNIST folder.")] = None,
    snr_db: Annotated[float, typer.Option(
        help="Signal-to-noise ratio of the injected white noise, dB.")] = 0.0,
    energy_removed: Annotated[float, typer.Option(
        help="Share of the images' PCA energy removed.")] = 0.75,
    seed: Annotated[int, typer.Option(help="Seed of the split, pairing and noise.")] = 0,
    download: Download = False,
    data_dir: DataDir = None,
    mirror: Mirror = None,
    timeout: Timeout = FetchOptions.timeout,
    out_dir: OutFolder = Path("avmnist"),
) -> None:
    """AV-MNIST (paper Sec. 3, App. B.1): noisy spoken digits paired with PCA-degraded
    MNIST images. Writes image.npy, audio.npy, labels.npy, split.npz and avmnist.json.

    The raw files are --mnist and --fsdd, or else read from the data root (fetched there
    first with --download).

    Then: cmkd-doctor diagnose OUT/image.npy OUT/audio.npy OUT/labels.npy --split
    OUT/split.npz
    """
    from cmkd_doctor.examples.avmnist import AVMnistSpec, make_avmnist

    options = _fetch_options(download, data_dir, mirror, timeout)
    with progress_bars(False) as progress:
        data = make_avmnist(out_dir, mnist, fsdd, multibench,
                            AVMnistSpec(energy_removed=energy_removed, snr_db=snr_db,
                                        seed=seed), options, progress)
    line(f"wrote {out_dir}/: image.npy {data.image.shape}, audio.npy {data.audio.shape}, "
         f"labels.npy, split.npz ({len(data.train)} train / {len(data.test)} test rows) "
         "and avmnist.json")
    line(f"next: cmkd-doctor diagnose {out_dir}/image.npy {out_dir}/audio.npy "
         f"{out_dir}/labels.npy --split {out_dir}/split.npz")


@make_app.command("ravdess", cls=PanelCommand)
def ravdess(
    root: Annotated[Path | None, typer.Option(
        help="The official code's preprocessed layout: CSV files plus aud_features/ and "
             "vid_features/.")] = None,
    raw_audio: Annotated[Path | None, typer.Option(
        help="Instead: a folder of raw RAVDESS speech wav files (MFCC features, labels "
             "from the file names).")] = None,
    image_size: Annotated[int, typer.Option(
        help="--root: images are resized to this square.")] = 32,
    out_dir: OutFolder = Path("ravdess"),
) -> None:
    """RAVDESS emotion recognition (paper Sec. 5.4, App. B.4): audio teacher, image
    student. Writes audio.npy (and image.npy), labels.npy, split.npz, ravdess.json."""
    from cmkd_doctor.examples.preparers import make_ravdess

    _prepared(out_dir, make_ravdess(out_dir, root, raw_audio, image_size))


@make_app.command("mmimdb", cls=PanelCommand)
def mmimdb(
    hdf5: Annotated[Path, typer.Option(help="MultiBench's multimodal_imdb.hdf5.")],
    columns: Annotated[str | None, typer.Option(
        help="Genre columns to keep, e.g. 0,1 (the paper's task keeps drama and comedy) "
             "[default: all].")] = None,
    out_dir: OutFolder = Path("mmimdb"),
) -> None:
    """MM-IMDB multi-label genres (paper App. B.3): text and poster features. Writes
    text.npy, image.npy, labels.npy (multi-hot), split.npz and mmimdb.json."""
    from cmkd_doctor.examples.preparers import make, read_mmimdb

    keep = parse_list(columns, "columns", int) if columns else None
    _prepared(out_dir, make("mmimdb", out_dir, lambda: read_mmimdb(hdf5, keep)))


@make_app.command("vggsound", cls=PanelCommand)
def vggsound(
    csv_file: Annotated[Path, typer.Option("--csv", help="VGGSound's public vggsound.csv.")],
    clips: Annotated[Path, typer.Option(
        help="The clips in the order of your feature rows, one per line: <youtube "
             "id>_<start seconds>.")],
    classes: Annotated[int | None, typer.Option(
        help="Keep the first N classes alphabetically (the paper uses 100) "
             "[default: all].")] = None,
    out_dir: OutFolder = Path("vggsound"),
) -> None:
    """VGGSound labels and split (paper Sec. 5.4) for features you extracted (see
    examples/vggsound.md). Writes labels.npy, split.npz, rows.npy (the kept feature
    rows) and vggsound.json."""
    from cmkd_doctor.examples.preparers import make, read_vggsound

    _prepared(out_dir, make("vggsound", out_dir,
                            lambda: read_vggsound(csv_file, clips, classes)))


@make_app.command("nyu", cls=PanelCommand)
def nyu(
    mat: Annotated[Path, typer.Option(help="nyu_depth_v2_labeled.mat (MATLAB v7.3).")],
    splits: Annotated[Path | None, typer.Option(
        help="The official splits.mat (795 train / 654 test).")] = None,
    size: Annotated[int, typer.Option(help="Images are resized to size x size.")] = 224,
    out_dir: OutFolder = Path("nyu"),
) -> None:
    """NYU Depth V2 (paper Sec. 3, 5.3): RGB and depth image arrays for 'cmkd-doctor
    extract --array', scene-type labels and the official split (examples/nyu_depth_v2.md).
    """
    from cmkd_doctor.examples.preparers import make, read_nyu

    _prepared(out_dir, make("nyu", out_dir, lambda: read_nyu(mat, size, splits)))


def _prepared(out_dir: Path, data) -> None:
    arrays = "".join(f"{k}.npy {v.shape}, " for k, v in data.features.items())
    line(f"wrote {out_dir}/: {arrays}labels.npy, split.npz ({len(data.train)} train / "
         f"{len(data.test)} test rows)")


def _fetch_options(download: bool, data_dir: Path | None, mirror: str | None,
                   timeout: float) -> FetchOptions:
    return FetchOptions(None if data_dir is None else str(data_dir), mirror, download,
                        timeout).checked()


@app.command("fetch", cls=PanelCommand,
             short_help="Download an example's published files into the data root (the "
                        "cache), checked against their SHA-256.")
def fetch_command(
    name: Annotated[str, typer.Argument(
        metavar="NAME", help="avmnist, scene15 or leaves100 (the others say where to get "
                             "them).")],
    print_urls: Annotated[bool, typer.Option(
        "--print-urls", help="Print the URL of every file of NAME, one per line (what a "
                             "fetch into an empty data root requests), and fetch nothing.")
    ] = False,
    data_dir: DataDir = None,
    mirror: Mirror = None,
    timeout: Timeout = FetchOptions.timeout,
) -> None:
    """Fetch every published file of example NAME into the data root (--data-dir,
    $CMKD_DOCTOR_DATA or the cache folder), from the publishers' servers or --mirror,
    each checked against the SHA-256 recorded in cmkd-doctor; files already there and
    whole are kept. A filled data root is itself a mirror for offline machines."""
    options = _fetch_options(True, data_dir, mirror, timeout)
    if print_urls:
        sys.stdout.write("".join(url + "\n" for url in example_urls(name, options)))
        return
    with progress_bars(False) as progress:
        root, count, size = fetch_example(name, options, progress)
    got = f"fetched {count} file{'s' * (count > 1)} ({size / 1e6:.1f} MB)" if count else \
        "every file was already there and whole"
    line(f"{name}: {got} in {root}")
    line(f"next: {DATASETS[name].use}")


@app.command("list", cls=PanelCommand)
def list_examples(
    json_output: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """The examples: the paper's data sets and the real multi-view sets, what each is,
    its licence, and how to get or prepare it."""
    if json_output:
        print_json(stamp("datasets", {"datasets": [d.to_dict() for d in DATASETS.values()]}))
    else:
        render.datasets(DATASETS.values())


@app.command("reproduce", cls=PanelCommand,
             short_help="The paper's Gaussian experiments and AV-MNIST Table 1, beside the "
                        "paper and the official code.")
def reproduce_command(
    experiment: Annotated[str, typer.Argument(
        metavar="EXPERIMENT",
        help="table2, fig2 or fig3 (paper Sec. 5.2), table1-avmnist (Sec. 3, needs --data) "
             "or avmnist-networks (AV-MNIST end to end with networks, needs --data).")],
    data: Annotated[Path | None, typer.Option(
        help="table1-avmnist, avmnist-networks: the folder 'examples make avmnist' wrote."
    )] = None,
    runs: Annotated[int | None, typer.Option(
        help="Runs (seeds) per setting. Default: the paper's 10; avmnist-networks 5.",
        show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(
        help="The first run's seed; run r uses seed + r, as the official scripts do. "
             "Default: the experiment's (table2 42, fig2 and fig3 0, as the official "
             "scripts; table1-avmnist 42).", show_default=False)] = None,
    protocol: Annotated[str, typer.Option(
        help="official: the official code's loss, data flow, sizes and seeds; paper: "
             "Appendix B.2 as written (rho 0.5, delta ~ N(0, I)).")] = "official",
    official_swap: Annotated[bool, typer.Option(
        "--official-swap", help="table2: train the Regular-KD student with the modalities "
                                "swapped, as the official script does.")] = False,
    device: Device = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="One JSON document with a "
                                              "rows list.")] = False,
    plot: Annotated[Path | None, typer.Option(
        help="Also draw our series beside the paper's figures as a PNG file (table2, fig2, "
             "fig3).")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="avmnist-networks: keep its networks (.pt2), features and rank and "
                      "diagnose runs in this folder (default: a temporary one).")] = None,
) -> None:
    """The paper's experiments beside the paper's figures and a rerun of the official
    code: the Gaussian ones of Sec. 5.2 (Appendix B.2) and the AV-MNIST case study of
    Sec. 3.

    Gaussian: logistic-regression teachers and students, 200 training / 1000 test rows,
    full-batch SGD; every run of an experiment trains in one batched model.
    """
    from cmkd_doctor.examples.reproduce import reproduce, reproductions, save_plot
    from cmkd_doctor.examples.reproduce.gaussian import PAPER_SOURCE

    if plot is not None:
        known = reproductions().get(experiment)
        if known is not None and known.family != "gaussian":
            raise InputError(f"--plot draws the Gaussian experiments; {experiment} has no "
                             "plot")
        check_out_file(plot, "--plot")
    with progress_bars(json_output) as progress:
        result = reproduce(experiment, runs=runs, seed=seed, device=device, data=data,
                           protocol=protocol, official_swap=official_swap, out=out_dir,
                           progress=progress)
    if isinstance(result, dict):  # AV-MNIST's document
        if json_output:
            print_json(result)
        elif result["experiment"] == "avmnist-networks":
            render.avmnist_networks(result)
        else:
            render.avmnist(result)
        return
    if plot is not None:
        save_plot(result, plot)
    if json_output:
        print_json(result.to_dict())
    else:
        render.reproduction(result, PAPER_SOURCE)
