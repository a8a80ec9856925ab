"""The paper's six datasets: what each is, and how cmkd-doctor gets it (a registry).

A dataset that is built in carries ``make``: it writes the example's arrays into a
folder and returns their paths (feats_a, feats_b, labels) and, for generated data, the
truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cmkd_doctor.gaussian import GaussianSpec, make_gaussian, write_gaussian
from cmkd_doctor.registry import Registry


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
    make: Callable[[Path, GaussianSpec], tuple[list[Path], dict | None]] | None = field(
        default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in ("name", "title", "task", "modalities",
                                              "licence", "availability", "prepare", "paper")}


def _make_gaussian(folder: Path, spec: GaussianSpec) -> tuple[list[Path], dict]:
    data = make_gaussian(spec)
    write_gaussian(data, folder)
    return [folder / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")], data.truth


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
):
    DATASETS.add(_dataset.name, _dataset, _dataset.title)
