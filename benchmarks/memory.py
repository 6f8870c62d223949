"""Peak memory, each workload in a fresh subprocess, as VmHWM (see `common.peak_rss_mb`):

- the 4-solver debate step (rollout + update) with `adapters=per_role` (4 LoRA adapters, each
  with its own optimizer state) against `adapters=shared` (1 adapter): the ratio, target
  <= 1.15x, and the step's own peak, target <= 1.6 GB;
- the same step with `gradient_checkpointing=true` (activations recomputed in backward);
- the policy log-probs' forward and backward against completion length (64, 256, 1,024
  tokens), computed in chunks from the hidden states as the update does and over the whole
  vocabulary as it did before (`--logprob-curve`);
- the one-agent workload of the TRL comparison (`train_cost.py`: 4 prompts x 8 samples, 20
  tokens, dense reward, 3 steps) on our trainer; `train_cost.py` puts TRL's own peak on the
  same workload beside it (target: ours <= TRL's).

The debate workload is identical in both adapter modes (same tasks, prompts, completion
budget, and micro-batches of one agent's samples, so activations peak alike); rewards are
random so every group carries signal and the update really runs.

    python -m benchmarks.memory [--model tiny] [--agents 4] [--tasks 2] [--group 4]
    python -m benchmarks.memory --logprob-curve [--model tiny]
"""

from __future__ import annotations

import argparse
import json

from benchmarks.common import EMBEDDED, current_rss_mb, emit, peak_rss_mb, worker_result

MARK = "MEMORY-RESULT "


def debate_worker(model: str, mode: str, agents: int, tasks: int, group: int, max_new_tokens: int,
                  checkpointing: bool = False) -> dict:
    """One rollout + update step of the debate in this process; peak RSS in MB."""
    import random
    import tempfile

    from multiagent_rl import load_scenario
    from multiagent_rl.config import TrainConfig
    from trainers.loop import Run

    scenario = load_scenario("debate", solvers=agents, rounds=1)
    rng = random.Random(0)
    scenario.reward = lambda task, episode: {a: rng.random() for a in scenario.agents}
    config = TrainConfig(
        scenario="debate",
        scenario_options={"solvers": agents, "rounds": 1},
        model=model,
        adapters=mode,
        tasks_per_step=tasks,
        group_size=group,
        max_new_tokens=max_new_tokens,
        # Micro-batches of one agent's samples in both modes, so the update's activation
        # peak is the same and the difference is the adapters (weights, grads, AdamW state).
        micro_batch_size=tasks * group,
        gradient_checkpointing=checkpointing,
        log_with=[],
        progress=False,
        seed=0,
    )
    with tempfile.TemporaryDirectory(prefix="mrl-memory-bench-") as tmp:
        run = Run(config, tmp, scenario=scenario)
        metrics = run.train_step(1).metrics()
        adapters = len(run.model.peft_config)
    return {
        "mode": mode,
        "adapters": adapters,
        "peak_rss_mb": peak_rss_mb(),
        "completions": int(metrics["update/samples"]),
        "update_skipped": bool(metrics["update/skipped"]),
    }


def one_agent_worker(model: str, steps: int, tasks: int, group: int, max_new_tokens: int) -> dict:
    """The TRL comparison's one-agent workload (dense reward) on our trainer; peak RSS in MB."""
    import tempfile

    from benchmarks.train_cost import addition_scenario, train_config
    from trainers.loop import Run

    args = argparse.Namespace(tasks=tasks, group=group, max_new_tokens=max_new_tokens, steps=steps, mixed_precision="bf16")
    config = train_config(model, "addition", {}, args)
    with tempfile.TemporaryDirectory(prefix="mrl-memory-bench-") as tmp:
        run = Run(config, tmp, scenario=addition_scenario(max_new_tokens, "dense"))
        for step in range(1, steps + 1):
            run.train_step(step)
    return {"mode": "one-agent", "peak_rss_mb": peak_rss_mb()}


LENGTHS = (64, 256, 1024)
PATHS = ("chunked", "full_vocabulary")


def logprob_worker(model: str, path: str, length: int, rows: int = 4, prompt: int = 100) -> dict:
    """Forward and backward of the policy log-probs of `rows` completions of `length` tokens
    (after `prompt` tokens each, all different) in this process: `chunked` as the update
    computes them (`token_scoring`), `full_vocabulary` as it did before (logits of every
    completion position, then a log-softmax over the whole vocabulary). Peak RSS in MB,
    and the rise over the loaded model's resident memory."""
    import torch

    from multiagent_rl.adapters import LoraSettings, attach_adapters
    from multiagent_rl.models import load_model
    from multiagent_rl.token_scoring import completion_logprobs


    torch.manual_seed(0)
    base, tokenizer = load_model(model)
    peft_model = attach_adapters(base, ["policy"], LoraSettings())
    peft_model.train()
    vocab = peft_model.get_base_model().config.vocab_size
    prompts = torch.randint(100, vocab, (rows, prompt)).tolist()
    completions = torch.randint(100, vocab, (rows, length)).tolist()
    loaded = current_rss_mb()
    if path == "chunked":
        logps = completion_logprobs(peft_model, prompts, completions, [1.0] * rows, tokenizer.pad_token_id)
        total = sum(lp.sum() for lp in logps)
    else:
        ids = torch.tensor([p + c for p, c in zip(prompts, completions, strict=True)])
        logits = peft_model(input_ids=ids, logits_to_keep=length + 1).logits[:, :-1]  # (rows, length, V)
        total = torch.log_softmax(logits.float(), -1).gather(2, ids[:, -length:].unsqueeze(2)).sum()
    total.backward()
    peak = peak_rss_mb()
    return {"path": path, "length": length, "peak_rss_mb": peak, "above_loaded_mb": peak - loaded}


