"""Rollout speed, three ways on the same prompts, in one process:

(a) our batched `rollout` (one mixed-adapter backend call per round);
(b) a sequential per-agent loop: one `backend.generate([request])` per request, on exactly
    the requests (prompts, adapter, sampling, max_new_tokens) our rollout sent;
(c) the backend's raw batched `model.generate` on the prompts our rollout sent in each
    round, with the same `adapter_names`, sampling settings, seed and max_new_tokens,
    with tokenising and padding done before the clock starts.

Figures: tokens/s of (a) and (b) and their ratio (target >= 5x), and the orchestration
overhead of (a) over (c): our wall time / raw wall time - 1 (target <= 20%). The arms are
interleaved in each repeat, so load from other processes hits them alike.

    python -m benchmarks.rollout_speed [--model tiny] [--tasks 4] [--group 6] [--repeats 2]
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Sequence

import torch

from benchmarks.common import EMBEDDED, emit, randomize_lora_b
from multiagent_rl import load_scenario
from multiagent_rl.adapters import LoraSettings, adapter_map, adapter_names, attach_adapters
from multiagent_rl.backends.base import GenerationRequest, GenerationResult
from multiagent_rl.backends.hf import BASE_ADAPTER, HFBackend
from multiagent_rl.models import load_model
from multiagent_rl.rollout import Sampling, rollout


class RecordingBackend:
    """Passes every call to the HF backend and keeps each round's requests, seed and results."""

    def __init__(self, inner: HFBackend):
        self.inner = inner
        self.calls: list[tuple[list[GenerationRequest], int | None, list[GenerationResult]]] = []

    def generate(self, requests: Sequence[GenerationRequest], seed: int | None = None) -> list[GenerationResult]:
        results = self.inner.generate(requests, seed=seed)
        self.calls.append((list(requests), seed, results))
        return results

    def sync(self, model, adapters, folder) -> None:
        return None


def raw_generate(backend: HFBackend, requests: list[GenerationRequest], seed: int | None) -> dict:
    """One plain `model.generate` over a round's requests, as the backend would batch them
    (left padding, per-row adapter_names, autocast if the backend uses it). Only the
    generate call is timed. Returns seconds, real tokens (up to the first end token) and steps."""
    model, tok = backend.model, backend.tokenizer
    prompts = [backend.encode(r) for r in requests]
    width = max(len(p) for p in prompts)
    pad = tok.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])  # (B, P)
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])  # (B, P)
    temperatures = {float(r.temperature) for r in requests}
    top_ps = {float(r.top_p) for r in requests}
    if len(temperatures) != 1 or len(top_ps) != 1 or min(temperatures) <= 0:
        raise ValueError(f"raw generate needs one sampling temperature > 0 and one top_p; got {temperatures}, {top_ps}")
    max_new = max(int(r.max_new_tokens) for r in requests)
    kwargs = {}
    if backend.adapters:
        kwargs["adapter_names"] = [r.adapter or BASE_ADAPTER for r in requests]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device.type
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=backend.mixed_precision == "bf16")
    if seed is not None:
        torch.manual_seed(seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.no_grad(), autocast:
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=max_new,
            do_sample=True,
            temperature=temperatures.pop(),
            top_k=0,
            top_p=top_ps.pop(),
            pad_token_id=pad,
            eos_token_id=backend.end_ids,
            **kwargs,
        )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    model.train(was_training)
    sequences = out[:, width:].tolist()  # (B, T)
    ends = set(backend.end_ids)
    tokens = 0
    for row, req in zip(sequences, requests, strict=True):
        n = next((j + 1 for j, t in enumerate(row) if t in ends), len(row))
        tokens += min(n, req.max_new_tokens)
    return {"seconds": seconds, "cpu": cpu, "tokens": tokens, "steps": len(sequences[0]) if sequences else 0}


def sequential(backend: HFBackend, calls, seed: int) -> dict:
    """Every recorded request on its own, agent by agent, through the same backend code path."""
    requests = [r for reqs, _, _ in calls for r in reqs]
    order = sorted(range(len(requests)), key=lambda i: str(requests[i].adapter))  # per agent (stable)
    tokens = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for k, i in enumerate(order):
        result = backend.generate([requests[i]], seed=seed * 100_003 + k)[0]
        tokens += len(result.completion_ids)
    return {
        "seconds": time.perf_counter() - start,
        "cpu": time.process_time() - cpu_start,
        "tokens": tokens,
        "calls": len(requests),
    }


