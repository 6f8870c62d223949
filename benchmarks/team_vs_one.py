"""A team against one agent at equal training compute, on one rule for both sides.

Four tasks, each a team and its single-agent twin on the same held-out tasks (the same
seed draws the same tasks) and the same reward formula:
- division_of_labour: two workers and an aggregator; the twin sees all of (a + b) + (c + d);
- long_list: a list too long for one reply, split across workers; the twin gets their turns;
- lookup: split information (a keeper's table, an asker's question); the twin sees both;
- debate: two solvers, two rounds; the twin is one solver answering once.

Every run gets the same training-token budget (every turn of every agent counted) with the
clock and the step cap lifted, held-out evaluations along the way, and the format term under
the `shaping:` schedule (it stops paying once fewer than 10% of replies lack an answer), so
no side can live on it.

    python -m benchmarks.team_vs_one sweep lookup --out runs/tvo              # 3 learning rates x 2 sides, seed 0
    python -m benchmarks.team_vs_one seeds lookup --out runs/tvo --seed 1     # each side's best rate again
    python -m benchmarks.team_vs_one vote runs/tvo/debate-solo-lr5e-4-seed0 --n 4   # the lone agent's majority vote
    python -m benchmarks.team_vs_one report runs/tvo --out runs/tvo/report    # the table and the plot
    python -m benchmarks.team_vs_one figures RUN [RUN ...]                    # one run folder's figures

The best rate of a side is picked on its training rewards (the team-correctness term over the
last quarter of its steps), never on the held-out tasks the table reports.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

from benchmarks.common import wilson
from multiagent_rl import read_episodes

# task -> (the team's scenario options, the twin's, eval_every for the team, for the twin):
# evaluations about every 5,000 training tokens on each side.
TASKS = {
    "division_of_labour": ({}, {"solo": True}, 5, 50),
    "long_list": ({}, {"solo": True}, 6, 6),
    "lookup": ({}, {"solo": True}, 12, 24),
    "debate": ({}, {"solvers": 1, "rounds": 1}, 4, 16),
}
LEARNING_RATES = ["2.5e-4", "5e-4", "1e-3"]
TOKEN_BUDGET = 16000
SHAPING_STOP = 0.1


def train_command(task: str, side: str, lr: str, seed: int, out: Path, budget: int = TOKEN_BUDGET) -> list[str]:
    """The `multiagent-rl train` command of one run: the scenario's own defaults but for the
    side's options, the rate, the seed and the token budget."""
    team, solo, every_team, every_solo = TASKS[task]
    options = solo if side == "solo" else team
    settings = {
        **{f"scenario_options.{k}": str(v).lower() if isinstance(v, bool) else v for k, v in options.items()},
        "lr": lr, "seed": seed, "token_budget": budget, "time_budget_minutes": "null", "steps": 100000,
        "eval_every": every_solo if side == "solo" else every_team,
        "shaping.stop_when_invalid_below": SHAPING_STOP,
    }
    command = ["multiagent-rl", "train", task, "--out", str(run_folder(out, task, side, lr, seed))]
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]
    return command


def run_folder(out: Path, task: str, side: str, lr: str, seed: int) -> Path:
    return out / f"{task}-{side}-lr{lr}-seed{seed}"


def train(commands: list[list[str]]) -> None:
    for command in commands:
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)


# ----- reading run folders ------------------------------------------------------------------

