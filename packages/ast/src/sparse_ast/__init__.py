"""AST (Huang et al., AAAI 2025): adaptive sparse training for 2:4 language models, on sparsecore."""
