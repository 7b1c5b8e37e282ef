"""Adapters that let any sparsecore method drive other training loops.

* `sparsecore.integrations.hf`: a Hugging Face ``transformers.TrainerCallback``
  (optional extra ``sparse-core[hf]``).

Submodules import their framework lazily, so importing this package costs nothing.
"""

__all__: list[str] = []
