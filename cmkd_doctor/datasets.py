"""The paper's six datasets and two real multi-view feature sets: what each is, and how
cmkd-doctor gets it (a registry).

A dataset usable as ``diagnose --example NAME`` carries ``make``: it returns the paths
of the example's arrays (feats_a, feats_b, labels) and, for generated data, the truth.
The Gaussian example is generated into the run directory; the multi-view sets are read
where they are (``$CMKD_DOCTOR_DATA/multiview/NAME``, or ``../shared/data`` beside the
working directory or the checkout), never copied. ``NAME:A,B`` picks the views.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cmkd_doctor.errors import InputError
from cmkd_doctor.gaussian import GaussianSpec, make_gaussian, write_gaussian
from cmkd_doctor.registry import Registry

DATA_ENV = "CMKD_DOCTOR_DATA"
Make = Callable[[Path, GaussianSpec, "tuple[int, int] | None"], tuple[list[Path], dict | None]]


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    task: str
    modalities: str
    licence: str
    availability: str  # "built in", or what a local copy needs
    prepare: str  # the command that prepares it, or where that is documented
    paper: str
    make: Make | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in ("name", "title", "task", "modalities",
                                              "licence", "availability", "prepare", "paper")}


def _make_gaussian(folder: Path, spec: GaussianSpec, views: tuple[int, int] | None
                   ) -> tuple[list[Path], dict]:
    if views is not None:
        raise InputError("--example gaussian has modalities a and b, no views to pick")
    data = make_gaussian(spec)
    write_gaussian(data, folder)
    return [folder / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")], data.truth


def data_roots() -> list[Path]:
    """Where real example data is looked for, in order."""
    here = Path(__file__).resolve().parents[1]  # the checkout, for an editable install
    roots = [Path(os.environ[DATA_ENV])] if os.environ.get(DATA_ENV) else []
    return roots + [Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data",
                    here.parent / "shared" / "data"]


def _multiview(name: str, views: tuple[int, int], count: int) -> Make:
    def make(folder: Path, spec: GaussianSpec, chosen: tuple[int, int] | None
             ) -> tuple[list[Path], None]:
        a, b = chosen or views
        if not (0 <= a < count and 0 <= b < count and a != b):
            raise InputError(f"--example {name}:{a},{b}: pick two different views of "
                             f"0..{count - 1}")
        for root in data_roots():
            found = root / "multiview" / name
            if (found / "labels.npy").is_file():
                return [found / f"view{a}.npy", found / f"view{b}.npy",
                        found / "labels.npy"], None
        raise InputError(f"--example {name}: its files (multiview/{name}/view*.npy) are in "
                         f"none of {', '.join(map(str, data_roots()))}; set {DATA_ENV} to "
                         "the folder that holds multiview/")
    return make


DATASETS: Registry[Dataset] = Registry("example")
for _dataset in (
    Dataset("gaussian", "Synthetic multimodal Gaussian (Lopez-Paz et al. 2015, extended)",
            "binary classification", "x^a and x^b: Gaussian vectors sharing decisive "
            "coordinates", "generated (no licence needed)", "built in",
            "cmkd-doctor examples make gaussian", "Sec. 5.2, Table 2, Figs. 2-3, App. B.2",
            make=_make_gaussian),
    Dataset("avmnist", "AV-MNIST (Vielzeuf et al. 2018)", "10-class digit classification",
            "images (MNIST, 75% PCA energy removed) and audio (spoken digits, log-mel)",
            "MNIST CC BY-SA 3.0; FSDD CC BY-SA 4.0", "needs local MNIST and FSDD files (or "
            "MultiBench's preprocessed copy)",
            "cmkd-doctor examples make avmnist --mnist DIR --fsdd DIR",
            "Sec. 3, Table 1/5, App. B.1"),
    Dataset("ravdess", "RAVDESS (Livingstone & Russo 2018)", "8-class emotion recognition",
            "audio (MFCC) teacher, face images student", "CC BY-NC-SA 4.0",
            "needs a local copy (the official preprocessed layout, or raw speech wavs)",
            "cmkd-doctor examples make ravdess --root DIR | --raw-audio DIR",
            "Sec. 5.4, Table 4/8, App. B.4"),
    Dataset("vggsound", "VGGSound (Chen et al. 2020)", "event classification (100 classes)",
            "audio and video", "CC BY 4.0 (annotations); videos from YouTube",
            "needs a local copy and a backbone",
            "cmkd-doctor extract + examples make vggsound --csv --clips (recipe: "
            "examples/vggsound.md)",
            "Sec. 5.4, Table 4/9, Fig. 5-6"),
    Dataset("nyu", "NYU Depth V2 (Silberman et al. 2012)", "40-class segmentation",
            "RGB and depth images", "see the dataset's terms", "needs a local copy and a "
            "backbone", "cmkd-doctor examples make nyu --mat FILE, then extract (recipe: "
            "examples/nyu_depth_v2.md)",
            "Sec. 3, 5.3, Table 1/3/6"),
    Dataset("mmimdb", "MM-IMDB (Arevalo et al. 2017)", "multi-label genre classification",
            "movie posters (VGG features) and plots (text features)", "see the dataset's "
            "terms", "needs MultiBench's HDF5",
            "cmkd-doctor examples make mmimdb --hdf5 FILE", "App. B.3, Table 7"),
    Dataset("scene15", "15-Scenes (Lazebnik et al. 2006), three hand-crafted descriptors",
            "15-class scene classification, 4,485 images",
            "three views of each image: 20, 59 and 40 features", "research use",
            "real features, read from shared data (multiview/scene15)",
            "cmkd-doctor diagnose --example scene15 (views 1 -> 2; scene15:A,B picks)",
            "not in the paper: real features to test the doctor on",
            make=_multiview("scene15", (1, 2), 3)),
    Dataset("leaves100", "One-hundred plant species leaves (Mallah, Cope and Orwell 2013)",
            "100-class species classification, 1,600 leaves (16 each)",
            "three views: shape, fine-scale margin and texture, 64 features each",
            "CC BY 4.0", "real features, read from shared data (multiview/leaves100)",
            "cmkd-doctor diagnose --example leaves100 (views 0 -> 2; leaves100:A,B picks)",
            "not in the paper: real features to test the doctor on",
            make=_multiview("leaves100", (0, 2), 3)),
):
    DATASETS.add(_dataset.name, _dataset, _dataset.title)