def main(
    model: str = EMBEDDED,
    tasks: int = 4,
    group: int = 6,  # the learning configs (examples/*_learning.yaml) play 4 tasks x 6 samples
    solvers: int = 2,
    rounds: int = 2,
    max_new_tokens: int | None = None,
    repeats: int = 2,
    mixed_precision: str = "bf16",
    seed: int = 0,
) -> dict:
    scenario = load_scenario("debate", solvers=solvers, rounds=rounds)
    base, tokenizer = load_model(model)
    agents = adapter_map(scenario, "per_role")
    peft_model = attach_adapters(base, adapter_names(agents), LoraSettings(rank=16))
    randomize_lora_b(peft_model, std=1e-3, seed=seed)
    backend = HFBackend(peft_model, tokenizer, mixed_precision=mixed_precision)
    rng = random.Random(seed)
    task_list = [scenario.sample_task(rng, "train") for _ in range(tasks)]
    sampling = Sampling(max_new_tokens=max_new_tokens)
    print(
        f"rollout bench: model={model} debate solvers={solvers} rounds={rounds} tasks={tasks} group={group} "
        f"adapters={len(peft_model.peft_config)} max_new_tokens={max_new_tokens or scenario.max_new_tokens} "
        f"mixed_precision={mixed_precision} repeats={repeats} threads={torch.get_num_threads()}",
        flush=True,
    )
    # Warm-up (not timed): first calls pay for lazy initialisation.
    warm = RecordingBackend(backend)
    rollout(scenario, warm, task_list[:1], group_size=2, adapters=agents, sampling=Sampling(max_new_tokens=4), seed=10_000 + seed)
    raw_generate(backend, warm.calls[0][0], 0)

    # Wall and CPU seconds per arm: on a shared machine the CPU time is the steadier of the two.
    keys = ("ours_s", "ours_cpu", "ours_tok", "raw_s", "raw_cpu", "raw_tok", "seq_s", "seq_cpu", "seq_tok")
    totals = dict.fromkeys(keys, 0.0)
    step_mismatch = 0
    completions = 0
    for r in range(repeats):
        recorder = RecordingBackend(backend)
        start, cpu_start = time.perf_counter(), time.process_time()
        batch = rollout(scenario, recorder, task_list, group_size=group, adapters=agents, sampling=sampling, seed=seed + r)
        ours_s = time.perf_counter() - start
        totals["ours_s"] += ours_s
        totals["ours_cpu"] += time.process_time() - cpu_start
        totals["ours_tok"] += batch.generated_tokens
        completions += len(batch.samples)
        for requests, call_seed, results in recorder.calls:
            raw = raw_generate(backend, requests, call_seed)
            ours_steps = max(len(x.completion_ids) for x in results)
            if raw["steps"] != ours_steps:
                step_mismatch += 1
                # Different sampled lengths: charge raw for the same number of decode steps.
                raw["seconds"] *= ours_steps / max(raw["steps"], 1)
                raw["cpu"] *= ours_steps / max(raw["steps"], 1)
            totals["raw_s"] += raw["seconds"]
            totals["raw_cpu"] += raw["cpu"]
            totals["raw_tok"] += raw["tokens"]
        seq = sequential(backend, recorder.calls, seed=seed + r)
        totals["seq_s"] += seq["seconds"]
        totals["seq_cpu"] += seq["cpu"]
        totals["seq_tok"] += seq["tokens"]
        print(
            f"  repeat {r + 1}/{repeats}: batched {batch.generated_tokens} tokens in {ours_s:.1f} s "
            f"({len(recorder.calls)} calls); sequential {seq['tokens']} tokens in {seq['seconds']:.1f} s "
            f"({seq['calls']} calls)",
            flush=True,
        )
    if step_mismatch:
        print(f"  note: {step_mismatch} raw round(s) sampled a different length; raw time scaled to our step count")
    batched_tps = totals["ours_tok"] / totals["ours_s"]
    seq_tps = totals["seq_tok"] / totals["seq_s"]
    figures = {
        "rollout: completions per repeat": completions // max(repeats, 1),
        "rollout: batched tokens/s": round(batched_tps, 2),
        "rollout: sequential per-agent tokens/s": round(seq_tps, 2),
        "rollout: batched/sequential tokens/s (x, target >= 5)": round(batched_tps / seq_tps, 3),
        "rollout: raw generate tokens/s": round(totals["raw_tok"] / totals["raw_s"], 2),
        "rollout: our rollout seconds": round(totals["ours_s"], 3),
        "rollout: raw generate seconds": round(totals["raw_s"], 3),
        "rollout: orchestration overhead vs raw generate (%, target <= 20)": round(
            100 * (totals["ours_s"] / totals["raw_s"] - 1), 2
        ),
        # The same two ratios from CPU seconds (less sensitive to other processes on the machine).
        "rollout: batched/sequential tokens per CPU-second (x)": round(
            (totals["ours_tok"] / totals["ours_cpu"]) / (totals["seq_tok"] / totals["seq_cpu"]), 3
        ),
        "rollout: orchestration overhead vs raw generate, CPU time (%)": round(
            100 * (totals["ours_cpu"] / totals["raw_cpu"] - 1), 2
        ),
    }
    del backend, peft_model, base
    gc.collect()
    return emit(figures)


def cli(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=EMBEDDED)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--group", type=int, default=6)
    parser.add_argument("--solvers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default="bf16")
    args = parser.parse_args(argv)
    return main(args.model, args.tasks, args.group, args.solvers, args.rounds, args.max_new_tokens, args.repeats, args.mixed_precision)


if __name__ == "__main__":
    cli()
