"""Generation backends: `hf` (transformers + peft mixed-adapter batches) and `vllm` (multi-LoRA).
Each is imported on use, so neither engine is needed unless chosen."""

from .base import GenerationBackend, GenerationRequest, GenerationResult

__all__ = ["GenerationBackend", "GenerationRequest", "GenerationResult"]