def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def describe(run: Path) -> dict:
    """The run's task, side, rate, seed and budget, from its resolved config."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    options = config.get("scenario_options") or {}
    task = config["scenario"]
    twin = TASKS[task][1] if task in TASKS else {"solo": True}  # a twin is known by its options
    solo = all(options.get(key) == value for key, value in twin.items())
    return {"task": task, "side": "solo" if solo else "team", "lr": float(config["lr"]), "seed": config["seed"],
            "token_budget": config.get("token_budget")}


def training_correctness(lines: list[dict]) -> float:
    """The team-correctness term (every agent gets the same one) averaged over the last
    quarter of training steps: what picks a side's best rate."""
    steps = [line for line in lines if "rollout/generated_tokens_total" in line]
    late = steps[-max(1, len(steps) // 4):]
    values = [v for line in late for k, v in line.items() if k.startswith("reward/") and k.endswith("/correct")]
    return statistics.fmean(values) if values else float("nan")


def curve(lines: list[dict]) -> list[tuple[float, float, float, float]]:
    """(training tokens, held-out accuracy, 95% low, high) at each evaluation."""
    tokens = {line["step"]: line["rollout/generated_tokens_total"] for line in lines if "rollout/generated_tokens_total" in line}
    points = []
    for line in lines:
        if "eval/team_accuracy" in line:
            n = int(line.get("eval/team_reward_n") or 0)
            low, high = wilson(round(line["eval/team_accuracy"] * n), n) or (float("nan"), float("nan"))
            points.append((tokens.get(line["step"], 0), line["eval/team_accuracy"], low, high))
    return points


def run_figures(run: Path) -> dict:
    """One run's figures: training tokens and minutes, held-out accuracy before and after
    with their 95% intervals, and generated tokens per solved held-out task."""
    lines = metrics(run)
    evals = [line for line in lines if "eval/team_accuracy" in line]
    before, after = evals[0], evals[-1]
    trained = [line for line in lines if "rollout/generated_tokens_total" in line]
    episodes = read_episodes(run / "episodes" / f"eval-step-{after['step']:06d}.msgpack").episodes
    solved = round(after["eval/team_accuracy"] * len(episodes))  # the evaluation's own grading of team answers
    tokens = sum(t.completion_tokens or 0 for ep in episodes for t in ep.turns)
    n = len(episodes)
    return {
        "run": str(run),
        "steps": after["step"],
        "training tokens": trained[-1]["rollout/generated_tokens_total"] if trained else None,
        "training minutes": round(sum(line.get("perf/step_seconds", 0.0) for line in trained) / 60, 1),
        "accuracy before": before["eval/team_accuracy"],
        "accuracy before interval": wilson(round(before["eval/team_accuracy"] * n), n),
        "accuracy after": after["eval/team_accuracy"],
        "accuracy after interval": wilson(solved, n),
        "reward before": before["eval/team_reward_mean"],
        "reward after": after["eval/team_reward_mean"],
        "held-out tasks solved": f"{solved}/{n}",
        "held-out tokens per task": round(tokens / n, 1) if n else None,
        "held-out tokens per solved task": round(tokens / solved, 1) if solved else None,
        "training correctness, last quarter": round(training_correctness(lines), 3),
    }


def runs_under(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/metrics.jsonl") if (p.parent / "config.yaml").exists())


def best_rates(root: Path) -> dict[tuple[str, str], float]:
    """(task, side) -> the rate whose seed-0 run trained best (training rewards only)."""
    scores: dict[tuple[str, str], dict[float, float]] = {}
    for run in runs_under(root):
        about = describe(run)
        if about["seed"] == 0:
            scores.setdefault((about["task"], about["side"]), {})[about["lr"]] = training_correctness(metrics(run))
    return {key: max(rates, key=lambda lr: rates[lr]) for key, rates in scores.items()}


def vote_figures(run: Path) -> dict | None:
    """The lone agent's majority-vote evaluation (`vote`), if it was run."""
    path = run / "vote.json"
    return json.loads(path.read_text()) if path.exists() else None


def report(root: Path, out: Path) -> dict:
    """Every run under `root` in a table (the best rate of each side marked), the held-out
    accuracy against training tokens of each side's best rate on one plot per task, as
    `out/team-vs-one.json`, `.md` and `.png`."""
    from multiagent_rl.analysis.plots import accuracy_against_tokens

    best = best_rates(root)
    rows, panels = [], {}
    for run in runs_under(root):
        about = describe(run)
        chosen = best.get((about["task"], about["side"])) == about["lr"]
        row = {**about, "best rate": chosen, **run_figures(run)}
        votes = vote_figures(run)
        if votes:
            row["vote"] = votes
        rows.append(row)
        if chosen:
            label = f"{'team' if about['side'] == 'team' else 'one agent'} (lr {about['lr']:g}, seed {about['seed']})"
            panels.setdefault(about["task"], {})[label] = curve(metrics(run))
    out.mkdir(parents=True, exist_ok=True)
    (out / "team-vs-one.json").write_text(json.dumps(rows, indent=2))
    (out / "team-vs-one.png").write_bytes(base64.b64decode(accuracy_against_tokens(panels)))
    (out / "team-vs-one.md").write_text(markdown(rows))
    return {"runs": len(rows), "out": str(out)}


def interval(pair) -> str:
    return f"[{pair[0]:.0%}, {pair[1]:.0%}]" if pair else ""


def markdown(rows: list[dict]) -> str:
    lines = ["# A team against one agent at equal training tokens", "",
             "![held-out accuracy against training tokens](team-vs-one.png)", "",
             "| task | side | lr | seed | training tokens | minutes | held-out accuracy before | after | "
             "held-out reward before -> after | tokens per solved task | training correctness (last quarter) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["task"], r["side"], r["lr"], r["seed"])):
        mark = " (best)" if r["best rate"] else ""
        lines.append(
            f"| {r['task']} | {r['side']} | {r['lr']:g}{mark} | {r['seed']} | {r['training tokens']} | {r['training minutes']} | "
            f"{r['accuracy before']:.0%} {interval(r['accuracy before interval'])} | "
            f"{r['accuracy after']:.0%} {interval(r['accuracy after interval'])} | "
            f"{r['reward before']:.3f} -> {r['reward after']:.3f} | {r['held-out tokens per solved task']} | {r['training correctness, last quarter']} |")
    votes = [r for r in rows if "vote" in r]
    if votes:
        lines += ["", "Majority vote of the lone agent (N sampled episodes per held-out task):", "",
                  "| run | N | untrained vote accuracy | trained | generated tokens per task (trained) |", "|---|---|---|---|---|"]
        for r in votes:
            v = r["vote"]
            lines.append(f"| {Path(r['run']).name} | {v['vote']} | {v['base']['vote_accuracy']:.0%} | "
                         f"{v['trained']['vote_accuracy']:.0%} | {v['trained']['generated_tokens_per_task']:.1f} |")
    return "\n".join(lines) + "\n"


def published_rows(rows: list[dict], commit: str, date: str, beside: str) -> list[dict]:
    """benchmarks/published.yaml rows (topic team-vs-one-fair) for the report's runs."""
    from benchmarks.common import cpu_name

    out = []
    for r in sorted(rows, key=lambda r: (r["task"], r["side"], r["lr"], r["seed"])):
        lr = next((text for text in LEARNING_RATES if float(text) == r["lr"]), f"{r['lr']:g}")
        side = "the team" if r["side"] == "team" else "one agent (the twin)"
        name = f"{r['task']}-{r['side']}-lr{lr}-seed{r['seed']}"
        lo, hi = r["accuracy after interval"] or (0, 0)
        blo, bhi = r["accuracy before interval"] or (0, 0)
        out.append({
            "id": f"tvo-{name.replace('_', '-').replace('.', 'p')}",
            "kind": "learning",
            "topics": ["team-vs-one-fair"],
            "claim": f"{r['task']}, {side}, lr {lr}{' (its best rate on training rewards)' if r['best rate'] else ''}, "
                     + (f"{r['token_budget']:,} training tokens" if r["token_budget"] else "no token budget") + "; held-out accuracy",
            "figure": f"{r['accuracy before']:.0%} [{blo:.0%}, {bhi:.0%}] -> {r['accuracy after']:.0%} [{lo:.0%}, {hi:.0%}]; "
                      f"held-out reward {r['reward before']:.3f} -> {r['reward after']:.3f}",
            "value": r["accuracy after"],
            "detail": f"{r['steps']} steps, {r['training tokens']:,} training tokens, {r['training minutes']} training minutes; "
                      f"{r['held-out tasks solved']} held-out tasks solved, {r['held-out tokens per solved task']} tokens per solved task; "
                      f"training correctness over its last quarter {r['training correctness, last quarter']}",
            "date": date, "commit": commit, "hardware": f"2-core {cpu_name()} CPU, no GPU", "threads": "1", "beside": beside, "seed": r["seed"],
            "command": f"python -m benchmarks.team_vs_one {'seeds' if r['seed'] else 'sweep'} {r['task']} --out runs/tvo"
                       + (f" --seed {r['seed']}" if r["seed"] else "") + f" --side {r['side']}" + ("" if r["seed"] else f" --lr {lr}"),
            "rerun": {"run": f"python -m benchmarks.team_vs_one sweep {r['task']} --out {{out}} --side {r['side']} --lr {lr}",
                      "read": f"metrics:{r['task']}-{r['side']}-lr{lr}-seed0:eval/team_accuracy"} if not r["seed"] else None,
        })
    return [{k: v for k, v in row.items() if v is not None} for row in out]


def main(argv: list[str] | None = None) -> object:
    parser = argparse.ArgumentParser(description="A team against one agent at equal training tokens")
    sub = parser.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="train each side at each learning rate (seed 0)")
    sweep.add_argument("task", choices=sorted(TASKS))
    sweep.add_argument("--out", type=Path, required=True)
    sweep.add_argument("--side", choices=["team", "solo"], action="append", help="one side only (default both)")
    sweep.add_argument("--lr", action="append", help=f"learning rates (default {', '.join(LEARNING_RATES)})")
    sweep.add_argument("--budget", type=int, default=TOKEN_BUDGET, help="training tokens per run")
    seeds = sub.add_parser("seeds", help="train each side's best rate of the sweep at another seed")
    seeds.add_argument("task", choices=sorted(TASKS))
    seeds.add_argument("--out", type=Path, required=True)
    seeds.add_argument("--seed", type=int, required=True)
    seeds.add_argument("--side", choices=["team", "solo"], action="append", help="one side only (default both)")
    seeds.add_argument("--budget", type=int, default=TOKEN_BUDGET)
    vote = sub.add_parser("vote", help="majority vote of a lone agent's run, untrained and trained, into RUN/vote.json")
    vote.add_argument("run", type=Path)
    vote.add_argument("--n", type=int, required=True, help="sampled episodes per held-out task")
    rep = sub.add_parser("report", help="the table and the plot of every run under a folder")
    rep.add_argument("root", type=Path)
    rep.add_argument("--out", type=Path, required=True)
    pub = sub.add_parser("rows", help="benchmarks/published.yaml rows for a report's runs, as YAML")
    pub.add_argument("report", type=Path, help="a report's team-vs-one.json")
    pub.add_argument("--commit", required=True)
    pub.add_argument("--date", required=True)
    pub.add_argument("--beside", required=True, help="what ran beside the runs")
    fig = sub.add_parser("figures", help="one run folder's figures, as JSON lines")
    fig.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args(argv)

    if args.command == "sweep":
        train([train_command(args.task, side, lr, 0, args.out, args.budget)
               for lr in args.lr or LEARNING_RATES for side in args.side or ["team", "solo"]])
    elif args.command == "seeds":
        best = best_rates(args.out)
        sides = args.side or ["team", "solo"]
        missing = [side for side in sides if (args.task, side) not in best]
        if missing:
            sys.exit(f"team_vs_one: no seed-0 sweep of {args.task} for {', '.join(missing)} under {args.out}")
        train([train_command(args.task, side, f"{best[(args.task, side)]:g}", args.seed, args.out, args.budget)
               for side in sides])
    elif args.command == "vote":
        about = describe(args.run)
        done = subprocess.run(["multiagent-rl", "eval", about["task"], "--run", str(args.run), "--vote", str(args.n)],
                              check=True, capture_output=True, text=True)
        (args.run / "vote.json").write_text(done.stdout)
        print(done.stdout)
    elif args.command == "rows":
        rows = json.loads(args.report.read_text())
        print(yaml.safe_dump(published_rows(rows, args.commit, args.date, args.beside), sort_keys=False, width=200))
    elif args.command == "report":
        print(json.dumps(report(args.root, args.out)))
    else:
        for run in args.runs:
            print(json.dumps(run_figures(run)))
    return None


if __name__ == "__main__":
    main()
