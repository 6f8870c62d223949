"""A tiny two-agent training run (`duo`: rewards that always differ, so every step updates)
that tests import, or launch as a script with 1 or N processes (not collected by pytest).

    python tests/duo_run.py --out DIR --steps 2
    accelerate launch --multi_gpu --num_processes 2 tests/duo_run.py --out DIR --steps 2
    python tests/duo_run.py --out DIR --steps 6 --save-every 2 --hf   # the kill-anywhere test
    python tests/duo_run.py --out DIR --hf --set rollout.max_staleness=1

Unless `--hf`, generation is replaced by `KeyedBackend`, whose completions depend only on each
request's own content (never on the batch it came in or the rank that sent it), so 1 and N
processes play exactly the same samples and must end with the same weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multiagent_rl import Role, Scenario, Task, complete, individual_rewards  # noqa: E402
from multiagent_rl.backends.base import GenerationResult  # noqa: E402
from multiagent_rl.config import load_config  # noqa: E402
from trainers.distributed import close_process_group  # noqa: E402
from trainers.loop import Run  # noqa: E402

AGENTS = ["solver", "critic"]


def make_task(rng: random.Random) -> Task:
    n = rng.randint(0, 10**6)
    return Task(key=f"n{n}", prompt=f"Say something about {n}.", answer=str(n))


def text_reward(task: Task, episode) -> dict[str, float]:
    return individual_rewards({t.agent: len(t.message.text) / 40 for t in episode.turns})


def duo() -> Scenario:
    return Scenario(
        name="duo",
        roles=[Role("solver", "Solve it."), Role("critic", "Criticise it.")],
        graph=complete(AGENTS),
        schedule=[AGENTS],
        make_task=make_task,
        reward=text_reward,
        max_new_tokens=4,
    )


class KeyedBackend:
    """Completions drawn from a hash of (messages, adapter, how many identical requests came
    before it in the call): the G samples of a group differ, and nothing depends on sharding."""

    def __init__(self, tokenizer, adapters: list[str]):
        self.tokenizer = tokenizer
        self.adapters = adapters

    def sync(self, model, adapters, folder) -> None:
        return None

    def generate(self, requests, seed=None):
        seen: Counter = Counter()
        results = []
        for r in requests:
            key = json.dumps([r.messages, r.adapter], sort_keys=True)
            occurrence = seen[key]
            seen[key] += 1
            rng = random.Random(hashlib.sha256(f"{key}|{occurrence}".encode()).hexdigest())
            ids = [rng.randrange(100, 2000) for _ in range(rng.randint(1, r.max_new_tokens))]
            prompt = list(self.tokenizer.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=True, return_dict=False))
            results.append(GenerationResult(
                text=self.tokenizer.decode(ids, skip_special_tokens=True), prompt_ids=prompt, completion_ids=ids,
                logprobs=[0.0] * len(ids), finish_reason="length" if len(ids) == r.max_new_tokens else "stop", tag=r.tag,
            ))
        return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--save-every", type=int, default=1)
    parser.add_argument("--hf", action="store_true", help="generate with the tiny model itself, not KeyedBackend")
    parser.add_argument("--trainer", default="grpo")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    config = load_config(None, [
        "scenario=duo", "model=tiny", "log_with=[]", "progress=false", "tasks_per_step=4", "group_size=3",
        "eval_episodes=3", "eval_every=0", "lora.rank=4", "lr=0.01", "mixed_precision=no",
        f"steps={args.steps}", f"save_every={args.save_every}", f"trainer={args.trainer}", *args.overrides,
    ])
    run = Run(config, args.out, scenario=duo())
    if not args.hf:
        run.team.backend = KeyedBackend(run.tokenizer, list(run.model.peft_config))
    run.train()
    close_process_group()  # as `multiagent-rl train` does before it exits


if __name__ == "__main__":
    main()
