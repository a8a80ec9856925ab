"""Preparers for the paper's datasets that need a local copy: RAVDESS and MM-IMDB.

Each reads a public layout and writes the flat files every command takes:
``<modality>.npy`` feature arrays, ``labels.npy``, ``split.npz`` (train/test rows) and a
JSON description. A folder that is not in the expected layout is named in the error
together with what was expected there.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cmkd_doctor.errors import InputError
from cmkd_doctor.examples.avmnist import read_wav
from cmkd_doctor.io.outputs import (
    check_out_dir,
    landed,
    together,
    write_bytes,
    write_json,
    write_npy,
)
from cmkd_doctor.schemas import stamp


@dataclass
class Prepared:
    """Feature arrays by modality name, labels, split rows and a description."""

    features: dict[str, np.ndarray]
    labels: np.ndarray
    train: np.ndarray
    test: np.ndarray
    info: dict


def write_prepared(data: Prepared, out: str | Path, name: str) -> list[Path]:
    """The features, labels, split and ``NAME.json`` of a data set, landing together."""
    buffer = io.BytesIO()
    np.savez(buffer, train=data.train, test=data.test)
    with together(out) as stage:
        paths = [write_npy(stage / f"{k}.npy", v) for k, v in data.features.items()]
        if "rows" in data.info:  # which input rows were kept, to subset feature arrays
            paths.append(write_npy(stage / "rows.npy",
                                   np.asarray(data.info["rows"], np.int64)))
        paths += [write_npy(stage / "labels.npy", data.labels),
                  write_bytes(stage / "split.npz", buffer.getvalue()),
                  write_json(stage / f"{name}.json", stamp("dataset", {
                      **data.info, "n": len(data.labels), "n_train": len(data.train),
                      "n_test": len(data.test),
                      "shapes": {k: list(v.shape[1:]) for k, v in data.features.items()}}))]
    return landed(paths, stage, out)


# --- RAVDESS -------------------------------------------------------------------------

RAVDESS_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust",
                    "surprised")
_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.wav$")


def read_ravdess_official(root: str | Path, image_size: int = 32) -> Prepared:
    """The official code's preprocessed layout: CSV files whose rows are (audio ``.npy``
    name, image file name, label), with the files under ``aud_features/`` and
    ``vid_features/``. CSVs named ``*test*`` give the test rows, the others training.
    Audio features are flattened; images are decoded (torchvision.io), resized to
    ``image_size`` squared and flattened as RGB in [0, 1].
    """
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.functional import resize

    root = Path(root)
    audio_dir, image_dir = root / "aud_features", root / "vid_features"
    tables = sorted(root.glob("*.csv"))
    if not (audio_dir.is_dir() and image_dir.is_dir() and tables):
        found = sorted(p.name for p in root.iterdir())[:8] if root.is_dir() else "no folder"
        raise InputError(f"--root {root}: expected the official RAVDESS layout (aud_features/, "
                         "vid_features/ and CSV files of audio name, image name, label); "
                         f"found {found or 'nothing'}")
    audio, images, labels, is_test = [], [], [], []
    for table in tables:
        with open(table, newline="") as fh:
            rows = list(csv.reader(fh))
        for number, row in enumerate(rows[1:], start=2):  # first row: the header
            if len(row) < 3:
                raise InputError(f"{table}: line {number} has {len(row)} fields; expected "
                                 "audio name, image name, label")
            audio_path, image_path = audio_dir / row[0], image_dir / row[1]
            for path in (audio_path, image_path):
                if not path.is_file():
                    raise InputError(f"{table}: line {number} names {path}, which is missing")
            try:
                audio.append(np.load(audio_path, allow_pickle=False).astype(np.float32)
                             .reshape(-1))
                label = int(row[2])
            except ValueError as exc:
                raise InputError(f"{table}: line {number}: {exc}") from exc
            picture = decode_image(str(image_path), mode=ImageReadMode.RGB)
            picture = resize(picture, [image_size, image_size], antialias=True)
            images.append(picture.float().div(255).reshape(-1).numpy())
            labels.append(label)
            is_test.append("test" in table.stem.lower())
    lengths = {len(a) for a in audio}
    if len(lengths) != 1:
        raise InputError(f"{audio_dir}: audio features have {len(lengths)} different sizes "
                         f"({sorted(lengths)[:4]}); they must match to form one array")
    is_test = np.array(is_test)
    return Prepared({"audio": np.stack(audio), "image": np.stack(images)},
                    np.array(labels, dtype=np.int64), np.flatnonzero(~is_test),
                    np.flatnonzero(is_test),
                    {"dataset": "RAVDESS, the official code's preprocessed layout",
                     "source": str(root.resolve()), "image_size": image_size,
                     "csv": [t.name for t in tables]})


def read_ravdess_audio(folder: str | Path, sample_rate: int = 16000, n_mfcc: int = 40,
                       frames: int = 32, test_actors: tuple[int, ...] = (21, 22, 23, 24)
                       ) -> Prepared:
    """Raw RAVDESS speech: wav files named ``MM-VV-EE-II-SS-RR-AA.wav`` (emotion EE,
    actor AA) -> MFCCs (torchaudio) after Kaiser-window resampling to ``sample_rate``,
    as the paper does, averaged into ``frames`` time steps. Actors ``test_actors`` form
    the test set (no speaker is on both sides).
    """
    from cmkd_doctor.examples.avmnist import torchaudio as audio_extra

    torchaudio = audio_extra("RAVDESS's MFCCs")

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*.wav") if _RAVDESS_NAME.match(p.name))
    if not files:
        raise InputError(f"--raw-audio {folder}: expected RAVDESS wav files named like "
                         "03-01-05-01-02-01-12.wav (modality-channel-emotion-intensity-"
                         "statement-repetition-actor); found none")
    mfcc = torchaudio.transforms.MFCC(sample_rate=sample_rate, n_mfcc=n_mfcc,
                                      melkwargs={"n_fft": 1024, "hop_length": 256,
                                                 "n_mels": 64})
    features, labels, actors = [], [], []
    for path in files:
        fields = _RAVDESS_NAME.match(path.name).groups()
        wave = read_wav(path, sample_rate)  # sinc_interp_kaiser when rates differ
        coefficients = mfcc(wave)  # (n_mfcc, time)
        pooled = torch.nn.functional.adaptive_avg_pool1d(coefficients[None], frames)[0]
        features.append(pooled.reshape(-1).numpy())
        labels.append(int(fields[2]) - 1)
        actors.append(int(fields[6]))
    actors = np.array(actors)
    is_test = np.isin(actors, test_actors)
    return Prepared({"audio": np.stack(features).astype(np.float32)},
                    np.array(labels, dtype=np.int64), np.flatnonzero(~is_test),
                    np.flatnonzero(is_test),
                    {"dataset": "RAVDESS speech audio, MFCC", "source": str(folder.resolve()),
                     "sample_rate": sample_rate, "resampling": "sinc_interp_kaiser",
                     "n_mfcc": n_mfcc, "frames": frames, "test_actors": list(test_actors),
                     "classes": list(RAVDESS_EMOTIONS), "files": [p.name for p in files],
                     "actors": actors.tolist()})


# --- MM-IMDB ---------------------------------------------------------------------------

# MultiBench's / gmu-mmimdb's standard index splits of multimodal_imdb.hdf5 (App. B.3).
MMIMDB_SPLITS = {"train": (0, 15552), "dev": (15552, 18160), "test": (18160, 25959)}


def read_mmimdb(hdf5: str | Path, columns: tuple[int, ...] | None = None) -> Prepared:
    """MultiBench's ``multimodal_imdb.hdf5``: ``features`` (text), ``vgg_features``
    (poster images) and ``genres`` (multi-hot). The standard splits put rows
    0-15551 in train, 15552-18159 in dev (kept for training here) and 18160-25958 in
    test. ``columns`` picks genre columns (the paper's task keeps two: drama and comedy).
    """
    try:
        import h5py
    except ImportError:
        raise InputError("MM-IMDB needs h5py: pip install h5py") from None
    hdf5 = Path(hdf5)
    if not hdf5.is_file():
        raise InputError(f"--hdf5 {hdf5}: no such file (expected MultiBench's "
                         "multimodal_imdb.hdf5)")
    try:
        with h5py.File(hdf5, "r") as fh:
            missing = [k for k in ("features", "vgg_features", "genres") if k not in fh]
            if missing:
                raise InputError(f"--hdf5 {hdf5}: expected datasets features, vgg_features "
                                 f"and genres (MultiBench's layout); missing "
                                 f"{', '.join(missing)}")
            text = np.asarray(fh["features"], dtype=np.float32)
            image = np.asarray(fh["vgg_features"], dtype=np.float32)
            genres = np.asarray(fh["genres"])
    except OSError as exc:
        raise InputError(f"--hdf5 {hdf5}: not a readable HDF5 file ({exc})") from exc
    n = len(genres)
    if n != MMIMDB_SPLITS["test"][1] or len(text) != n or len(image) != n:
        raise InputError(f"--hdf5 {hdf5}: {len(text)} text, {len(image)} image and {n} genre "
                         f"rows; the standard splits need {MMIMDB_SPLITS['test'][1]} of each")
    if columns:
        bad = [c for c in columns if not 0 <= c < genres.shape[1]]
        if bad:
            raise InputError(f"--columns: {bad[0]} is out of range; the file has "
                             f"{genres.shape[1]} genre columns")
        genres = genres[:, list(columns)]
    return Prepared({"text": text.reshape(n, -1), "image": image.reshape(n, -1)},
                    genres.astype(np.int64), np.arange(MMIMDB_SPLITS["dev"][1]),
                    np.arange(*MMIMDB_SPLITS["test"]),
                    {"dataset": "MM-IMDB, MultiBench's HDF5", "source": str(hdf5.resolve()),
                     "splits": MMIMDB_SPLITS, "dev": "kept with train (cmkd-doctor holds "
                     "back its own validation rows)", "genre_columns": list(columns or [])})


# --- VGGSound ---------------------------------------------------------------------------

def read_vggsound(csv_path: str | Path, clips: str | Path, classes: int | None = None
                  ) -> Prepared:
    """Labels and split for clips whose features the user extracted, from VGGSound's
    public ``vggsound.csv`` (rows: YouTube id, start seconds, label, train/test).

    ``clips`` lists the clips in the order of the feature rows, one per line as
    ``<youtube id>_<start seconds>`` (the usual clip file stem) or ``<id>,<start>``.
    ``classes`` keeps the clips of the first N classes in alphabetical order (the
    paper uses 100); the kept rows are written as ``rows.npy`` so the feature arrays
    can be subset to match.
    """
    csv_path, clips = Path(csv_path), Path(clips)
    for path, what in ((csv_path, "--csv"), (clips, "--clips")):
        if not path.is_file():
            raise InputError(f"{what} {path}: no such file")
    table = {}
    with open(csv_path, newline="") as fh:
        for number, row in enumerate(csv.reader(fh), start=1):
            if len(row) < 4 or row[3].strip() not in ("train", "test"):
                if number == 1:
                    continue  # a header row
                raise InputError(f"--csv {csv_path}: line {number} is not 'youtube id, start "
                                 "seconds, label, train|test' (VGGSound's vggsound.csv)")
            table[(row[0].strip(), int(float(row[1])))] = (row[2].strip(), row[3].strip())
    wanted = []
    for number, line in enumerate(clips.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        head, sep, tail = line.rpartition(",") if "," in line else line.rpartition("_")
        try:
            key = (head.strip(), int(float(tail)))
        except ValueError:
            raise InputError(f"--clips {clips}: line {number} ({line!r}) is not "
                             "<youtube id>_<start seconds>") from None
        if key not in table:
            raise InputError(f"--clips {clips}: line {number} ({line!r}) is not in {csv_path}")
        wanted.append(key)
    names = sorted({table[k][0] for k in wanted})
    if classes is not None:
        names = names[:classes]
    keep = [i for i, k in enumerate(wanted) if table[k][0] in names]
    labels = np.array([names.index(table[wanted[i]][0]) for i in keep], dtype=np.int64)
    is_test = np.array([table[wanted[i]][1] == "test" for i in keep])
    return Prepared({}, labels, np.flatnonzero(~is_test), np.flatnonzero(is_test),
                    {"dataset": "VGGSound labels and split", "csv": str(csv_path.resolve()),
                     "classes": names, "rows": keep})


# --- NYU Depth V2 -----------------------------------------------------------------------

def _mat_strings(fh, name: str) -> list[str]:
    """A MATLAB v7.3 cell array of strings: object references to uint16 char codes."""
    refs = np.asarray(fh[name]).reshape(-1)
    return ["".join(chr(int(c)) for c in np.asarray(fh[ref]).reshape(-1)) for ref in refs]


def read_nyu(mat: str | Path, size: int | None = 224, splits: str | Path | None = None
             ) -> Prepared:
    """NYU Depth V2's ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3): ``images``, ``depths``
    and ``sceneTypes``. Writes RGB and depth (repeated to 3 channels, scaled to 0-255 over
    0-10 m) as uint8 ``(n, 3, size, size)`` arrays for ``cmkd-doctor extract --array``,
    and scene-type labels. ``splits`` (the official ``splits.mat``: 1-based
    ``trainNdxs``/``testNdxs``) gives the 795/654 split; without it every row is train
    and ``rank`` draws its own.
    """
    try:
        import h5py
    except ImportError:
        raise InputError("NYU Depth V2 needs h5py: pip install h5py") from None
    mat = Path(mat)
    if not mat.is_file():
        raise InputError(f"--mat {mat}: no such file (expected nyu_depth_v2_labeled.mat)")
    try:
        with h5py.File(mat, "r") as fh:
            missing = [k for k in ("images", "depths", "sceneTypes") if k not in fh]
            if missing:
                raise InputError(f"--mat {mat}: expected images, depths and sceneTypes (the "
                                 f"labeled NYU Depth V2 file); missing {', '.join(missing)}")
            # MATLAB stores arrays transposed: (n, 3, W, H) and (n, W, H)
            rgb = torch.as_tensor(np.asarray(fh["images"])).permute(0, 1, 3, 2)
            depth = torch.as_tensor(np.asarray(fh["depths"], dtype=np.float32)).permute(0, 2, 1)
            scenes = _mat_strings(fh, "sceneTypes")
    except OSError as exc:
        raise InputError(f"--mat {mat}: not a MATLAB v7.3 (HDF5) file ({exc})") from exc
    depth = (depth.clamp(0, 10) / 10 * 255)[:, None].repeat(1, 3, 1, 1)
    if size is not None:
        def shrink(x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(x.float(), size=(size, size),
                                                   mode="bilinear", antialias=True)
        rgb, depth = shrink(rgb), shrink(depth)
    names = sorted(set(scenes))
    labels = np.array([names.index(s) for s in scenes], dtype=np.int64)
    n = len(labels)
    train, test = np.arange(n), np.empty(0, dtype=np.int64)
    if splits is not None:
        try:
            with h5py.File(splits, "r") as fh:
                train = np.asarray(fh["trainNdxs"]).reshape(-1).astype(np.int64) - 1
                test = np.asarray(fh["testNdxs"]).reshape(-1).astype(np.int64) - 1
        except (OSError, KeyError) as exc:
            raise InputError(f"--splits {splits}: expected the official splits.mat with "
                             f"trainNdxs and testNdxs ({exc})") from exc
    to_uint8 = lambda x: x.round().clamp(0, 255).to(torch.uint8).numpy()  # noqa: E731
    return Prepared({"rgb": to_uint8(rgb), "depth": to_uint8(depth)}, labels, train, test,
                    {"dataset": "NYU Depth V2 (labeled), scene types",
                     "source": str(mat.resolve()), "classes": names, "size": size,
                     "note": "rgb.npy and depth.npy are image arrays (n, 3, H, W) for "
                             "'cmkd-doctor extract --array'; depth is 0-10 m scaled to "
                             "0-255"})


def make(name: str, out: str | Path, read) -> Prepared:
    """``examples make NAME``: check ``out``, read the data with ``read()``, write it."""
    check_out_dir(out)
    data = read()
    write_prepared(data, out, name)
    return data


def make_ravdess(out: str | Path, root: str | Path | None = None,
                 raw_audio: str | Path | None = None, image_size: int = 32) -> Prepared:
    if (root is None) == (raw_audio is None):
        raise InputError("examples make ravdess needs --root DIR (the official preprocessed "
                         "layout) or --raw-audio DIR (wav files), one of them")
    return make("ravdess", out, lambda: read_ravdess_official(root, image_size)
                if root is not None else read_ravdess_audio(raw_audio))
