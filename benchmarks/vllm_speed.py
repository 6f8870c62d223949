"""The vLLM backend's rollout, three ways on the same work, in one process:

(a) our batched `rollout` through `VLLMBackend` (one `LLM.generate` per round);
(b) vLLM's own batched `LLM.generate` on exactly the prompts, sampling settings and LoRA
    requests our rollout sent in each round, with tokenising done before the clock;
(c) our rollout through the HF backend on the same scenario, tasks, seeds and adapters.

Figures: the orchestration overhead of (a) over (b), wall time / raw wall time - 1 (target
<= 20%, as the HF backend meets), and tokens/s of (a) against (c). Debate (2 solvers, 2
rounds, 2 LoRA adapters with random non-zero B, rank 16 on every projection), 4 tasks x 6
samples, embedded SmolLM2-135M. vLLM runs in bfloat16 (its CPU default), HF in float32 with
bf16 autocast.

    python -m benchmarks.vllm_speed [--tasks 4] [--group 6] [--max-new-tokens 16]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import EMBEDDED, TINY, emit, randomize_lora_b
from multiagent_rl import load_scenario
from multiagent_rl.adapters import (
    LoraSettings,
    adapter_map,
    adapter_names,
    attach_adapters,
    save_adapters,
)
from multiagent_rl.backends.base import GenerationRequest, GenerationResult
from multiagent_rl.models import load_model, resolve_model_path
from multiagent_rl.rollout import Sampling, rollout


class RecordingVLLM:
    """Passes every call to the vLLM backend and keeps each round's requests and seed."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[tuple[list[GenerationRequest], int | None]] = []

    def generate(self, requests: Sequence[GenerationRequest], seed: int | None = None) -> list[GenerationResult]:
        self.calls.append((list(requests), seed))
        return self.inner.generate(requests, seed=seed)

    def sync(self, model, adapters, folder) -> None:
        return None


def raw_vllm(backend, requests: list[GenerationRequest], seed: int) -> tuple[float, int]:
    """vLLM's own generate on a round's requests, built as the backend builds them (not timed)."""
    from multiagent_rl.backends.vllm import request_seed

    prompts = [backend._TokensPrompt(prompt_token_ids=backend.prompt_ids(r.messages)) for r in requests]
    params = [backend._sampling_params(r, request_seed(seed, i)) for i, r in enumerate(requests)]
    loras = [backend._lora_request(r.adapter) for r in requests]
    start = time.perf_counter()
    outputs = backend.llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
    seconds = time.perf_counter() - start
    return seconds, sum(len(o.outputs[0].token_ids) for o in outputs)


def raw_rounds(backend, calls: list[tuple[list[GenerationRequest], int | None]]) -> tuple[float, int]:
    """`raw_vllm` on every recorded round: total seconds and completion tokens."""
    total_seconds = total_tokens = 0
    for requests, seed in calls:
        seconds, tokens = raw_vllm(backend, requests, seed)
        total_seconds += seconds
        total_tokens += tokens
    return total_seconds, total_tokens


def main(model: str = EMBEDDED, tasks: int = 4, group: int = 6, max_new_tokens: int = 16) -> dict:
    from multiagent_rl.backends.hf import HFBackend
    from multiagent_rl.backends.vllm import VLLMBackend

    if model == TINY:
        return {"vllm: skipped": None, "_notes": {"vllm: skipped": "the tiny model lives in memory; vLLM needs a folder"}}
    scenario = load_scenario("debate", solvers=2, rounds=2)
    adapters = adapter_map(scenario)
    base, tokenizer = load_model(model)
    peft_model = attach_adapters(base, adapter_names(adapters), LoraSettings(rank=16))
    randomize_lora_b(peft_model)
    rng = random.Random(0)
    task_list = [scenario.sample_task(rng, "train") for _ in range(tasks)]
    sampling = Sampling(temperature=1.0, max_new_tokens=max_new_tokens)
    print(f"vllm bench: model={model} debate 2x2, {tasks} tasks x {group} samples, {max_new_tokens} tokens", flush=True)

    hf = HFBackend(peft_model, tokenizer, mixed_precision="bf16")
    start = time.perf_counter()
    hf_batch = rollout(scenario, hf, task_list, group_size=group, adapters=adapters, sampling=sampling, seed=1)
    hf_seconds = time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="mrl-vllm-bench-") as tmp:
        save_adapters(peft_model, Path(tmp))
        del hf, peft_model, base
        engine = VLLMBackend(resolve_model_path(model), adapter_dirs={p.name: str(p) for p in Path(tmp).iterdir()},
                             max_lora_rank=16, seed=0)
        try:
            recorder = RecordingVLLM(engine)
            rollout(scenario, recorder, task_list[:1], group_size=1, adapters=adapters, sampling=sampling, seed=0)  # warm-up
            recorder.calls.clear()
            start = time.perf_counter()
            ours = rollout(scenario, recorder, task_list, group_size=group, adapters=adapters, sampling=sampling, seed=1)
            ours_seconds = time.perf_counter() - start
            raw_seconds, raw_tokens = raw_rounds(engine, recorder.calls)
        finally:
            engine.close()
    ours_tps = ours.generated_tokens / ours_seconds
    hf_tps = hf_batch.generated_tokens / hf_seconds
    print(f"  vLLM rollout {ours_seconds:.1f} s ({ours.generated_tokens} tokens), raw vLLM generate {raw_seconds:.1f} s "
          f"({raw_tokens} tokens), HF rollout {hf_seconds:.1f} s ({hf_batch.generated_tokens} tokens)", flush=True)
    return emit({
        "vllm: rollout tokens/s (vLLM backend)": round(ours_tps, 2),
        "vllm: raw LLM.generate tokens/s": round(raw_tokens / raw_seconds, 2),
        "vllm: orchestration overhead vs raw generate (%, target <= 20)": round(100 * (ours_seconds / raw_seconds - 1), 2),
        "vllm: rollout tokens/s (HF backend, same work)": round(hf_tps, 2),
        "vllm: vLLM backend / HF backend rollout tokens/s (x)": round(ours_tps / hf_tps, 3),
    })


def cli(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="vLLM backend rollout vs raw vLLM generate and vs the HF backend")
    parser.add_argument("--model", default=EMBEDDED)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--group", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    a = parser.parse_args(argv)
    return main(a.model, a.tasks, a.group, a.max_new_tokens)


if __name__ == "__main__":
    cli()
