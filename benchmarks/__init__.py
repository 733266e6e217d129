"""Benchmarks run by hand: quality per budget, training efficiency, scale. Results go to results/."""

import autodl  # noqa: F401  (sets OpenMP's passive waiting before scikit-learn loads)
