"""The names every option picks from, with their descriptions, and the budgets behind
the defaults that are not one value, declared once and light.

Each registry here is declared by name and description only; the module named as its
``source`` binds the implementations when it is imported, which the first lookup of one
does (:class:`~cmkd_doctor.registry.Registry`). The help texts, the option checks and the
docs read these names without importing torch, so ``cmkd-doctor COMMAND --help`` starts
in a fraction of a second.
"""

from __future__ import annotations

from cmkd_doctor.io.files import human_size
from cmkd_doctor.registry import Registry

# -- the rules a comparison is read by (diagnosis.comparison, diagnosis.seed_schedule) --
# a fixed --seeds N: a difference is clear beyond Z paired standard errors
Z = 2.0
# --seeds auto: every row starts with START seeds, gets at most MAX_SEEDS (the default
# of --max-seeds), and --max-seeds is at most PRACTICAL
SEEDS_START, SEEDS_MAX, SEEDS_PRACTICAL = 4, 20, 100
SEEDS_PRACTICAL_WHY = (f"beyond {SEEDS_PRACTICAL} seeds a difference is too small to "
                       "matter in practice")

# Dist of Eq. 28 and Algorithm 1, step 6 (cmkd_doctor.training.losses)
DISTANCES: Registry = Registry("dist", source="cmkd_doctor.training.losses")
DISTANCES.declare("mse", "mean squared error between logits (the official code's)")
DISTANCES.declare("l1", "mean absolute error between logits")
DISTANCES.declare("kl", "KL divergence between predicted distributions")

# Algorithm 1, step 9 (cmkd_doctor.ranking.algorithm1)
NORMALIZATIONS: Registry = Registry("normalize", source="cmkd_doctor.ranking.algorithm1")
NORMALIZATIONS.declare("max", "p / max(p), the paper's step 9")
NORMALIZATIONS.declare("minmax", "(p - min(p)) / (max(p) - min(p)), the official code's")

# Algorithm 1, steps 2-8 (cmkd_doctor.ranking.run)
ESTIMATORS: Registry = Registry("estimator", source="cmkd_doctor.ranking.run")
ESTIMATORS.declare("sampled", "M random permutations per channel (Algorithm 1 as written)")
ESTIMATORS.declare("exact", "the expectation over all permutations in closed form (M = "
                   "infinity); linear head (--hidden 0) with --dist mse only")

# every network's optimiser (cmkd_doctor.training.engine)
OPTIMIZERS: Registry = Registry("optimizer", source="cmkd_doctor.training.engine")
OPTIMIZERS.declare("adam", "Adam over shuffled minibatches (every network cmkd-doctor "
                   "trains for a user)")
OPTIMIZERS.declare("sgd", "plain SGD (the official Gaussian teachers and students)")
OPTIMIZERS.declare("sgd_momentum", "SGD with momentum 0.9 (the official Gaussian aligned "
                   "pair)")

# a teacher's mode: which channels it nullifies (cmkd_doctor.teachers.masks)
MODES: Registry = Registry("mode", source="cmkd_doctor.teachers.masks")
MODES.declare("regular", "nullifies nothing")
MODES.declare("general", "nullifies the r% channels with the smallest salience "
              "(modality-general teacher)")
MODES.declare("specific", "nullifies the r% channels with the largest salience "
              "(modality-specific teacher)")
MODES.declare("random", "nullifies r% channels chosen at random (seeded)")
# the derived modes (every mode but regular), in the registry's order; and the order the
# hypothesis predicts their students in: general >= random >= specific
DERIVED: tuple[str, ...] = tuple(mode for mode in MODES if mode != "regular")
MFH_ORDER = ("general", "random", "specific")

# what a nullified channel becomes (cmkd_doctor.teachers.masks)
FILLS: Registry = Registry("fill", source="cmkd_doctor.teachers.masks")
FILLS.declare("mean", "the channel's training-set mean (the official code's choice for "
              "RAVDESS)")
FILLS.declare("zero", "zero (the paper's wording)")

# the teachers distill can compute rows for (a checkpoint path besides)
TEACHER_CHOICES = ("none", "regular", *DERIVED, "all")

# how extract turns a layer's output into one row of features (cmkd_doctor.teachers.extraction)
POOLS: Registry = Registry("pool", source="cmkd_doctor.teachers.extraction")
POOLS.declare("avg", "one value per channel (spatial mean)")
POOLS.declare("flatten", "every position")


# -- the budgets behind defaults that depend on the data, declared once: the code reads
# them here and the help shows them in the words below
# --epochs not given: about AUTO_STEPS optimiser steps, within AUTO_EPOCHS (training.engine)
AUTO_STEPS = 4000
AUTO_EPOCHS = (20, 300)
# --chunk-rows not given (io.streaming): rows stay resident up to RESIDENT_BYTES_CPU on the
# CPU (half the free memory on CUDA), else chunk sets of about CHUNK_BYTES are streamed
RESIDENT_BYTES_CPU = 1 << 30
CHUNK_BYTES = 128 << 20
# diagnose's --restarts auto (ranking.run): 3 restarts when one ranking costs at most this
# many floating-point operations (about 30 s on a 2-core CPU, well under a second on a GPU)
AUTO_RESTART_FLOP = 3e12
AUTO_RESTARTS = 3


EPOCHS_DEFAULT = (f"about {AUTO_STEPS} optimiser steps, {AUTO_EPOCHS[0]} to "
                  f"{AUTO_EPOCHS[1]} epochs")
CHUNK_ROWS_DEFAULT = (f"all rows on the device when they fit ({human_size(RESIDENT_BYTES_CPU)} "
                      f"on the CPU, half the free GPU memory), else chunk sets of about "
                      f"{human_size(CHUNK_BYTES)}")
RESTARTS_DEFAULT = (f"1 for rank; for diagnose {AUTO_RESTARTS} when one ranking costs at "
                    f"most {AUTO_RESTART_FLOP / 1e12:g} TFLOP (about 30 s on 2 CPU cores), "
                    f"else 1")
