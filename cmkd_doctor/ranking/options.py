"""The options of Algorithm 1 (:class:`RankOptions`), its protocols (cmkd-doctor's
defaults, the official code's) and the registries a ranking is configured by: the
estimator of steps 2-8, the permutation scheme, the ranked modality and the permuted rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cmkd_doctor.choices import (
    CHUNK_ROWS_DEFAULT,
    DISTANCES,
    EPOCHS_DEFAULT,
    ESTIMATORS,
    NORMALIZATIONS,
    OPTIMIZERS,
    RESTARTS_DEFAULT,
)
from cmkd_doctor.errors import InputError, option_error
from cmkd_doctor.io.files import regular_file
from cmkd_doctor.registry import Registry
from cmkd_doctor.validation import MAX_SEEDS, SEEDS_WHY, number, parse_hidden, whole

# light (no torch): the CLI's help reads these options' defaults and names; the
# estimators of steps 2-8 are bound in cmkd_doctor.ranking.run
__all__ = ["ESTIMATORS", "FLAGS", "PERMUTATIONS", "PERMUTED_ROWS", "RANK_PROTOCOLS", "SIDES",
           "Flag", "RankOptions", "RankProtocol"]


@dataclass(frozen=True)
class RankOptions:
    """Options of ``rank``; defaults are the CLI's.

    Attributes
    ----------
    repeats
        M, permutations per channel (Algorithm 1, step 4).
    hidden
        Hidden widths of both networks; ``()`` is a linear model.
    epochs
        Training epochs for step 1; ``None``: :data:`~cmkd_doctor.choices.EPOCHS_DEFAULT`.
    dist
        Dist of Eq. 28 and step 6, by name (see :data:`cmkd_doctor.training.losses.DISTANCES`).
    normalize
        Step 9: ``max`` (the paper's) or ``minmax`` (the official code's).
    permute
        ``a`` ranks modality a's channels; ``b`` ranks modality b's (paper note 3).
    test_split
        Fraction of rows held out (stratified); 0 keeps all for training.
    split
        A ``.npz`` with ``train`` and ``test`` row indices to use instead of
        ``test_split`` (a dataset's documented split).
    estimator
        ``sampled`` (M permutations) or ``exact`` (the closed-form expectation over all
        permutations; linear head with MSE only, see :func:`expected_increase`).
    permute_on
        Rows whose channels are permuted in steps 2-8: ``test`` (the held-out rows, the
        default; networks that memorised their training rows cannot fake agreement
        there) or ``train``. With no held-out rows, the training rows are used.
    chunk_rows
        Rows read at a time when the inputs are streamed from memory-mapped ``.npy``
        files; ``None`` keeps them on the device when they fit and otherwise picks
        chunk sets of about 128 MiB (:mod:`cmkd_doctor.io.streaming`).
    patience
        Stop step 1 once the Eq. 28 loss on a validation tenth of the training rows has
        not improved for this many epochs and keep the best epoch; 0 trains all epochs.
    restarts
        Train the aligned pair this many times (another initialisation, minibatch order
        and permutations each, the same split) and average the salience; 2 or more
        measure the ranking's stability. ``None``: 3 when one ranking costs at most
        :data:`AUTO_RESTART_FLOP` (:func:`ranking_cost`, every epoch of the schedule
        counted), else 1 (``diagnose``'s default). The cost is counted before any
        training, not timed, so every process and machine decides the same. The
        restarts' aligned pairs train as one stacked fit.
    standardize
        Standardise every channel with its fit-row mean and standard deviation inside
        the networks (:func:`cmkd_doctor.training.mlp.standardisation`), so the ranking does
        not depend on a channel's units; ``False`` feeds raw features.
    optimizer
        Step 1's optimiser, a name in :data:`cmkd_doctor.training.engine.OPTIMIZERS`.
    permutation
        ``shared``: repeat m permutes every channel with the same row permutation;
        ``per_channel``: a fresh permutation per (channel, repeat), as the official code
        draws them (needs the permuted rows in memory).
    groups
        ``none``: every channel is permuted alone (Algorithm 1 as written); ``auto``:
        channels whose absolute Spearman correlation on the fit rows is above
        ``group_threshold`` are permuted together (:mod:`cmkd_doctor.ranking.groups`); a path:
        a ``.npy`` of one group id per channel of the ranked modality.
    group_threshold
        The correlation above which ``groups auto`` joins two channels.
    protocol
        The set of defaults these options came from (:data:`RANK_PROTOCOLS`, see
        :meth:`for_protocol`); recorded, it changes nothing by itself.
    """

    repeats: int = 10
    hidden: tuple[int, ...] = (256,)
    epochs: int | None = None
    batch_size: int | None = 256  # None: full batch
    lr: float = 1e-3
    dist: str = "mse"
    normalize: str = "max"
    permute: str = "a"
    test_split: float = 0.2
    permute_on: str = "test"
    patience: int = 10
    split: str | None = None
    estimator: str = "sampled"
    chunk_rows: int | None = None
    restarts: int | None = 1
    standardize: bool = True
    optimizer: str = "adam"
    permutation: str = "shared"
    groups: str = "none"
    group_threshold: float = 0.8
    protocol: str = "doctor"
    device: str = "auto"
    seed: int = 0

    @classmethod
    def for_protocol(cls, protocol: str = "doctor", **options: Any) -> RankOptions:
        """The options of ``protocol`` (:data:`RANK_PROTOCOLS`), ``options`` overriding
        them: ``RankOptions.for_protocol("official", repeats=10)``."""
        return cls(**{**RANK_PROTOCOLS[protocol].options, **options, "protocol": protocol})

    @classmethod
    def from_given(cls, given: dict[str, Any], base: RankOptions | None = None
                   ) -> RankOptions:
        """The options a user gave (flags, a config's ``rank:`` section) over the
        defaults of their protocol (``given``'s or ``base``'s, :data:`RANK_PROTOCOLS`),
        over ``base`` (:class:`RankOptions`' defaults when ``None``): what was given wins,
        then the protocol, then the base."""
        base = base or cls()
        protocol = given.get("protocol", base.protocol)
        RANK_PROTOCOLS.check(protocol)
        return cls(**{**asdict(base), **RANK_PROTOCOLS[protocol].options, **given,
                      "protocol": protocol})

    def checked(self) -> RankOptions:
        """Validate every option; return a copy with ``hidden`` parsed."""
        RANK_PROTOCOLS.check(self.protocol)
        OPTIMIZERS.check(self.optimizer)
        PERMUTATIONS.check(self.permutation)
        whole("repeats", self.repeats, 1)
        whole("epochs", self.epochs, 1, optional=True)
        whole("batch_size", self.batch_size, 1, optional=True)
        number("lr", self.lr, "a positive number", low=0, open_low=True)
        DISTANCES.check(self.dist)
        NORMALIZATIONS.check(self.normalize)
        SIDES.check(self.permute)
        number("test_split", self.test_split, "a fraction in [0, 1)", low=0, high=1,
               open_high=True)
        PERMUTED_ROWS.check(self.permute_on)
        whole("patience", self.patience, 0)
        whole("seed", self.seed, 0)
        # restarts average the salience like seeds: past 1000 they only cost time
        whole("restarts", self.restarts, 1, optional=True, maximum=MAX_SEEDS, why=SEEDS_WHY)
        if not isinstance(self.standardize, bool):
            raise option_error("standardize", "true or false", self.standardize)
        ESTIMATORS.check(self.estimator)
        if self.estimator == "exact" and (parse_hidden(self.hidden) or self.dist != "mse"):
            raise InputError("--estimator exact has a closed form only for a linear head "
                             "with MSE: use --hidden 0 --dist mse, or --estimator sampled "
                             "(no closed form exists through a ReLU or for l1/kl)")
        whole("chunk_rows", self.chunk_rows, 1, optional=True)
        number("group_threshold", self.group_threshold, "a correlation in (0, 1)", low=0,
               high=1, open_low=True, open_high=True)
        groups = self.groups
        if not isinstance(groups, str) or not groups:
            raise option_error("groups", "none, auto or a .npy file of group ids", groups)
        if groups not in ("none", "auto"):
            regular_file(groups, f"--groups {groups}")
            groups = str(Path(groups).resolve())
        if groups != "none" and (self.estimator != "sampled"
                                 or self.permutation != "shared"):
            raise InputError(f"--groups {self.groups}: groups are permuted with the sampled "
                             "estimator and one permutation per repeat (--estimator sampled "
                             "--permutation shared)")
        if self.split is not None:
            regular_file(self.split, f"--split {self.split}")
        return replace(self, hidden=parse_hidden(self.hidden), groups=groups,
                       split=None if self.split is None else str(Path(self.split).resolve()))

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden)}


@dataclass(frozen=True)
class RankProtocol:
    """A named set of :class:`RankOptions` defaults."""

    options: dict[str, Any]


RANK_PROTOCOLS: Registry[RankProtocol] = Registry("protocol")
RANK_PROTOCOLS.add("doctor", RankProtocol({}),
                   "cmkd-doctor's defaults: held-out rows, early stopping, Adam, an MLP, "
                   "standardised inputs")
# What the official Gaussian loop does (zihuixue/MFH, gauss/main_modify_gamma.py,
# train_for_overlap_tag and cal_overlap_tag): linear f1 and f2 trained jointly on every
# row (CE + CE + MSE) by full-batch SGD with momentum 0.9 at lr 0.01 for 1000 epochs,
# then M = 100 fresh permutations per channel of the training rows, MSE, min-max.
RANK_PROTOCOLS.add("official", RankProtocol({
    "repeats": 100, "hidden": (), "epochs": 1000, "batch_size": None, "lr": 0.01,
    "optimizer": "sgd_momentum", "patience": 0, "test_split": 0.0, "permute_on": "train",
    "dist": "mse", "normalize": "minmax", "standardize": False,
    "permutation": "per_channel", "restarts": 1}),
    "Algorithm 1 as the official code runs it: every row, 1000 epochs of full-batch SGD "
    "(momentum 0.9, lr 0.01), linear networks, raw inputs, M = 100 fresh permutations "
    "per channel of the training rows, min-max")


PERMUTATIONS: Registry[str] = Registry("permutation")
PERMUTATIONS.add("shared", "shared", "repeat m permutes every channel with one row "
                 "permutation")
PERMUTATIONS.add("per_channel", "per_channel", "a fresh permutation per (channel, repeat), "
                 "as the official code")


# The modality whose channels are ranked, and the rows permuted in steps 2-8.
SIDES: Registry[int] = Registry("permute")
SIDES.add("a", 0, "rank modality a's channels (the teacher's)")
SIDES.add("b", 1, "rank modality b's channels (paper note 3)")


PERMUTED_ROWS: Registry[str] = Registry("permute_on")
PERMUTED_ROWS.add("test", "test", "the held-out rows (networks that memorised their "
                  "training rows cannot fake agreement there)")
PERMUTED_ROWS.add("train", "train", "the training rows (the literal reading)")


# ---- every field above but the optimizer as a flag of rank and diagnose, declared once

@dataclass(frozen=True)
class Flag:
    """One of rank's options on the command line: its type there, its flag names and
    its help (the default is appended from :class:`RankOptions`). ``rank`` and
    ``diagnose`` add these flags (:mod:`cmkd_doctor.cli.rank_flags`), and the advice
    writes its commands with them."""

    name: str
    kind: Any
    help: str
    decls: tuple[str, ...] = ()
    shown_default: str | None = None  # how the default reads, when not the field's value

    @property
    def group(self) -> str:
        """What it sets: ``training`` (diagnose's teachers and students too), ``inputs``
        (the data split) or ``ranking``; the CLI lists each group in its own panel."""
        return ("training" if self.name in _TRAINING else "inputs" if self.name in _INPUTS
                else "ranking")


def _declared() -> tuple[Flag, ...]:
    return (
        Flag("repeats", int, "Permutations per channel (Algorithm 1, M).",
             ("--repeats", "-M")),
        Flag("hidden", str, "Hidden widths of the aligned networks: 0 for a linear model, H "
             "for Linear-ReLU-Linear, a comma list for deeper MLPs.", shown_default="256"),
        Flag("epochs", int, "Maximum training epochs for step 1.",
             shown_default=EPOCHS_DEFAULT),
        Flag("batch_size", int, "Minibatch size of step 1."),
        Flag("lr", float, "Learning rate of step 1."),
        Flag("patience", int, "Stop step 1 after this many epochs without improvement of "
             "the held-out Eq. 28 loss, keeping the best epoch; 0 trains all epochs."),
        Flag("dist", str, f"Dist of Eq. 28: {DISTANCES.describe()}."),
        Flag("normalize", str, f"Step 9: {NORMALIZATIONS.describe()}."),
        Flag("permute", str, f"Modality whose channels are ranked: {SIDES.describe()}."),
        Flag("permute_on", str, f"Rows permuted in steps 2-8: {PERMUTED_ROWS.describe()}."),
        Flag("test_split", float, "Fraction of rows held out, stratified by class and "
             "seeded; saved as split.npz for later commands."),
        Flag("estimator", str, f"Steps 2-8: {ESTIMATORS.describe()}."),
        Flag("permutation", str, f"Step 5: {PERMUTATIONS.describe()}."),
        Flag("split", Path, "A .npz with 'train' and 'test' row indices to use instead of "
             "--test-split (e.g. a dataset's own split).", shown_default="none"),
        Flag("groups", str, "Permute correlated channels together: none (each alone, "
             "Algorithm 1 as written), auto (channels whose |Spearman| on the fit rows "
             "exceeds --group-threshold), or a .npy of one group id per channel."),
        Flag("group_threshold", float, "Correlation above which --groups auto joins two "
             "channels."),
        Flag("chunk_rows", int, "Rows read at a time from memory-mapped .npy inputs.",
             shown_default=CHUNK_ROWS_DEFAULT),
        Flag("restarts", int, "Train the aligned pair this many times (other "
             "initialisation, minibatches and permutations; the same split) and average "
             "the salience; 2 or more also measure the ranking's stability.",
             shown_default=RESTARTS_DEFAULT),
        Flag("standardize", bool, "Standardise every channel with its fit-row mean and "
             "standard deviation (channels constant on the fit rows are ignored), so units "
             "do not matter; --no-standardize feeds raw features.",
             ("--standardize/--no-standardize",), shown_default="on"),
        Flag("protocol", str, "Defaults for every rank option not given: "
             f"{RANK_PROTOCOLS.describe()}."),
        Flag("device", str, "auto (CUDA when present), cpu, cuda or cuda:N."),
        Flag("seed", int, "Seed of the split, initialisation, shuffling and permutations."),
    )


# the flags that set training (diagnose's teachers and students too) and the data split
_TRAINING = ("hidden", "epochs", "batch_size", "lr", "patience", "chunk_rows", "device", "seed")
_INPUTS = ("test_split", "split")
FLAGS: tuple[Flag, ...] = _declared()
