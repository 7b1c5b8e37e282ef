"""Light-PEFT: early pruning of the foundation model and of the PEFT modules, on sparsecore.

Gu et al., "Light-PEFT: Lightening Parameter-Efficient Fine-Tuning via Early Pruning",
Findings of ACL 2024, arXiv 2406.03792. A short estimation stage trains head / FFN-neuron masks
with an L1 penalty and measures the importance of every LoRA module and rank; then the least
important heads, neurons, LoRA modules and ranks are removed physically and the smaller model
with its smaller adapter is fine-tuned.
"""

from sparse_lightpeft.config import LightPEFTConfig
from sparse_lightpeft.importance import (
    ImportanceRecorder,
    finite_or_zero,
    lora_layers,
    p2_ratio,
    rank_importance,
)
from sparse_lightpeft.lighten import Lightened, lighten, load_lightened
from sparse_lightpeft.method import LightPEFT
from sparse_lightpeft.plan import PrunePlan
from sparse_lightpeft.selection import (
    select_global,
    select_layerwise,
    select_modules,
    select_ranks,
    select_units,
)

__version__ = "0.1.0"

__all__ = [
    "ImportanceRecorder",
    "LightPEFT",
    "LightPEFTConfig",
    "Lightened",
    "PrunePlan",
    "__version__",
    "finite_or_zero",
    "lighten",
    "load_lightened",
    "lora_layers",
    "p2_ratio",
    "rank_importance",
    "select_global",
    "select_layerwise",
    "select_modules",
    "select_ranks",
    "select_units",
]
