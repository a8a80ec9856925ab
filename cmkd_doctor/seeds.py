"""The one table of seed derivations.

One seed in (``--seed``), one independent child seed per stage out, so serial,
batched and multi-process runs draw the same numbers. A child is
``derive_seed(seed, stage, *index)``: NumPy's ``SeedSequence`` with the stage's spawn key
followed by the index (a repeat, a student, a run). The numbers below are part of every
result derived from them: changing one changes every result of its stage.

The Gaussian reproductions (:mod:`cmkd_doctor.examples.reproduce`) are the exception: they seed
NumPy's and torch's generators with ``seed + run`` in the official scripts' order, so
they draw the very numbers the official code draws.
"""

from __future__ import annotations

import numpy as np
import torch

# stage -> spawn-key prefix, and where the seed it derives from comes from
STAGES: dict[str, tuple[int, ...]] = {
    # rank, from --seed
    "split": (0,),             # the stratified train/test split
    "init_a": (1,),            # f1's initialisation (Algorithm 1, step 1)
    "init_b": (2,),            # f2's initialisation
    "shuffle": (3,),           # the aligned pair's minibatch order
    "permute": (4,),           # + repeat m: the row permutation of repeat m (step 5)
    "restart": (5,),           # + k: the seed of restart k (rank --restarts; 0 is --seed)
    "gamma": (6,),             # the gamma estimate's row sample and bootstrap
    "groups": (7,),            # the rows rank --groups auto correlates
    # teachers, from the teacher's --seed
    "random_mask": (11,),      # the channels a random teacher nullifies
    "teacher": (22,),          # the member seed of a trained teacher
    # every command, from the run's --seed
    "validation": (21,),       # the tenth of the training rows held back for early stopping
    # distill, from distill's --seed
    "student": (31,),          # + s: the member seed of student s (shared by every teacher)
    # one network of a stacked fit, from its member seed
    "net_init": (0,),          # its initialisation
    "net_shuffle": (1,),       # its minibatch order
    # AV-MNIST, from --seed
    "avmnist_split": (51,),
    "avmnist_pair": (52,),
    "avmnist_noise": (53,),
    "avmnist_teacher": (61,),  # reproduce table1-avmnist: the teachers' member seed
    "avmnist_student": (62,),  # + r: student r's member seed
    "avmnist_networks_teacher": (63,),  # reproduce avmnist-networks: the image teacher
    "avmnist_networks_audio": (64,),    # and the audio network whose features are ranked
}


def derive_seed(seed: int, stage: str | None = None, *index: int) -> int:
    """The child seed of ``seed`` for ``stage`` (a key of :data:`STAGES`) and ``index``.

    ``derive_seed(seed)`` with no stage is the seed's own first child.
    """
    key = () if stage is None else STAGES[stage]
    spawn = (*key, *index)
    return int(np.random.SeedSequence(seed, spawn_key=spawn).generate_state(1)[0])


def generator(seed: int, stage: str | None = None, *index: int) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded with ``derive_seed(seed, stage, *index)``."""
    return torch.Generator().manual_seed(derive_seed(seed, stage, *index))
