"""The built-in examples: the paper's datasets (``datasets``), their published files
(``downloads``, ``checksums.txt``), builders for data that needs a local copy
(``preparers``), the synthetic Gaussian data (``gaussian``), AV-MNIST (``avmnist``), the
official code's figures (``official_runs``) and the paper's experiments reproduced
(``reproduce``).
"""
