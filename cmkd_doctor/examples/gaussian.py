"""The paper's synthetic multimodal Gaussian data (Appendix B.2, Eq. 27).

``x* ~ N(0, I_d)``, ``y = 1(<delta, x*> > 0)``; ``x^a ~ N(0, I_d1)`` with ``x^a_J1 = x*_J1``
and ``x^b ~ N(0, I_d2)`` with ``x^b_J2 = x*_J2``. ``J1 & J2`` index the modality-general
decisive features, ``J1 - J2`` and ``J2 - J1`` the modality-specific ones, and
``alpha = 1 - |J2|/|J1 u J2|``, ``beta = 1 - |J1|/|J1 u J2|``, ``gamma = |J1 & J2|/|J1 u J2|``.

Where the copied coordinates sit among a modality's channels does not matter to any
model; they are placed at seeded random positions and ``truth.json`` records them, so a
ranking can be scored against the planted shared channels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cmkd_doctor.errors import option_error
from cmkd_doctor.io.outputs import landed, together, write_json, write_npy
from cmkd_doctor.schemas import stamp

DELTAS = ("normal", "ones")


@dataclass(frozen=True)
class GaussianSpec:
    """Sizes of the generator; the names follow Appendix B.2.

    Attributes
    ----------
    d1, d2
        Channels of modality a and b.
    d
        Dimension of the decisive vector x* (its every coordinate affects y).
    j1, j2, shared
        ``|J1|``, ``|J2|`` and ``|J1 & J2|``.
    """

    # Modality a holds 10 modality-general and 10 a-specific decisive channels, b only
    # the 10 general ones (alpha = gamma = 0.5, beta = 0, as in the paper's Fig. 3 setting):
    # a strong teacher whose help depends on which channels it relies on.
    d1: int = 50
    d2: int = 50
    d: int = 20
    j1: int = 20
    j2: int = 10
    shared: int = 10
    # Data-limited like the paper's Appendix B.2 (200 rows): where a student can use a
    # teacher's help, so crossmodal KD has something to show.
    n_train: int = 1000
    n_test: int = 1000
    seed: int = 0
    # The hyperplane: "normal" draws delta ~ N(0, I_d) as Appendix B.2 states; "ones"
    # weighs every decisive coordinate equally, as the official code's Table 2 script does.
    # (``examples reproduce`` draws the official scripts' own layout and seeds instead.)
    delta: str = "normal"

    def checked(self) -> GaussianSpec:
        for name in ("d1", "d2", "d", "n_train"):
            if getattr(self, name) < 1:
                raise option_error(name, "a whole number >= 1", getattr(self, name))
        for name in ("j1", "j2", "shared", "n_test", "seed"):
            if getattr(self, name) < 0:
                raise option_error(name, "a whole number >= 0", getattr(self, name))
        if self.shared > min(self.j1, self.j2):
            raise option_error("shared", f"at most min(--j1, --j2) = {min(self.j1, self.j2)}",
                               self.shared)
        if self.j1 > self.d1:
            raise option_error("j1", f"at most --d1 = {self.d1}", self.j1)
        if self.j2 > self.d2:
            raise option_error("j2", f"at most --d2 = {self.d2}", self.j2)
        union = self.j1 + self.j2 - self.shared
        if union > self.d:
            raise option_error("d", f"at least |J1 u J2| = --j1 + --j2 - --shared = {union}",
                               self.d)
        if self.delta not in DELTAS:
            raise option_error("delta", f"one of {', '.join(DELTAS)}", self.delta)
        if union == 0:
            raise option_error("j1", "positive, or --j2 positive: no decisive feature would "
                               "reach either modality", self.j1)
        return self


@dataclass
class GaussianData:
    """Training and test arrays plus the planted truth."""

    xa: np.ndarray
    xb: np.ndarray
    y: np.ndarray
    xa_test: np.ndarray
    xb_test: np.ndarray
    y_test: np.ndarray
    truth: dict


def make_gaussian(spec: GaussianSpec | None = None) -> GaussianData:
    """Draw one dataset from Eq. 27; one seed fixes everything, test set included."""
    spec = (spec or GaussianSpec()).checked()
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(spec.d)  # which coordinates of x* go where
    j1 = np.sort(order[: spec.j1])
    j2 = np.sort(order[spec.j1 - spec.shared : spec.j1 - spec.shared + spec.j2])
    pos_a = rng.choice(spec.d1, size=spec.j1, replace=False)  # channel of a holding J1[k]
    pos_b = rng.choice(spec.d2, size=spec.j2, replace=False)
    # the separating hyperplane (drawn either way, so the draws after it do not shift)
    delta = rng.standard_normal(spec.d)
    if spec.delta == "ones":
        delta = np.ones(spec.d)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x_star = rng.standard_normal((n, spec.d))  # (n, d)
        y = (x_star @ delta > 0).astype(np.int64)
        xa = rng.standard_normal((n, spec.d1))
        xb = rng.standard_normal((n, spec.d2))
        xa[:, pos_a] = x_star[:, j1]
        xb[:, pos_b] = x_star[:, j2]
        return xa.astype(np.float32), xb.astype(np.float32), y

    xa, xb, y = draw(spec.n_train)
    xa_t, xb_t, y_t = draw(spec.n_test)

    shared = np.intersect1d(j1, j2)
    union = np.union1d(j1, j2)

    def channels(positions: np.ndarray, index: np.ndarray, width: int) -> dict:
        pairs = list(zip(positions, index, strict=True))
        general = sorted(int(p) for p, k in pairs if k in shared)
        specific = sorted(int(p) for p, k in pairs if k not in shared)
        noise = sorted(set(range(width)) - set(general) - set(specific))
        return {"general": general, "specific": specific, "noise": noise}

    truth = stamp("truth", {
        "generator": "Xue et al. 2023, Appendix B.2, Eq. 27",
        "spec": asdict(spec),
        "J1": j1.tolist(),
        "J2": j2.tolist(),
        "shared": shared.tolist(),
        "alpha": 1 - spec.j2 / len(union),
        "beta": 1 - spec.j1 / len(union),
        "gamma": len(shared) / len(union),
        # the same share weighted by the hyperplane: each decisive coordinate counts with
        # its share of <delta, x*>'s variance (equal to gamma with --delta ones)
        "gamma_weighted": float((delta[shared] ** 2).sum() / (delta[union] ** 2).sum()),
        "delta": delta.tolist(),
        "channels_a": channels(pos_a, j1, spec.d1),
        "channels_b": channels(pos_b, j2, spec.d2),
    })
    return GaussianData(xa, xb, y, xa_t, xb_t, y_t, truth)


GAUSSIAN_FILES = ("feats_a.npy", "feats_b.npy", "labels.npy", "feats_a_test.npy",
                  "feats_b_test.npy", "labels_test.npy", "truth.json")


def write_gaussian(data: GaussianData, out: str | Path) -> list[Path]:
    """Write the arrays and ``truth.json`` into ``out``, landing together."""
    arrays = (data.xa, data.xb, data.y, data.xa_test, data.xb_test, data.y_test)
    with together(out) as stage:
        paths = [write_npy(stage / name, a)
                 for name, a in zip(GAUSSIAN_FILES[:-1], arrays, strict=True)]
        paths.append(write_json(stage / GAUSSIAN_FILES[-1], data.truth))
    return landed(paths, stage, out)


def ranking_against_truth(salience: np.ndarray, truth: dict, side: str) -> dict:
    """How many of the planted shared channels of modality ``side`` a salience puts on
    top (precision at the number of shared channels), with the truth's proportions."""
    general = truth[f"channels_{side}"]["general"]
    top = np.argsort(-np.asarray(salience), kind="stable")[: len(general)].tolist()
    found = sorted(set(top) & set(general))
    return {"shared_channels": general, "top_by_salience": sorted(top), "found": found,
            "precision": len(found) / len(general) if general else None,
            "alpha": truth["alpha"], "beta": truth["beta"], "gamma": truth["gamma"],
            "gamma_weighted": truth.get("gamma_weighted")}


def planted_truth(document: dict, salience: np.ndarray, read_json) -> dict | None:
    """The ranking of ``document`` (a ``rank.json``) against the truth of generated data:
    the ``truth.json`` beside its ranked ``feats_a.npy`` or ``feats_b.npy`` (whichever
    side of this ranking each was given as), read with ``read_json`` (a run's guarded
    reader); ``None`` when there is none, or it describes something else."""
    permuted = Path(document["inputs"][f"feats_{document['permuted_modality']}"]["path"])
    side = {"feats_a.npy": "a", "feats_b.npy": "b"}.get(permuted.name)
    path = permuted.parent / "truth.json"
    if side is None or not path.is_file():
        return None
    try:
        return ranking_against_truth(salience, read_json(path), side)
    except (KeyError, TypeError, IndexError):
        return None  # a truth.json of something else beside the inputs
