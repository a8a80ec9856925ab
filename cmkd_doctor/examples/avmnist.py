"""AV-MNIST (Vielzeuf et al. 2018; paper Sec. 3 and Appendix B.1) built from raw files.

Images: MNIST digits with 75% of their PCA energy removed. The images are projected
onto their principal components, and only the leading components holding the first 25%
of the variance are kept (``energy_removed`` sets the share). Audio: Free Spoken Digit
Dataset recordings with white noise injected at ``snr_db``, as log-mel spectrograms
(torchaudio) pooled to a fixed grid. The paper injects natural noise; none ships here.
Each image is paired at random (seeded) with a recording of the same digit.

Split: FSDD's own convention puts recording indices 0-4 of every speaker and digit in
the test set (10%). Test images are drawn per digit in the same proportion and paired
only with test recordings, the rest only with training recordings, so no image and no
test recording is seen in training. When MNIST's training files are in the folder too,
they supply the training images and the t10k files the test images.

Also reads MultiBench's preprocessed layout: ``image/{train,test}_data.npy``,
``audio/{train,test}_data.npy`` and ``{train,test}_labels.npy``.
"""

from __future__ import annotations

import gzip
import io
import re
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cmkd_doctor.errors import InputError, option_error
from cmkd_doctor.examples.datasets import example_root
from cmkd_doctor.examples.downloads import FetchOptions
from cmkd_doctor.io.outputs import (
    check_out_dir,
    landed,
    together,
    write_bytes,
    write_json,
    write_npy,
)
from cmkd_doctor.progress import Progress, no_progress
from cmkd_doctor.schemas import stamp
from cmkd_doctor.seeds import generator

MNIST_FILES = {"test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
               "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")}
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


@dataclass(frozen=True)
class AVMnistSpec:
    """How AV-MNIST is built; every choice is recorded in ``avmnist.json``."""

    energy_removed: float = 0.75
    snr_db: float = 0.0
    sample_rate: int = 8000
    seconds: float = 1.0
    n_mels: int = 32
    frames: int = 16
    seed: int = 0

    def checked(self) -> AVMnistSpec:
        if not 0 <= self.energy_removed < 1:
            raise option_error("energy_removed", "a fraction in [0, 1)", self.energy_removed)
        if self.n_mels < 1 or self.frames < 1:
            raise option_error("n_mels", "a positive whole number (and --frames too)",
                               min(self.n_mels, self.frames))
        if not self.seconds > 0:
            raise option_error("seconds", "a positive number", self.seconds)
        return self


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path, magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from exc
    if len(data) < 8 or int.from_bytes(data[:4], "big") != magic:
        raise InputError(f"{path}: not an MNIST idx file (magic number "
                         f"{int.from_bytes(data[:4], 'big') if len(data) >= 4 else None}, "
                         f"expected {magic})")
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise InputError(f"{path}: truncated ({body.size} values, expected "
                         f"{int(np.prod(shape))})")
    return body.reshape(shape)


