"""Turn-based cost: training steps of take-away mirror self-play (`examples/take_away.py`,
8 tasks x 4 episodes, about 12 turns a game, moves of 1-4 tokens; `long_take_away`) against a
one-turn task at the same settings (`train_cost.addition_scenario`); seconds per generated
token of each. Also the debate of 3 rounds (random rewards, so every update runs).

With `--against COMMIT` the same steps run again on that commit's code (a `git archive`
of it, this file copied in), one after the other in this call, so the ratio compares
like with like on one machine. Run it alone: two jobs at once slow each other unevenly.

    python -m benchmarks.turn_cost [--model smollm2-135m-instruct] [--steps 3] [--against fe3bb1a]
        [--workloads take_away,one_turn,debate]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import EMBEDDED, REPO_DIR, emit

WORKLOADS = ("take_away", "one_turn", "debate")


def overrides(workload: str, model: str, steps: int) -> list[str]:
    common = [f"model={model}", "tasks_per_step=8", "group_size=4", "seed=0", f"steps={steps}", "eval_every=0",
              "log_with=[]", "progress=false", "mixed_precision=no"]
    if workload == "take_away":
        return common + ["scenario=examples/take_away.py:make_scenario", "scenario_options={opponent: model}",
                         "league.mode=mirror"]
    if workload == "debate":
        return common + ["scenario=debate", "scenario_options={rounds: 3}"]
    return common + ["scenario=addition", "max_new_tokens=20"]  # `worker` hands Run the scenario itself


def long_take_away():
    """Take-away self-play whose games run their length: a reply that is no legal move takes
    one stone instead of forfeiting (this measures cost, not play), so an untrained model's
    games last about 12 turns (6 a player) instead of ending at its first stray word."""
    from multiagent_rl import load_scenario, parse_number_answer

    scenario = load_scenario("examples/take_away.py:make_scenario", opponent="model")
    strict = scenario.act

    def act(view, agent, text):
        legal = {str(m) for m in range(1, min(3, view.state.stones) + 1)}
        return strict(view, agent, text if parse_number_answer(text) in legal else "1")

    scenario.act = act
    return scenario


def worker(workload: str, model: str, steps: int) -> dict:
    """Run `steps` train steps here (this process's code); figures over the steps after the first."""
    from multiagent_rl.config import load_config
    from trainers.loop import Run

    if workload == "one_turn":
        from benchmarks.train_cost import addition_scenario

        scenario = addition_scenario(max_new_tokens=20)
    elif workload == "debate":  # random rewards: every group carries signal, so every update runs
        from benchmarks.common import random_rewards
        from multiagent_rl import load_scenario

        scenario = random_rewards(load_scenario("debate", rounds=3))
    else:
        scenario = long_take_away()
    config = load_config(None, overrides(workload, model, steps))
    with tempfile.TemporaryDirectory(prefix="mrl-turn-cost-") as tmp:
        run = Run(config, tmp, scenario=scenario)
        steps_seen = []
        for step in range(1, steps + 1):
            m = run.train_step(step).metrics()
            steps_seen.append(m)
            print(f"  {workload} step {step}: {m['perf/step_seconds']:.1f} s (rollout {m['perf/rollout_seconds']:.1f}, "
                  f"update {m['perf/update_seconds']:.1f}), {int(m['rollout/generated_tokens'])} tokens generated, "
                  f"{int(m['update/samples'])} samples", file=sys.stderr, flush=True)
    measured = steps_seen[1:] or steps_seen
    total = {key: sum(m[key] for m in measured) for key in
             ("perf/step_seconds", "perf/rollout_seconds", "perf/update_seconds", "rollout/generated_tokens",
              "update/samples")}
    n = len(measured)
    return {
        "step_s": total["perf/step_seconds"] / n,
        "rollout_s": total["perf/rollout_seconds"] / n,
        "update_s": total["perf/update_seconds"] / n,
        "generated_tokens": total["rollout/generated_tokens"] / n,
        "samples": total["update/samples"] / n,
        "s_per_token": total["perf/step_seconds"] / max(total["rollout/generated_tokens"], 1),
    }


def measure(code: Path, workload: str, model: str, steps: int) -> dict:
    """`worker` in a fresh process whose imports come from `code` (one thread, as users' first runs)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(code)}
    out = subprocess.run([sys.executable, "-m", "benchmarks.turn_cost", "--worker", workload, "--model", model,
                          "--steps", str(steps)], cwd=code, env=env, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def snapshot(commit: str, into: Path) -> Path:
    """That commit's tracked files, with this benchmark copied in (it may predate it)."""
    archive = subprocess.run(["git", "archive", commit], cwd=REPO_DIR, check=True, stdout=subprocess.PIPE).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    shutil.copy(Path(__file__), into / "benchmarks" / "turn_cost.py")
    return into


def main(model: str = EMBEDDED, steps: int = 3, against: str | None = None,
         workloads: tuple[str, ...] = WORKLOADS) -> dict:
    figures: dict = {}
    codes = {"today": REPO_DIR}
    with tempfile.TemporaryDirectory(prefix="mrl-turn-cost-code-") as tmp:
        if against:
            codes[against] = snapshot(against, Path(tmp) / "code")
        for name, code in codes.items():
            for workload in workloads:
                result = measure(code, workload, model, steps)
                for key, value in result.items():
                    figures[f"{workload} {key} ({name})"] = round(value, 4)
    for name in codes if {"take_away", "one_turn"} <= set(workloads) else ():
        figures[f"turn/one-turn seconds per token ({name})"] = round(
            figures[f"take_away s_per_token ({name})"] / figures[f"one_turn s_per_token ({name})"], 2)
    if against:
        for workload in workloads:
            for key in ("step_s", "rollout_s", "update_s"):
                figures[f"{workload} {key} speed-up against {against}"] = round(
                    figures[f"{workload} {key} ({against})"] / figures[f"{workload} {key} (today)"], 2)
    return emit(figures)


def cli(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=EMBEDDED)
    parser.add_argument("--steps", type=int, default=3, help="train steps per run; the first is left out")
    parser.add_argument("--against", help="a commit whose code runs the same steps after today's")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list of {', '.join(WORKLOADS)}")
    parser.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.steps)))
        return None
    workloads = tuple(w for w in args.workloads.split(",") if w)
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {unknown[0]!r}; use {', '.join(WORKLOADS)}")
    return main(args.model, args.steps, args.against, workloads)


if __name__ == "__main__":
    cli()
