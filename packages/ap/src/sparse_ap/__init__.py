"""Activate-while-Pruning (AP): an add-on to iterative pruning that lowers the dead-neuron rate.

Liu, Ghosh, Tan & Motani, "AP: Selective Activation for De-sparsifying Pruned Neural Networks",
TMLR 2023, arXiv 2212.06145; official code https://github.com/Martin1937/Activate-While-Pruning.

* `ActivateWhilePruning`: the sparsecore method (registry name ``"ap"``) wrapping a base method
  with pruning rounds (``"imp"``, ``"lth"``, ...).
* `stagnant_negative_weights`: the AP selection as a pure function.
* `run_cycles`: the whole train → prune → rewind procedure on a `sparsecore.bench` task.
* `sparse_ap.bench.bench_procedure`: that procedure at `sparse bench` scale (3 cycles).
* The metric, `dead_neuron_rate`, lives in `sparsecore.evaluation` (re-exported here).
"""

from sparse_ap.config import RESERVED_BASE_OPTIONS, APConfig, cycles_to_reach
from sparse_ap.cycles import CycleResult, run_cycles
from sparse_ap.method import ActivateWhilePruning, stagnant_negative_weights
from sparsecore.evaluation import DeadNeuronRate, dead_neuron_rate

__version__ = "0.1.0"

__all__ = [
    "RESERVED_BASE_OPTIONS",
    "APConfig",
    "ActivateWhilePruning",
    "CycleResult",
    "DeadNeuronRate",
    "__version__",
    "cycles_to_reach",
    "dead_neuron_rate",
    "run_cycles",
    "stagnant_negative_weights",
]
