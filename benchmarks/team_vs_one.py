"""A team against one agent at equal compute, from their two finished run folders: training
tokens (every turn of every agent), held-out accuracy before and after, and generated
tokens per solved held-out task (the final evaluation's tokens over its solved tasks).

    python -m benchmarks.team_vs_one runs/division-grpo runs/division-single
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from multiagent_rl import read_episodes


def run_figures(run: Path) -> dict:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [line for line in lines if "eval/team_reward_mean" in line]
    before, after = evals[0], evals[-1]
    trained = [line for line in lines if "rollout/generated_tokens_total" in line]
    final = run / "episodes" / f"eval-step-{after['step']:06d}.msgpack"
    episodes = read_episodes(final).episodes
    solved = round(after["eval/team_accuracy"] * len(episodes))  # the evaluation's own grading of team answers
    tokens = sum(t.completion_tokens or 0 for ep in episodes for t in ep.turns)
    return {
        "run": str(run),
        "steps": after["step"],
        "training tokens": trained[-1]["rollout/generated_tokens_total"] if trained else None,
        "accuracy before": before["eval/team_accuracy"],
        "accuracy after": after["eval/team_accuracy"],
        "reward before": before["eval/team_reward_mean"],
        "reward after": after["eval/team_reward_mean"],
        "held-out tasks solved": f"{solved}/{len(episodes)}",
        "held-out tokens per solved task": round(tokens / solved, 1) if solved else None,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description="A team run against a one-agent run on the same tasks")
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    figures = [run_figures(run) for run in args.runs]
    for f in figures:
        print(json.dumps(f))
    return figures


if __name__ == "__main__":
    main()
