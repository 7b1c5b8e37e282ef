"""SLoRB through `save_pretrained` / `from_pretrained`: the boost as a peft-style LoRA adapter.

SLoRB adds `S (P x)` to a layer, with `P` of shape `(d/k, d)` and `S` of shape
`(out, d/k)`: exactly a LoRA term `B (A x)` of rank `r = d/k` with `A = P`, `B = S` and
scaling 1 (`lora_alpha = r`, no dropout). `save_pretrained` therefore writes

* the sparse base model with the model's own `save_pretrained` (the SLoRB tensors left out, so
  a plain `AutoModel...from_pretrained(directory)` loads it without "unexpected keys"), and
* the SLoRB terms under `directory/slorb/` in peft's LoRA adapter format
  (`adapter_config.json` with a per-layer `rank_pattern` / `alpha_pattern`, and
  `adapter_model.safetensors` with `base_model.model.<layer>.lora_A/B.weight`).

`from_pretrained` loads both back (no peft needed): the boosted model gives the same
logits as the one that was saved. With peft installed,
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(directory), directory + "/slorb")`
reads the same adapter, and its `merge_and_unload()` folds the boost into dense weights.

Choice (not in the paper, whose code saves a full `state_dict`): an adapter rather than folded
weights, because folding `S P` into `W` makes the 2:4 weights dense.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sparse_ast.layers import is_conv1d
from sparse_ast.slorb import PROJ, WEIGHT
from sparsecore.validation import check_choice

__all__ = ["SLORB_ADAPTER_DIR", "from_pretrained", "load_slorb_adapter", "save_pretrained"]

#: Subfolder of the saved model that holds the SLoRB adapter.
SLORB_ADAPTER_DIR = "slorb"
_PREFIX = "base_model.model."


def _slorb_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if hasattr(m, WEIGHT)}


def save_pretrained(model: nn.Module, directory: str | Path, **kwargs: Any) -> Path | None:
    """Save `model` the Hugging Face way, with its SLoRB terms as a LoRA adapter.

    Args:
        model: A (finalized or still training) Hugging Face model, with or without SLoRB.
        directory: Output folder of `model.save_pretrained`.
        **kwargs: Passed on to `model.save_pretrained`.

    Returns:
        The adapter folder, or `None` when the model has no SLoRB.

    Raises:
        TypeError: `model` has no `save_pretrained` (not a Hugging Face model).
    """
    if not callable(getattr(model, "save_pretrained", None)):
        raise TypeError(f"model must be a Hugging Face PreTrainedModel, got {type(model).__name__}")
    directory = Path(directory)
    boosted = _slorb_modules(model)
    skip = {f"{name}.{part}" for name in boosted for part in (PROJ, WEIGHT)}
    state = {k: v for k, v in model.state_dict().items() if k not in skip}
    model.save_pretrained(directory, state_dict=state, **kwargs)
    if not boosted:
        return None
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    conv1d = []
    for name, module in boosted.items():
        proj, weight = getattr(module, PROJ).detach(), getattr(module, WEIGHT).detach()
        tensors[f"{_PREFIX}{name}.lora_A.weight"] = proj.contiguous().clone()
        tensors[f"{_PREFIX}{name}.lora_B.weight"] = weight.contiguous().clone()
        ranks[name] = int(proj.shape[0])
        conv1d.append(is_conv1d(module))
    if any(conv1d) and not all(conv1d):
        raise ValueError("SLoRB on a mix of Conv1D and Linear layers cannot be one LoRA adapter")
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": str(directory),
        "r": max(ranks.values()),
        "lora_alpha": max(ranks.values()),
        "rank_pattern": ranks,
        "alpha_pattern": dict(ranks),  # lora_alpha = r: scaling 1, as SLoRB
        "target_modules": sorted(ranks),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": bool(conv1d and conv1d[0]),
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    adapter = directory / SLORB_ADAPTER_DIR
    adapter.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return adapter


def load_slorb_adapter(model: nn.Module, adapter: str | Path) -> list[str]:
    """Put the SLoRB terms of a saved adapter back on `model` (parameters and hooks).

    Args:
        model: The base model loaded from the same `save_pretrained` folder.
        adapter: The adapter folder (`directory/slorb`).

    Returns:
        Names of the layers that received SLoRB.

    Raises:
        ValueError: The adapter is not a LoRA adapter, or names a layer the model lacks.
    """
    from sparse_ast.export import restore_slorb

    adapter = Path(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    check_choice(config.get("peft_type"), "peft_type", ("LORA",))
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    state: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if not key.startswith(_PREFIX) or not key.endswith((".lora_A.weight", ".lora_B.weight")):
            raise ValueError(f"adapter: unexpected tensor {key!r}")
        layer, part = key[len(_PREFIX) :].rsplit(".", 2)[0], key.rsplit(".", 2)[1]
        scale = config["alpha_pattern"].get(layer, config["lora_alpha"]) / config[
            "rank_pattern"
        ].get(layer, config["r"])
        state[f"{layer}.{PROJ if part == 'lora_A' else WEIGHT}"] = (
            value if part == "lora_A" else value * scale
        )
    names = dict(model.named_modules())
    missing = sorted({k.rpartition(".")[0] for k in state} - set(names))
    if missing:
        raise ValueError(f"adapter: the model has no layer(s) {', '.join(missing[:3])}")
    done = restore_slorb(model, state)
    with torch.no_grad():
        for key, value in state.items():
            layer, _, part = key.rpartition(".")
            target = getattr(names[layer], part)
            target.copy_(value.to(target.device, target.dtype))
    return done


def from_pretrained(directory: str | Path, model_class: Any = None, **kwargs: Any) -> nn.Module:
    """Load a model written by `save_pretrained`, with its SLoRB terms.

    Args:
        directory: The folder given to `save_pretrained`.
        model_class: A transformers class with `from_pretrained` (default
            `AutoModelForCausalLM`).
        **kwargs: Passed on to `model_class.from_pretrained`.

    Returns:
        The model (in eval mode, as `from_pretrained` returns it).
    """
    if model_class is None:
        from transformers import AutoModelForCausalLM

        model_class = AutoModelForCausalLM
    model = model_class.from_pretrained(str(directory), **kwargs)
    adapter = Path(directory) / SLORB_ADAPTER_DIR
    if (adapter / "adapter_config.json").exists():
        load_slorb_adapter(model, adapter)
    return model