def read_mnist(folder: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST images ``(n, 28, 28)`` uint8 and labels per available part (test, train)."""
    folder = Path(folder)
    parts = {}
    for part, (images, labels) in MNIST_FILES.items():
        found = _find(folder, images), _find(folder, labels)
        if all(found):
            x = _read_idx(found[0], 2051)
            y = _read_idx(found[1], 2049)
            if len(x) != len(y):
                raise InputError(f"{found[1]}: {len(y)} labels for {len(x)} images")
            parts[part] = (x, y.astype(np.int64))
    if "test" not in parts:
        present = sorted(p.name for p in folder.iterdir())[:8] if folder.is_dir() else []
        raise InputError(f"--mnist {folder}: expected the MNIST files "
                         f"{MNIST_FILES['test'][0]}[.gz] and {MNIST_FILES['test'][1]}[.gz] "
                         f"there; found {present or 'nothing'}")
    return parts


@dataclass(frozen=True)
class Recording:
    digit: int
    speaker: str
    index: int
    path: Path

    @property
    def is_test(self) -> bool:
        return self.index < 5  # FSDD's own test convention


def list_fsdd(folder: str | Path) -> list[Recording]:
    """FSDD recordings ``{digit}_{speaker}_{index}.wav`` in ``folder`` or its recordings/."""
    folder = Path(folder)
    for candidate in (folder / "recordings", folder):
        if candidate.is_dir():
            found = [Recording(int(m[1]), m[2], int(m[3]), p)
                     for p in sorted(candidate.iterdir()) if (m := _FSDD_NAME.match(p.name))]
            if found:
                return found
    raise InputError(f"--fsdd {folder}: expected Free Spoken Digit Dataset recordings named "
                     "{digit}_{speaker}_{index}.wav there or in its recordings/ folder; "
                     "found none")


def torchaudio(what: str):
    """The torchaudio module (the ``audio`` extra), or one error line saying how to get
    it: audio features need it, and a plain install leaves it out (its wheels want a
    torch at least as new as themselves, which must not replace a user's CUDA build)."""
    try:
        import torchaudio as found
    except ImportError:
        raise InputError(f"{what} needs torchaudio, which is not installed: pip install "
                         "'cmkd-doctor[audio]'") from None
    return found


def read_wav(path: Path, sample_rate: int) -> torch.Tensor:
    """A mono 16-bit PCM wav as float32 in [-1, 1), resampled to ``sample_rate``."""
    try:
        with wave.open(str(path), "rb") as fh:
            if fh.getsampwidth() != 2:
                raise InputError(f"{path}: {8 * fh.getsampwidth()}-bit audio; expected 16-bit "
                                 "PCM")
            rate, channels = fh.getframerate(), fh.getnchannels()
            raw = fh.readframes(fh.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise InputError(f"{path}: not a readable wav file ({exc})") from exc
    audio = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768
    audio = torch.from_numpy(audio.reshape(-1, channels).mean(axis=1))
    if rate != sample_rate:
        resample = torchaudio("resampling audio").functional.resample
        audio = resample(audio, rate, sample_rate, resampling_method="sinc_interp_kaiser")
    return audio


def remove_energy(images: np.ndarray, fraction: float) -> tuple[np.ndarray, int]:
    """Keep only the leading principal components that hold ``1 - fraction`` of the
    variance; returns the reconstructed images ``(n, 784)`` and the components kept."""
    x = torch.tensor(images.reshape(len(images), -1), dtype=torch.float64) / 255
    mean = x.mean(0)
    centred = x - mean
    values, vectors = torch.linalg.eigh(centred.T @ centred / len(x))  # ascending
    values, vectors = values.flip(0), vectors.flip(1)
    share = values.cumsum(0) / values.sum()
    keep = int(torch.searchsorted(share, torch.tensor(1 - fraction, dtype=share.dtype))) + 1
    basis = vectors[:, :keep]  # (784, k)
    return ((centred @ basis) @ basis.T + mean).float().numpy(), keep


def log_mel(waves: torch.Tensor, spec: AVMnistSpec) -> torch.Tensor:
    """``(n, samples)`` -> ``(n, n_mels * frames)`` log-mel features (torchaudio)."""
    mel = torchaudio("making log-mel spectrograms").transforms.MelSpectrogram(
        sample_rate=spec.sample_rate, n_fft=256, hop_length=64, n_mels=spec.n_mels)(waves)
    pooled = torch.nn.functional.adaptive_avg_pool1d(mel, spec.frames)  # (n, mels, frames)
    return torch.log(pooled + 1e-6).reshape(len(waves), -1)


@dataclass
class AVMnist:
    image: np.ndarray  # (n, 784)
    audio: np.ndarray  # (n, n_mels * frames)
    labels: np.ndarray  # (n,)
    train: np.ndarray  # row indices
    test: np.ndarray
    info: dict


def build_avmnist(mnist: str | Path, fsdd: str | Path, spec: AVMnistSpec | None = None
                  ) -> AVMnist:
    """Build AV-MNIST from the raw MNIST and FSDD files (see the module docstring)."""
    spec = (spec or AVMnistSpec()).checked()
    parts = read_mnist(mnist)
    recordings = list_fsdd(fsdd)
    if "train" in parts:
        images = np.concatenate([parts["train"][0], parts["test"][0]])
        digits = np.concatenate([parts["train"][1], parts["test"][1]])
        is_test = np.r_[np.zeros(len(parts["train"][1]), bool), np.ones(len(parts["test"][1]),
                                                                         bool)]
    else:
        images, digits = parts["test"]
        share = np.mean([r.is_test for r in recordings])
        is_test = np.zeros(len(digits), bool)
        gen = generator(spec.seed, "avmnist_split")
        for d in range(10):
            rows = np.flatnonzero(digits == d)
            rows = rows[torch.randperm(len(rows), generator=gen).numpy()]
            is_test[rows[: round(share * len(rows))]] = True
    for d in range(10):
        for side in (True, False):
            if not any(r.digit == d and r.is_test == side for r in recordings):
                raise InputError(f"--fsdd {fsdd}: no {'test' if side else 'training'} "
                                 f"recording of digit {d} (FSDD's test recordings have "
                                 "indices 0-4)")

    flat, kept = remove_energy(images, spec.energy_removed)
    pool = {(d, side): [r for r in recordings if r.digit == d and r.is_test == side]
            for d in range(10) for side in (True, False)}
    gen = generator(spec.seed, "avmnist_pair")
    choice = np.empty(len(digits), dtype=np.int64)
    chosen: list[Recording] = []
    for i, (d, side) in enumerate(zip(digits, is_test, strict=True)):
        candidates = pool[(int(d), bool(side))]
        choice[i] = int(torch.randint(len(candidates), (1,), generator=gen))
        chosen.append(candidates[choice[i]])

    length = int(spec.seconds * spec.sample_rate)
    clean = {}
    for rec in {r.path: r for r in chosen}.values():
        audio = read_wav(rec.path, spec.sample_rate)[:length]
        clean[rec.path] = torch.nn.functional.pad(audio, (0, length - len(audio)))
    waves = torch.stack([clean[r.path] for r in chosen])  # (n, samples)
    power = waves.square().sum(1, keepdim=True) / (waves.abs() > 1e-4).sum(1, keepdim=True
                                                                          ).clamp(min=1)
    noise = torch.randn(waves.shape, generator=generator(spec.seed, "avmnist_noise"))
    waves = waves + noise * torch.sqrt(power / 10 ** (spec.snr_db / 10))
    audio = torch.cat([log_mel(waves[i : i + 2048], spec) for i in range(0, len(waves), 2048)])

    info = {"dataset": "AV-MNIST (Vielzeuf et al. 2018), built by cmkd-doctor",
            "spec": asdict(spec), "pca_components_kept": kept,
            "mnist_parts": sorted(parts), "n_recordings": len(recordings),
            "recording": [str(r.path.name) for r in chosen],
            "split": "FSDD convention: recordings 0-4 of each speaker and digit are test; "
                     "test images are paired with test recordings only"}
    return AVMnist(flat.astype(np.float32), audio.numpy().astype(np.float32), digits,
                   np.flatnonzero(~is_test), np.flatnonzero(is_test), info)


def read_multibench(folder: str | Path) -> AVMnist:
    """MultiBench's preprocessed AV-MNIST: image/ and audio/ ``{train,test}_data.npy``
    and ``{train,test}_labels.npy``; each sample is flattened to one feature row."""
    folder = Path(folder)
    names = ["image/train_data.npy", "image/test_data.npy", "audio/train_data.npy",
             "audio/test_data.npy", "train_labels.npy", "test_labels.npy"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise InputError(f"--multibench {folder}: expected MultiBench's AV-MNIST layout "
                         f"({', '.join(names)}); missing {', '.join(missing)}")
    arrays = {}
    for name in names:
        try:
            arrays[name] = np.load(folder / name, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{folder / name}: cannot be read as .npy ({exc})") from exc
    image = np.concatenate([arrays["image/train_data.npy"], arrays["image/test_data.npy"]])
    audio = np.concatenate([arrays["audio/train_data.npy"], arrays["audio/test_data.npy"]])
    labels = np.concatenate([arrays["train_labels.npy"], arrays["test_labels.npy"]])
    n_train = len(arrays["train_labels.npy"])
    if not len(image) == len(audio) == len(labels):
        raise InputError(f"--multibench {folder}: {len(image)} images, {len(audio)} audio "
                         f"samples and {len(labels)} labels; they must match")
    return AVMnist(image.reshape(len(image), -1).astype(np.float32),
                   audio.reshape(len(audio), -1).astype(np.float32),
                   labels.reshape(-1).astype(np.int64), np.arange(n_train),
                   np.arange(n_train, len(labels)),
                   {"dataset": "AV-MNIST, MultiBench's preprocessed layout",
                    "source": str(folder.resolve())})


def write_avmnist(data: AVMnist, out: str | Path) -> list[Path]:
    """``image.npy``, ``audio.npy``, ``labels.npy``, ``split.npz`` and ``avmnist.json``,
    landing together."""
    buffer = io.BytesIO()
    np.savez(buffer, train=data.train, test=data.test)
    with together(out) as stage:
        paths = [write_npy(stage / "image.npy", data.image),
                 write_npy(stage / "audio.npy", data.audio),
                 write_npy(stage / "labels.npy", data.labels),
                 write_bytes(stage / "split.npz", buffer.getvalue()),
                 write_json(stage / "avmnist.json", stamp("dataset", {
                     **data.info, "n": len(data.labels),
                                                     "n_train": len(data.train),
                                                     "n_test": len(data.test),
                                                     "image_dim": data.image.shape[1],
                     "audio_dim": data.audio.shape[1]}))]
    return landed(paths, stage, out)


def make_avmnist(out: str | Path, mnist: str | Path | None = None,
                 fsdd: str | Path | None = None, multibench: str | Path | None = None,
                 spec: AVMnistSpec | None = None, data: FetchOptions | None = None,
                 progress: Progress = no_progress) -> AVMnist:
    """``examples make avmnist``: build AV-MNIST from the raw files (or read MultiBench's
    copy) and write it into ``out``, checked before any work.

    Without ``mnist``, ``fsdd`` and ``multibench`` the raw files are read from the data
    root (``data``), fetched there first with ``data.download``."""
    check_out_dir(out)
    spec = (spec or AVMnistSpec()).checked()
    if multibench is not None:
        if mnist is not None or fsdd is not None:
            raise InputError("--multibench replaces --mnist and --fsdd; give one or the other")
        built = read_multibench(multibench)
    elif (mnist is None) != (fsdd is None):
        raise InputError(f"--{'fsdd' if fsdd is None else 'mnist'} is missing: give --mnist "
                         "DIR and --fsdd DIR together, or neither to read the data root")
    else:
        torchaudio("AV-MNIST's audio (log-mel spectrograms)")  # before any download
        if mnist is None:
            root = example_root("avmnist", data, progress)
            mnist, fsdd = root / "mnist", root / "fsdd"
        built = build_avmnist(mnist, fsdd, spec)
    write_avmnist(built, out)
    return built