def measure(*worker_args: str) -> dict:
    return worker_result("benchmarks.memory", MARK, *worker_args)


def one_agent_peak(model: str, steps: int = 3, tasks: int = 4, group: int = 8, max_new_tokens: int = 20) -> float:
    """Our peak RSS (MB) on the TRL comparison's workload, in a fresh process."""
    return measure("one-agent", "--model", model, "--steps", str(steps), "--tasks", str(tasks), "--group", str(group),
                   "--max-new-tokens", str(max_new_tokens))["peak_rss_mb"]


def main(model: str = EMBEDDED, agents: int = 4, tasks: int = 2, group: int = 4, max_new_tokens: int = 16) -> dict:
    print(f"memory bench: model={model} debate solvers={agents} rounds=1 tasks={tasks} group={group}", flush=True)
    sizes = ["--model", model, "--agents", str(agents), "--tasks", str(tasks), "--group", str(group),
             "--max-new-tokens", str(max_new_tokens)]
    results = {}
    # One at a time: they must not share the CPU or RAM pressure.
    for name, mode, extra in (("shared", "shared", []), ("per_role", "per_role", []),
                              ("checkpointing", "shared", ["--checkpointing"])):
        results[name] = measure(mode, *sizes, *extra)
        r = results[name]
        print(f"  {name}: {r['adapters']} adapter(s): peak RSS {r['peak_rss_mb']:.0f} MB "
              f"({r['completions']} completions, update skipped: {r['update_skipped']})", flush=True)
    one, many = results["shared"], results["per_role"]
    figures = {
        "memory: peak RSS, 1 adapter (MB)": round(one["peak_rss_mb"], 1),
        f"memory: peak RSS, {many['adapters']} adapters (MB)": round(many["peak_rss_mb"], 1),
        f"memory: peak RSS {many['adapters']} adapters / 1 (x, target <= 1.15)": round(
            many["peak_rss_mb"] / one["peak_rss_mb"], 4
        ),
        f"memory: {agents}-solver debate step peak RSS, {many['adapters']} adapters (GB, target <= 1.6)": round(
            many["peak_rss_mb"] / 1024, 3
        ),
        "memory: peak RSS with gradient checkpointing, 1 adapter (MB)": round(results["checkpointing"]["peak_rss_mb"], 1),
    }
    return emit(figures)


def logprob_curve(model: str = EMBEDDED) -> dict:
    """`logprob_worker` for each path and completion length, each in a fresh process."""
    figures = {}
    for length in LENGTHS:
        for path in PATHS:
            r = measure(path, "--model", model, "--length", str(length))
            print(f"  {path}, {length} tokens: peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"{r['above_loaded_mb']:.0f} MB above the loaded model", flush=True)
            figures[f"memory: log-probs of 4 x {length} tokens, {path}, peak RSS (MB)"] = round(r["peak_rss_mb"], 1)
            figures[f"memory: log-probs of 4 x {length} tokens, {path}, above the loaded model (MB)"] = round(
                r["above_loaded_mb"], 1)
    return emit(figures)


def cli(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description="Peak RSS with N adapters vs 1, and of the TRL workload")
    parser.add_argument("--model", default=EMBEDDED)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--logprob-curve", action="store_true",
                        help="peak memory of the policy log-probs against completion length, chunked and full-vocabulary")
    parser.add_argument("--worker", choices=["shared", "per_role", "one-agent", *PATHS], help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    if a.logprob_curve:
        return logprob_curve(a.model)
    if a.worker in PATHS:
        result = logprob_worker(a.model, a.worker, a.length)
    elif a.worker == "one-agent":
        result = one_agent_worker(a.model, a.steps, a.tasks, a.group, a.max_new_tokens)
    elif a.worker:
        result = debate_worker(a.model, a.worker, a.agents, a.tasks, a.group, a.max_new_tokens, a.checkpointing)
    else:
        return main(a.model, a.agents, a.tasks, a.group, a.max_new_tokens)
    print(MARK + json.dumps(result), flush=True)
    return None


if __name__ == "__main__":
    cli()
