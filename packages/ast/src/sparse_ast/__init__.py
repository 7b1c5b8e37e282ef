"""AST (Huang et al., AAAI 2025): adaptive sparse training for 2:4 language models, on sparsecore.

Public API:

* :class:`AdaptiveSparseTrainer` (registry name ``"ast"``) and its :class:`ASTConfig`;
* :class:`ASTAdamW`, the official AdamW variant with the SR-STE decay inside the update;
* distillation losses :func:`kl_distillation_loss`, :func:`squarehead_loss`;
* SLoRB helpers :func:`slorb_projection`, :func:`slorb_init_weight`;
* export: :func:`save_compact`, :func:`load_compact`, :func:`restore_slorb`,
  :func:`to_semi_structured`;
* :func:`default_lm_targets`.
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
