"""The settings sections of the trainers, the adapters they train and reward shaping
(`grpo:`, `critic:`, `lora:`, `shaping:`), apart from the run's top-level keys in
`config.py`, which imports them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LoraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    rank: int = Field(
        16, ge=1, description="LoRA rank r, the adapter's inner dimension: more trainable parameters and memory "
        "per adapter as it grows. A shared vLLM server must allow at least this (serve --max-lora-rank)."
    )
    alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / rank).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names that get LoRA (the default: every attention and MLP projection of a "
        "Llama-style model such as SmolLM2; other architectures name theirs differently).",
    )


class GRPOConfig(BaseModel):
    """`trainer: grpo`: per-agent group-relative advantages (one outcome per episode)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    advantage: str = Field(
        "group", description="The advantage estimator (trainers/base.py registry): group (group-relative outcomes), "
        "role_baseline (each role against its moving-average return, SPIRAL's role-conditioned advantage "
        "estimation: zero-sum self-play) or tree (each turn "
        "against its siblings in a branched rollout, rollout.branching)."
    )
    scale_rewards: bool = Field(
        True, description="Divide advantages by the group std (False: Dr. GRPO). With advantage=tree, by one "
        "spread per stream for the whole batch (the root mean square of each node's difference from its "
        "siblings' mean, over untied sibling sets), so a sibling pair's margin still counts."
    )
    baseline_decay: float = Field(
        0.95, ge=0, lt=1, description="advantage=role_baseline: the decay of each role's moving-average return."
    )
    reward_source: Literal["agent", "team"] = Field("agent", description="Advantages from each agent's reward or the team mean.")
    credit: Literal["outcome", "discounted"] = Field(
        "outcome", description="outcome: every turn gets the episode reward; discounted: later turns count more (gamma)."
    )
    gamma: float = Field(1.0, gt=0, le=1.0, description="Discount per round for credit: discounted.")
    reference: Literal["base", "magnet"] = Field(
        "base", description="What `beta`'s KL pulls toward: base (the base model) or magnet (a frozen copy of each "
        "adapter refreshed every grpo.magnet_every updates: magnetic mirror descent's moving magnet, for self-play)."
    )
    magnet_every: int = Field(10, ge=1, description="reference=magnet: updates between refreshes of the magnet.")


class CriticConfig(BaseModel):
    """`trainer: critic`: a value model over the global state at each turn, GAE over turns."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)
    model: str | None = Field(
        None, description="None: the policy's base model with its own LoRA adapter (no second copy); else a separate model."
    )
    advantage: str = Field(
        "gae", description="The advantage estimator (trainers/base.py registry); it sees chunks of whole episodes."
    )
    value_per: Literal["team", "agent"] = Field(
        "team", description="One value per team (cooperative: one for all) or one per agent (rewards that differ by agent)."
    )
    gamma: float = Field(1.0, ge=0, le=1.0, description="Discount per turn.")
    lam: float = Field(0.95, ge=0, le=1.0, description="GAE lambda (gamma = lam = 1: Monte Carlo returns).")
    lr: float = Field(
        5e-4, gt=0, description="The critic's learning rate (its adapter and value head), absolute, not a multiple of "
        "the policy's lr. Its head starts from nothing and PPO for LLMs gives the critic 2-10x the policy's lr."
    )
    epochs: int = Field(1, ge=1, description="Passes of the value loss over each batch.")
    value_clip: float | None = Field(0.2, gt=0, description="Clip of the value change per update (None: unclipped).")
    normalize_advantages: bool = Field(True, description="Whiten each agent's advantages over the batch.")
    whiten_below_explained_variance: float | None = Field(
        None, gt=0, le=1.0, description="With normalize_advantages: whiten only while the values (as the last update "
        "left them) explain less than this share of the batch's return variance; above it, advantages stay raw "
        "residuals, so noise is not scaled up to unit size (metric critic/whitened). None: always whiten. "
        "group_weight > 0 still whitens the critic's part to mix it."
    )
    value_warmup_steps: int = Field(
        0, ge=0, description="The first this many training steps train the value model only and skip the policy update "
        "(metric critic/warmup), so no policy learns from values that are still noise. Counted across resumes."
    )
    privileged: bool = Field(
        False, description="The value also reads the task's reference answer (Task.answer), as SWEET-RL's critic "
        "does: training-time information only the critic sees, never a policy."
    )
    normalize_targets: bool = Field(False, description="Learn values of running-normalised targets (PopArt-style).")
    group_weight: float = Field(
        0.0, ge=0, le=1.0, description="With groups: mix of the group-relative advantage (1) and the critic's (0)."
    )
    max_state_tokens: int = Field(1024, ge=8, description="The value sees the last this many tokens of the state.")
    micro_batch_size: int = Field(8, ge=1, description="States per value forward/backward.")


class ShapingConfig(BaseModel):
    """Rewards that pay for form (a legal move) rather than play: they teach an untrained
    model the rules, but a model paid per legal move can learn to prolong a game instead of
    winning it. Once invalid moves are rare, their weight anneals to zero."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    terms: list[str] = Field(
        default_factory=lambda: ["legal_move", "format"],
        description="Ledger terms that are shaping: the games' legal-move reward, negotiation's format bonus. "
        "Play is measured without them.",
    )
    stop_when_invalid_below: float | None = Field(
        None, ge=0, le=1, description="Anneal the shaping terms once a step's invalid-reply share is below this: the "
        "invalid moves of a scenario with an act hook, else the replies its parse reads no answer from (None: never)."
    )
    anneal_steps: int = Field(10, ge=1, description="Steps over which their weight falls linearly from 1 to 0.")

    def weight(self, step: int, started: int | None) -> float:
        """The shaping terms' weight at `step`, the anneal having started at step `started`."""
        return 1.0 if started is None else max(0.0, 1.0 - (step - started) / self.anneal_steps)


class AllActionsConfig(BaseModel):
    """`trainer: all_actions`: for games that list their legal moves, the expected advantage
    over every legal move at each forked decision (`rollout.move_forks`), with a KL to a
    magnet policy (magnetic mirror descent) and a term that keeps replies legal."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    magnet: Literal["uniform", "snapshot", "base", "none"] = Field(
        "snapshot", description="The policy the KL pulls toward: uniform (each legal move alike: an entropy bonus, "
        "MMD's usual magnet), snapshot (a frozen copy of each adapter, refreshed every magnet_every steps: a moving "
        "magnet), base (the base model: a fixed magnet) or none (no regulariser)."
    )
    magnet_every: int = Field(10, ge=1, description="magnet=snapshot: steps between refreshes of the magnet.")
    magnet_coef: float = Field(
        0.2, ge=0, description="Weight of KL(policy || magnet) over the legal moves, on every decision, tied or not."
    )
    legal_coef: float = Field(
        0.05, ge=0, description="Weight of -(mean over the legal moves of log P(the reply is exactly that move)): "
        "renormalising over the legal moves leaves the illegal mass untrained, so this term keeps it small."
    )
