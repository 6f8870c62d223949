"""TRL's GRPOTrainer on the one-agent addition task, timed per step (runs in benchmarks/.venv-trl).

Standalone on purpose: it imports only TRL and its dependencies, never multiagent_rl.
`benchmarks/train_cost.py` writes the prompts (the exact chat messages our environment
builds, in step order) and runs this script as a subprocess:

    benchmarks/.venv-trl/bin/python benchmarks/trl_grpo_step.py --model MODEL_DIR \
        --prompts prompts.json --out result.json [--steps 3 --tasks 4 --group 8 ...]

Settings mirror `trainers.loop.Run`: LoRA (r, alpha, all projections), AdamW at a constant
lr, one optimizer step per `tasks * group` completions in micro-batches, beta = 0, one
iteration, token-mean (DAPO) loss, group-std advantage scaling, temperature 1, no top-k/top-p,
no gradient checkpointing, no vLLM. Each step is timed from the end of the previous one
(callback on_step_end); the first step is the warm-up and is left out when there are more.

Prints `name: value` lines and writes a JSON result: {"ok": true, "seconds_per_completion": ...}
or {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_NUMBER = re.compile(r"[-\u2212]?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)")


def last_number(text: str) -> str | None:
    """The last number in text, normalised like multiagent_rl.answers.last_number for integers."""
    found = _NUMBER.findall(text or "")
    if not found:
        return None
    token = found[-1].replace(",", "").replace("\u2212", "-")
    try:
        value = float(token)
    except ValueError:
        return token
    return str(int(value)) if value.is_integer() else token


def completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") if isinstance(m, dict) else str(m) for m in completion)
    return str(completion)


def addition_reward(text: str, answer: str, kind: str) -> float:
    """As benchmarks/train_cost.py: exact = last number correct; dense = 1 if right, else
    -|error|/20 capped at -1 (-1 without a number)."""
    found = last_number(text)
    if kind == "exact":
        return float(found == answer)
    if found == answer:
        return 1.0
    try:
        return -min(abs(float(found) - float(answer)), 20.0) / 20.0
    except (TypeError, ValueError):
        return -1.0


def make_reward(kind: str):
    def reward_last_number(completions, answer, **_) -> list[float]:
        return [addition_reward(completion_text(c), str(a), kind) for c, a in zip(completions, answer, strict=True)]

    return reward_last_number


def run(args: argparse.Namespace) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    completions_per_step = args.tasks * args.group
    if completions_per_step % args.micro_batch:
        raise ValueError(f"tasks * group ({completions_per_step}) must be a multiple of --micro-batch ({args.micro_batch})")
    rows = json.loads(Path(args.prompts).read_text())["rows"]
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": str(r["answer"])} for r in rows])

    tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    lora = LoraConfig(
        r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=ALL_PROJECTIONS, task_type="CAUSAL_LM"
    )

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.last = None
            self.durations: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.durations.append(now - self.last)
            self.last = now

    timer = StepTimer()
    out_dir = tempfile.mkdtemp(prefix="trl-grpo-bench-")
    config = GRPOConfig(
        output_dir=out_dir,
        use_cpu=True,
        bf16=args.bf16,
        fp16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=completions_per_step // args.micro_batch,
        num_generations=args.group,
        max_completion_length=args.max_new_tokens,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=0.0,
        epsilon=0.2,
        num_iterations=1,
        loss_type="dapo",
        scale_rewards="group",
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        use_vllm=False,
        shuffle_dataset=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=make_reward(args.reward),
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[timer],
    )
    start = time.perf_counter()
    try:
        trainer.train()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    total = time.perf_counter() - start
    steps = timer.durations
    measured = steps[1:] if len(steps) > 1 else steps
    logs = trainer.state.log_history
    trl_step_times = [e["step_time"] for e in logs if "step_time" in e]
    lengths = [e["completions/mean_length"] for e in logs if "completions/mean_length" in e]
    rewards = [e["reward"] for e in logs if "reward" in e]
    zero_std = [e["frac_reward_zero_std"] for e in logs if "frac_reward_zero_std" in e]
    per_step = statistics.fmean(measured)
    return {
        "trl": trl.__version__,
        "torch_threads": torch.get_num_threads(),
        "steps": len(steps),
        "warmup_excluded": len(steps) > 1,
        "completions_per_step": completions_per_step,
        "step_seconds": steps,
        "seconds_per_step": per_step,
        "seconds_per_completion": per_step / completions_per_step,
        "trl_step_time": trl_step_times,  # TRL's own timer: generation + forward/backward, no optimizer step
        "mean_completion_tokens": statistics.fmean(lengths[1:] if len(lengths) > 1 else lengths) if lengths else None,
        "reward_mean": statistics.fmean(rewards) if rewards else None,
        # groups whose rewards are all equal (zero advantage; TRL still runs their forward/backward)
        "frac_reward_zero_std": statistics.fmean(zero_std) if zero_std else None,
        "train_seconds": total,
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss would include the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="TRL GRPOTrainer seconds per completion on CPU")
    parser.add_argument("--model", required=True, help="HF model folder")
    parser.add_argument("--prompts", required=True, help='JSON {"rows": [{"prompt": [messages], "answer": "7"}]}')
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=4, help="distinct prompts per step")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (num_generations)")
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reward", choices=["exact", "dense"], default="exact")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, as our mixed_precision=bf16")
    args = parser.parse_args(argv)
    result: dict = {"ok": False}
    try:
        result.update(run(args))
        result["ok"] = True
    except Exception as exc:  # the caller records the reason instead of a number
        traceback.print_exc()
        result["error"] = f"{type(exc).__name__}: {exc}"
    Path(args.out).write_text(json.dumps(result, indent=2))
    if result["ok"]:
        print(f"trl version: {result['trl']}")
        print(f"trl steps timed: {len(result['step_seconds'])} (warm-up excluded: {result['warmup_excluded']})")
        print(f"trl seconds per step: {result['seconds_per_step']:.4g}")
        print(f"trl seconds per completion: {result['seconds_per_completion']:.4g}")
        print(f"trl mean completion tokens: {result['mean_completion_tokens']}")
    else:
        print(f"trl failed: {result['error']}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
