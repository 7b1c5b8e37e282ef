"""Evaluation: sparsity reports, FLOP and parameter counters, latency, the comparison protocol.

```python
from sparsecore.evaluation import SparsityReport, count_flops, over_seeds, format_table
print(SparsityReport.from_masks(method.masks))
flops = count_flops(model, x[:1])          # FlopCount(dense=..., effective=...)
```
"""

from sparsecore.evaluation.bops import BopCount, LayerBops, count_bops
from sparsecore.evaluation.dead_neurons import DeadNeuronRate, dead_neuron_rate
from sparsecore.evaluation.flops import (
    FlopCount,
    TrainingFlopCount,
    count_flops,
    count_params,
    count_training_flops,
)
from sparsecore.evaluation.latency import (
    LatencyRatio,
    LatencyResult,
    compare_latency,
    measure_latency,
)
from sparsecore.evaluation.memory import (
    SavedTensorMeter,
    current_rss_bytes,
    peak_memory_bytes,
    reset_peak_memory,
)
from sparsecore.evaluation.protocol import (
    MIN_SEEDS,
    SCRATCH_B_MAX_FACTOR,
    Evaluator,
    Row,
    check_protocol,
    failed_row,
    format_table,
    machine_info,
    over_seeds,
    plot_rows,
    scratch_budgets,
    write_results,
)
from sparsecore.evaluation.report import (
    SparsityReport,
    TensorReport,
    effective_tensor,
    load_checkpoint,
    snapshot,
)
from sparsecore.evaluation.reproduction import (
    command_line,
    configured_seeds,
    default_seeds,
    finish_reproduction,
    report_sparseland,
    result_row,
    run_seeds,
)
from sparsecore.evaluation.sparseland import (
    check_sparseland,
    disclose_sparsity,
    inference_cost,
    matched_random_masks,
    sparseland_fields,
    training_cost,
)
from sparsecore.evaluation.sparseland_entry import MatchedRandomPruning, sparseland_entry

__all__ = [
    "MIN_SEEDS",
    "SCRATCH_B_MAX_FACTOR",
    "BopCount",
    "DeadNeuronRate",
    "Evaluator",
    "FlopCount",
    "LatencyRatio",
    "LatencyResult",
    "LayerBops",
    "MatchedRandomPruning",
    "Row",
    "SavedTensorMeter",
    "SparsityReport",
    "TensorReport",
    "TrainingFlopCount",
    "check_protocol",
    "check_sparseland",
    "command_line",
    "compare_latency",
    "configured_seeds",
    "count_bops",
    "count_flops",
    "count_params",
    "count_training_flops",
    "current_rss_bytes",
    "dead_neuron_rate",
    "default_seeds",
    "disclose_sparsity",
    "effective_tensor",
    "failed_row",
    "finish_reproduction",
    "format_table",
    "inference_cost",
    "load_checkpoint",
    "machine_info",
    "matched_random_masks",
    "measure_latency",
    "over_seeds",
    "peak_memory_bytes",
    "plot_rows",
    "report_sparseland",
    "reset_peak_memory",
    "result_row",
    "run_seeds",
    "scratch_budgets",
    "snapshot",
    "sparseland_entry",
    "sparseland_fields",
    "training_cost",
    "write_results",
]
