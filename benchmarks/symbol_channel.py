"""What emerged on signalling's symbol channel, from finished run folders
(`examples/signalling_symbols.yaml`): the listener's held-out accuracy before and after,
apart for new arrangements of seen objects and for combinations never seen in training
(`meta["novel"]`), with 95% Wilson intervals; the code's structure early and late in
training (topographic similarity, positional and bag-of-symbols disentanglement, adjusted
meaning-message information), each beside its shuffled-message baseline; and the late
lexicon (each attribute value's most used symbol per position).

    python -m benchmarks.symbol_channel runs/symbols-seed0 runs/symbols-seed1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import wilson
from multiagent_rl import read_episodes, read_run_episodes
from multiagent_rl.analysis import lexicon, meaning_message_information, training_phases
from multiagent_rl.analysis.disentanglement import (
    bag_of_symbols_disentanglement,
    positional_disentanglement,
    shuffled_baseline,
    topsim,
)

ATTRIBUTES = ["target.colour", "target.shape"]


def accuracy(episodes) -> dict:
    """The listener's picks on held-out episodes, novel combinations apart from seen ones."""
    out = {}
    for name, novel in (("seen objects", False), ("novel combinations", True)):
        part = [e for e in episodes if bool(e.task.meta.get("novel")) == novel]
        right = sum(e.team_answer == e.task.answer for e in part)
        out[name] = {"right": right, "episodes": len(part), "accuracy": round(right / len(part), 3) if part else None,
                     "interval": wilson(right, len(part))}
    right = sum(e.team_answer == e.task.answer for e in episodes)
    out["all"] = {"right": right, "episodes": len(episodes), "accuracy": round(right / len(episodes), 3),
                  "interval": wilson(right, len(episodes))}
    return out


def signals(episodes) -> list[tuple[tuple, tuple[str, ...]]]:
    """(meaning, the speaker's symbols) of each episode."""
    return [((e.task.meta["target"]["colour"], e.task.meta["target"]["shape"]), tuple(e.turns[0].message.text.split()))
            for e in episodes if e.turns and e.turns[0].agent == "speaker"]


def structure(episodes) -> dict:
    """The code's structure on these episodes, each metric beside its shuffled baseline."""
    found = signals(episodes)
    figures = {"episodes": len(found)}
    for name, metric in (("topographic_similarity", topsim), ("posdis", positional_disentanglement),
                         ("bosdis", bag_of_symbols_disentanglement)):
        value = metric(found)
        figures[name] = round(value, 3) if value is not None else None
        shuffled = shuffled_baseline(metric, found)
        figures[f"{name}_shuffled"] = round(shuffled, 3) if shuffled is not None else None
    info = meaning_message_information(episodes, agent="speaker", attributes=ATTRIBUTES)[0]
    figures["adjusted_normalised_mi"] = info.get("adjusted_normalised_mi")
    figures["mutual_information_bits"] = info.get("mutual_information_bits")
    figures["meaning_entropy_bits"] = info.get("meaning_entropy_bits")
    return figures


def run_figures(run: Path) -> dict:
    evals = sorted((run / "episodes").glob("eval-step-*.msgpack"))
    before, after = (read_episodes(evals[0]).episodes, read_episodes(evals[-1]).episodes) if evals else ([], [])
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    episodes = read_run_episodes(run).episodes
    early, late = training_phases(episodes)
    return {
        "run": str(run),
        "steps": max((m.get("step", 0) for m in metrics), default=0),
        "held-out before": accuracy(before),
        "held-out after": accuracy(after),
        "structure early": structure(early),
        "structure late": structure(late),
        "lexicon late": lexicon(episodes, agent="speaker", attributes=ATTRIBUTES, phase="late"),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description="What emerged on signalling's symbol channel")
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders of examples/signalling_symbols.yaml")
    args = parser.parse_args(argv)
    figures = [run_figures(run) for run in args.runs]
    print(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
