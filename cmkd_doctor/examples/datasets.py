"""The paper's six datasets and two real multi-view feature sets: what each is, and how
cmkd-doctor gets it (a registry).

A dataset usable as ``diagnose --example NAME`` carries ``make``: it returns the paths
of the example's arrays (feats_a, feats_b, labels) and, for generated data, the truth.
The Gaussian example is generated into the run directory. The others that can be fetched
name their published files (``sources``, see :mod:`cmkd_doctor.examples.downloads`): they are read
from the data root (``--data-dir``, ``$CMKD_DOCTOR_DATA`` or the cache), fetched there
first with ``--download``, never copied into a run. ``NAME:A,B`` picks the views of a
multi-view set, converted once from its published MATLAB file into
``multiview/NAME/view*.npy`` and ``labels.npy`` beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cmkd_doctor.errors import InputError, unknown_name
from cmkd_doctor.examples.downloads import (
    DATA_ENV,
    FetchOptions,
    fetch,
    files,
    is_published,
    missing,
    urls,
)
from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian, write_gaussian
from cmkd_doctor.io.outputs import landed, together, write_json, write_npy
from cmkd_doctor.progress import Progress, no_progress
from cmkd_doctor.registry import Registry
from cmkd_doctor.schemas import stamp

__all__ = ["DATASETS", "DATA_ENV", "Dataset", "example_root", "example_urls",
           "fetch_example"]

#: (run folder, Gaussian spec, views picked, where the data is, progress) -> (paths, truth)
Make = Callable[[Path, GaussianSpec, "tuple[int, int] | None", FetchOptions, Progress],
                "tuple[list[Path], dict | None]"]


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    task: str
    modalities: str
    licence: str
    availability: str  # "built in", what fetching it takes, or what a local copy needs
    prepare: str  # the command that prepares it, or where that is documented
    paper: str
    make: Make | None = field(default=None, repr=False, compare=False)
    # downloads.SOURCES its published files come from; none: not fetched (``elsewhere``
    # says why and where to get it)
    sources: tuple[str, ...] = ()
    use: str = ""  # the command that reads the fetched files
    elsewhere: str = ""
    # turns the fetched files into the arrays ``make`` reads, in the data root, unless
    # ``ready`` says a data root holds them already
    convert: Callable[[Path], None] | None = field(default=None, repr=False, compare=False)
    ready: Callable[[Path], bool] | None = field(default=None, repr=False, compare=False)

    def converted(self, root: Path) -> None:
        """The arrays ``make`` reads, converted into ``root`` if they are not there."""
        if self.convert is not None and not self.ready(root):
            self.convert(root)

    def to_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in ("name", "title", "task", "modalities",
                                              "licence", "availability", "prepare", "paper")}


def _fetchable(name: str) -> Dataset:
    """Example ``name``, when it has published files cmkd-doctor fetches; otherwise an
    error saying why not and where to get it."""
    if name not in DATASETS:
        raise unknown_name("examples fetch NAME", DATASETS, name)
    dataset = DATASETS[name]
    if dataset.sources:
        return dataset
    if dataset.make is not None:
        raise InputError(f"examples fetch {name}: {name} is generated, there is nothing to "
                         f"fetch ({dataset.prepare})")
    raise InputError(f"examples fetch {name}: cmkd-doctor does not fetch {name}: "
                     f"{dataset.elsewhere}")


def example_urls(name: str, options: FetchOptions | None = None) -> list[str]:
    """``examples fetch NAME --print-urls``: the URL of every published file of example
    ``name``, as a fetch into an empty data root requests them (the mirror's when one is
    set)."""
    dataset = _fetchable(name)
    options = (options or FetchOptions()).checked()
    return [urls(r, options)[0] for s in dataset.sources for r in files(s)]


def size_text(sources: tuple[str, ...]) -> str:
    """The download size of ``sources``, as a user reads it: ``23 MB``."""
    total = sum(r.size for s in sources for r in files(s))
    return f"{total / 1e6:.0f} MB" if total >= 1e7 else f"{total / 1e6:.1f} MB"


def fetch_example(name: str, options: FetchOptions | None = None,
                  progress: Progress = no_progress) -> tuple[Path, int, int]:
    """``examples fetch NAME``: every published file of example ``name`` into the data
    root, each checked (SHA-256), then converted where the example needs it.

    Returns the data root, the number of files transferred and their bytes (0 and 0 when
    the root held them all, whole)."""
    dataset = _fetchable(name)
    options = (options or FetchOptions()).checked()
    fetched = fetch(dataset.sources, options, progress)
    root = options.root()
    dataset.converted(root)
    return root, len(fetched), sum(r.size for r in fetched)


def example_root(name: str, options: FetchOptions | None = None,
                 progress: Progress = no_progress) -> Path:
    """The data root holding example ``name``'s files, ready to read: fetched first when
    ``options.download`` and some are missing, else an error naming the command that
    fetches them. Files already there are not hashed again (``examples fetch`` does)."""
    dataset = DATASETS[name]
    options = (options or FetchOptions()).checked()
    root = options.root()
    if dataset.ready is not None and dataset.ready(root):
        return root
    if missing(dataset.sources, root):
        if not options.download:
            raise InputError(
                f"example {name}: its files are not in {root} (the data root: --data-dir, "
                f"${DATA_ENV} or the cache); 'cmkd-doctor examples fetch {name}' downloads "
                f"them ({size_text(dataset.sources)}), or add --download")
        fetch(dataset.sources, options, progress)
    dataset.converted(root)
    return root


def _make_gaussian(folder: Path, spec: GaussianSpec, views: tuple[int, int] | None,
                   data: FetchOptions, progress: Progress) -> tuple[list[Path], dict]:
    if views is not None:
        raise InputError("--example gaussian has modalities a and b, no views to pick")
    generated = make_gaussian(spec)
    write_gaussian(generated, folder)
    return [folder / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")], generated.truth


def _multiview(name: str, views: tuple[int, int], count: int) -> Make:
    def make(folder: Path, spec: GaussianSpec, chosen: tuple[int, int] | None,
             data: FetchOptions, progress: Progress) -> tuple[list[Path], None]:
        a, b = chosen or views
        if not (0 <= a < count and 0 <= b < count and a != b):
            raise InputError(f"--example {name}:{a},{b}: pick two different views of "
                             f"0..{count - 1}")
        found = example_root(name, data, progress) / "multiview" / name
        return [found / f"view{a}.npy", found / f"view{b}.npy", found / "labels.npy"], None
    return make


def _multiview_ready(name: str, count: int) -> Callable[[Path], bool]:
    names = [*(f"view{v}.npy" for v in range(count)), "labels.npy"]
    return lambda root: all((root / "multiview" / name / f).is_file() for f in names)


def _convert_multiview(name: str, count: int) -> Callable[[Path], None]:
    """The published MATLAB file (a 1 x views cell ``X`` of rows x features matrices and
    labels ``Y``, 1-based) as float32 ``view{i}.npy`` and 0-based int64 ``labels.npy``,
    values as published, with ``multiview.json`` saying where they came from."""
    def convert(root: Path) -> None:
        import numpy as np
        import scipy.io

        (remote,) = files(name)
        mat = root / remote.path
        try:
            loaded = scipy.io.loadmat(mat)
        except Exception as exc:  # noqa: BLE001 - scipy lets zlib's, struct's and more out
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            cause = (f"; it is not the published file (its SHA-256 differs): 'cmkd-doctor "
                     f"examples fetch {name}' fetches it again"
                     if mat.is_file() and not is_published(mat, remote) else "")
            raise InputError(f"{mat}: cannot be read as a MATLAB file ({first}){cause}"
                             ) from None
        x, y = loaded.get("X"), loaded.get("Y")
        if x is None or y is None or x.size != count or x.dtype != object:
            raise InputError(f"{mat}: expected a cell X of {count} views and labels Y")
        arrays = [np.asarray(v, dtype=np.float32) for v in x.ravel()]
        labels = np.asarray(y).ravel().astype(np.int64)
        if any(v.ndim != 2 or len(v) != len(labels) for v in arrays):
            raise InputError(f"{mat}: its views and {len(labels)} labels do not pair up")
        labels -= labels.min()
        out = root / "multiview" / name
        with together(out) as stage:
            written = [write_npy(stage / f"view{i}.npy", v) for i, v in enumerate(arrays)]
            written += [write_npy(stage / "labels.npy", labels),
                        write_json(stage / "multiview.json", stamp("multiview", {
                            "dataset": DATASETS[name].title, "source": remote.path,
                            "sha256": remote.sha256, "n": len(labels),
                            "views": [v.shape[1] for v in arrays],
                            "converted": "X{i} as float32 viewi.npy; Y - min(Y) as "
                                         "int64 labels.npy"}))]
        landed(written, stage, out)
    return convert


DATASETS: Registry[Dataset] = Registry("example")
for _dataset in (
    Dataset("gaussian", "Synthetic multimodal Gaussian (Lopez-Paz et al. 2015, extended)",
            "binary classification", "x^a and x^b: Gaussian vectors sharing decisive "
            "coordinates", "generated (no licence needed)", "built in",
            "cmkd-doctor examples make gaussian", "Sec. 5.2, Table 2, Figs. 2-3, App. B.2",
            make=_make_gaussian),
    Dataset("avmnist", "AV-MNIST (Vielzeuf et al. 2018)", "10-class digit classification",
            "images (MNIST, 75% PCA energy removed) and audio (spoken digits, log-mel)",
            "MNIST CC BY-SA 3.0; FSDD CC BY-SA 4.0",
            f"fetched: MNIST's test set and FSDD ({size_text(('mnist', 'fsdd'))}; "
            "examples fetch avmnist), or local files, or MultiBench's preprocessed copy",
            "cmkd-doctor examples make avmnist --download (or --mnist DIR --fsdd DIR)",
            "Sec. 3, Table 1/5, App. B.1", sources=("mnist", "fsdd"),
            use="cmkd-doctor examples make avmnist"),
    Dataset("ravdess", "RAVDESS (Livingstone & Russo 2018)", "8-class emotion recognition",
            "audio (MFCC) teacher, face images student", "CC BY-NC-SA 4.0",
            "needs a local copy (the official preprocessed layout, or raw speech wavs)",
            "cmkd-doctor examples make ravdess --root DIR | --raw-audio DIR",
            "Sec. 5.4, Table 4/8, App. B.4",
            elsewhere="its recordings are on Zenodo (record 1188976, CC BY-NC-SA 4.0) as "
            "per-actor archives of video and audio, and the face frames and features the "
            "paper's code makes from them are not published; download the speech audio and "
            "run 'cmkd-doctor examples make ravdess --raw-audio DIR'"),
    Dataset("vggsound", "VGGSound (Chen et al. 2020)", "event classification (100 classes)",
            "audio and video", "CC BY 4.0 (annotations); videos from YouTube",
            "needs a local copy and a backbone",
            "cmkd-doctor extract + examples make vggsound --csv --clips (recipe: "
            "examples/vggsound.md)",
            "Sec. 5.4, Table 4/9, Fig. 5-6",
            elsewhere="its clips are YouTube videos, which come and go and are not "
            "redistributable; only the annotations (vggsound.csv, CC BY 4.0) are published. "
            "Get the clips, extract features and follow examples/vggsound.md"),
    Dataset("nyu", "NYU Depth V2 (Silberman et al. 2012)", "40-class segmentation",
            "RGB and depth images", "see the dataset's terms", "needs a local copy and a "
            "backbone", "cmkd-doctor examples make nyu --mat FILE, then extract (recipe: "
            "examples/nyu_depth_v2.md)",
            "Sec. 3, 5.3, Table 1/3/6",
            elsewhere="the labelled set is one 2.8 GB MATLAB file on NYU's site "
            "(cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html) under the dataset's own terms; "
            "download nyu_depth_v2_labeled.mat and follow examples/nyu_depth_v2.md"),
    Dataset("mmimdb", "MM-IMDB (Arevalo et al. 2017)", "multi-label genre classification",
            "movie posters (VGG features) and plots (text features)", "see the dataset's "
            "terms", "needs MultiBench's HDF5",
            "cmkd-doctor examples make mmimdb --hdf5 FILE", "App. B.3, Table 7",
            elsewhere="the paper's features are MultiBench's preprocessed HDF5 file (several "
            "GB), shared through a link with no stable address or checksum; download "
            "multimodal_imdb.hdf5 and run 'cmkd-doctor examples make mmimdb --hdf5 FILE'"),
    Dataset("scene15", "15-Scenes (Lazebnik et al. 2006), three hand-crafted descriptors",
            "15-class scene classification, 4,485 images",
            "three views of each image: 20, 59 and 40 features", "research use",
            f"fetched: one MATLAB file ({size_text(('scene15',))}; examples fetch scene15)",
            "cmkd-doctor diagnose --example scene15 --download (views 1 -> 2; scene15:A,B "
            "picks)",
            "not in the paper: real features to test the doctor on",
            make=_multiview("scene15", (1, 2), 3), sources=("scene15",),
            use="cmkd-doctor diagnose --example scene15:1,2",
            convert=_convert_multiview("scene15", 3), ready=_multiview_ready("scene15", 3)),
    Dataset("leaves100", "One-hundred plant species leaves (Mallah, Cope and Orwell 2013)",
            "100-class species classification, 1,600 leaves (16 each)",
            "three views: shape, fine-scale margin and texture, 64 features each",
            "CC BY 4.0",
            f"fetched: one MATLAB file ({size_text(('leaves100',))}; examples fetch "
            "leaves100)",
            "cmkd-doctor diagnose --example leaves100 --download (views 0 -> 2; "
            "leaves100:A,B picks)",
            "not in the paper: real features to test the doctor on",
            make=_multiview("leaves100", (0, 2), 3), sources=("leaves100",),
            use="cmkd-doctor diagnose --example leaves100:0,2",
            convert=_convert_multiview("leaves100", 3), ready=_multiview_ready("leaves100", 3)),
):
    DATASETS.add(_dataset.name, _dataset, _dataset.title)
