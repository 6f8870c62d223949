"""The `rollout:` settings section: where training episodes branch, which engine serves
them (in-process, or a shared vLLM server), and how far the rollout may run ahead of the
update."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .branching import Fork, MoveForks


class VLLMConfig(BaseModel):
    """The vLLM engine of `backend: vllm`, colocated with training in the same process."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="Share of the GPU's memory vLLM may take (weights + KV cache); training uses the rest."
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one vLLM engine spreads the model over.")
    max_loras: int | None = Field(
        None, ge=1, description="Adapters served in one batch; None: max(4, the run's adapters + league.pool_size)."
    )
    dtype: str = Field(
        "auto", description="vLLM's weight dtype: auto, bfloat16, float16 or float32 (auto: the checkpoint's; "
        "a float32 one runs in bfloat16 where the device supports it, else float16)."
    )


class RolloutConfig(BaseModel):
    """How training episodes are played, beyond sampling."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    branching: list[Fork] = Field(
        default_factory=list,
        description="Forks of every training episode (multiagent_rl/branching.py), e.g. [{step: 1, n: 2}]: each "
        "continues n times from there; needs grpo.advantage=tree. Held-out evaluation never branches.",
    )
    move_forks: MoveForks | None = Field(
        None,
        description="Fork every trainable decision of a game that lists its legal moves once per move, the move "
        "forced (multiagent_rl/branching.py MoveForks), e.g. {probability: 1.0}: what trainer=all_actions learns "
        "from. Held-out evaluation never forks.",
    )
    server: str | None = Field(
        None,
        description="http://HOST:PORT of a shared vLLM server (`multiagent-rl serve`): every training process "
        "generates through it, and the main process loads each update's adapters into it under new names.",
    )
    server_timeout_seconds: float = Field(
        300.0, gt=0, description="rollout.server: the longest wait for one generation call before it is retried."
    )
    server_retries: int = Field(
        3, ge=0, description="rollout.server: retries of a failed generation call (after reconnecting) before the "
        "run stops at its last checkpoint."
    )
    max_staleness: int = Field(
        0, ge=0, description="0: rollout, then update (synchronous). k >= 1: step t+1's rollout runs while step t "
        "updates, with adapters at most k updates old (a rollout worker process with the hf backend or "
        "rollout.server; a league's step meets the pool its policy version was committed with); the "
        "policy loss corrects for the stale sampler with importance_sampling_cap.",
    )
