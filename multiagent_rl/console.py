"""What the command line prints for people: episode transcripts, and a run's held-out
before/after table with a few held-out episodes of the trained team."""

from __future__ import annotations

from .records import read_episodes


def print_transcripts(episodes, title: str = "episode", prompts: bool = False) -> None:
    for i, ep in enumerate(episodes, 1):
        print(f"=== {title} {i}: {ep.task.prompt}")
        for turn in ep.turns:
            if prompts and turn.observation is not None:
                shown = turn.observation.replace("\n", "\n    | ")
                print(f"    | {turn.agent} was given:\n    | {shown}")
            to = ", ".join(turn.message.receivers) or "(nobody)"
            marks = "".join([" [scripted]" if turn.scripted else "", "" if turn.valid else " [invalid]",
                             f" [reward {turn.reward:+.3g}]" if turn.reward else ""])
            print(f"[round {turn.round + 1}] {turn.agent} -> {to}: {turn.message.text.strip()!r}  (answer: {turn.message.answer}){marks}")
        ending = f"  winner: {ep.winner}" if ep.winner is not None else ""
        ending += "  (truncated)" if ep.truncated else ""
        print(f"team answer: {ep.team_answer}  reference: {ep.task.answer}  rewards: {ep.rewards}{ending}\n")


def print_final_transcripts(run, count: int = 2) -> None:
    """A few held-out episodes of the trained team, so the numbers come with real text."""
    logs = sorted((run.run_dir / "episodes").glob("eval-step-*.msgpack"))
    if logs:
        episodes = read_episodes(logs[-1]).episodes[:count]
        print_transcripts(episodes, title=f"held-out episode after step {run.step},")


def print_before_after(summary: dict, run) -> None:
    before, after = summary.get("before"), summary.get("after")
    minutes = summary.get("train_seconds", 0.0) / 60
    print(f"run folder: {run.run_dir}  steps: {summary['steps']}  training time: {minutes:.1f} min  resumed from: {summary.get('resumed_from')}")
    if summary.get("stopped"):
        print(summary["stopped"])
    if before and after:
        print(f"held-out team reward ({before['n']} episodes, greedy)")
        print(f"  {'':10s} {'mean':>8s} {'s.e.':>8s} {'accuracy':>9s}")
        for label, row in (("before", before), ("after", after)):
            print(f"  {label:10s} {row['mean']:8.3f} {row['se']:8.3f} {row.get('accuracy', float('nan')):9.3f}")
        accuracy_change = after.get("accuracy", float("nan")) - before.get("accuracy", float("nan"))
        print(f"  {'change':10s} {after['mean'] - before['mean']:+8.3f} {'':8s} {accuracy_change:+9.3f}")
        rates = [k for k in after if k.endswith("_rate") or "_rate/" in k]
        if rates:  # a game: the model team's win, draw and loss rates, and its invalid moves
            print("  " + "  ".join(f"{k} {before.get(k, float('nan')):.3f} -> {after[k]:.3f}" for k in sorted(rates)))
