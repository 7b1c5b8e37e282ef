"""AST (Huang et al., AAAI 2025): adaptive sparse training for 2:4 language models, on sparsecore.

Public API:

* `AdaptiveSparseTrainer` (registry name ``"ast"``) and its `ASTConfig`;
* `ASTAdamW`, the official AdamW variant with the SR-STE decay inside the update;
* distillation losses `kl_distillation_loss`, `squarehead_loss`;
* SLoRB helpers `slorb_projection`, `slorb_init_weight`;
* export: `save_compact`, `load_compact`, `restore_slorb`,
  `to_semi_structured`;
* `default_lm_targets`.
"""

from sparse_ast.config import ASTConfig
from sparse_ast.distill import kl_distillation_loss, squarehead_loss
from sparse_ast.export import load_compact, restore_slorb, save_compact, to_semi_structured
from sparse_ast.layers import default_lm_targets
from sparse_ast.method import AdaptiveSparseTrainer
from sparse_ast.optim import ASTAdamW
from sparse_ast.slorb import slorb_init_weight, slorb_projection

__version__ = "0.1.0"

__all__ = [
    "ASTAdamW",
    "ASTConfig",
    "AdaptiveSparseTrainer",
    "__version__",
    "default_lm_targets",
    "kl_distillation_loss",
    "load_compact",
    "restore_slorb",
    "save_compact",
    "slorb_init_weight",
    "slorb_projection",
    "squarehead_loss",
    "to_semi_structured",
]
