"""Benchmarks: ``muxkernels bench`` (also ``python -m muxkernels.bench``).

- ``microbench``: every op × implementation × mode, with the copy and matmul ceilings
  measured in the same run (``workloads`` holds the ops' shapes and cost floors);
- ``end_to_end``: instances per second of a multiplexed encoder against N, the published
  layers (``published``) against ours;
- ``report``: JSON, CSV, tables, the plot and the README section; ``timing``: medians.
"""

from .microbench import IMPLS, Row, measure, run
from .workloads import MODES, OPS, Sizes

__all__ = ["IMPLS", "MODES", "OPS", "Row", "Sizes", "measure", "run"]
