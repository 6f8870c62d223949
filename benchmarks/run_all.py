"""Run every benchmark, print each figure as `name: value`, write the results as JSON.

    python -m benchmarks.run_all              # full sizes (`make bench`) -> benchmarks/results.json
    python -m benchmarks.run_all --quick      # tiny model and sizes, a smoke check -> results-quick.json
    python -m benchmarks.run_all --skip-trl   # leave out TRL (and its venv) in either mode
    python -m benchmarks.run_all --only rollout,memory

The JSON maps each figure name to a number, or null when it could not be measured; `_notes`
says why for each null (and how TRL ran), `_meta` records the machine, versions and settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import BENCH_DIR, TINY, emit, environment

BENCHMARKS = ("rollout", "lengths", "train", "turn", "memory", "critic", "tree", "overlap", "scaling", "vllm", "server",
              "analysis")

# Sizes per mode; each benchmark's defaults are the full sizes.
FULL: dict[str, dict] = {name: {} for name in BENCHMARKS}
QUICK: dict[str, dict] = {
    "rollout": {"model": TINY, "tasks": 2, "group": 2, "repeats": 1},
    "train": {"model": TINY, "steps": 2, "team_steps": 1, "tasks": 2, "group": 4, "max_new_tokens": 8},
    "memory": {"model": TINY, "tasks": 1, "group": 2, "max_new_tokens": 8},
    "turn": {"model": TINY, "steps": 2},
    "lengths": {},
    "critic": {"model": TINY, "steps": 2, "tasks": 1, "group": 2, "max_new_tokens": 8},
    "tree": {"model": TINY, "steps": 2, "tasks": 1},
    "overlap": {"model": TINY, "steps": 3, "tasks": 1, "group": 2},
    "scaling": {"model": TINY, "steps": 2},
    "vllm": {"model": TINY, "tasks": 1, "group": 2, "max_new_tokens": 8},
    "server": {"model": TINY},
    "analysis": {"episodes": 200},
}


def run_one(name: str, options: dict, skip_trl: bool) -> dict:
    if name == "rollout":
        from benchmarks import rollout_speed

        return rollout_speed.main(**options)
    if name == "train":
        from benchmarks import train_cost

        return train_cost.main(**options, trl=not skip_trl)
    if name == "turn":
        from benchmarks import turn_cost

        return turn_cost.main(**{"steps": 3, "against": None, **options})
    if name == "memory":
        from benchmarks import memory

        return memory.main(**options)
    if name == "lengths":
        from benchmarks import episode_lengths

        return episode_lengths.main(**options)
    if name == "critic":
        from benchmarks import critic_cost

        return critic_cost.main(**options)
    if name == "tree":
        from benchmarks import tree_cost

        return tree_cost.main(**options)
    if name == "overlap":
        from benchmarks import overlap

        return overlap.main(**options)
    if name == "scaling":
        from benchmarks import scaling

        return scaling.main(**options)
    if name == "vllm":
        from benchmarks import vllm_speed

        return vllm_speed.main(**options)
    if name == "server":
        from benchmarks import server_speed

        return server_speed.main(**options)
    if name == "analysis":
        from benchmarks import analysis_speed

        return analysis_speed.main(**options)
    raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the benchmarks and write their figures as JSON")
    parser.add_argument("--quick", action="store_true", help="tiny model and sizes: a smoke check, not a measurement")
    parser.add_argument("--skip-trl", action="store_true", help="don't run (or install) TRL's GRPOTrainer")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma list of {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results.json, or results-quick.json)")
    args = parser.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    out = Path(args.out) if args.out else BENCH_DIR / ("results-quick.json" if args.quick else "results.json")
    sizes = QUICK if args.quick else FULL

    figures: dict = {}
    notes: dict[str, str] = {}
    seconds: dict[str, float] = {}
    failed = []
    for name in chosen:
        print(f"\n== {name} ==", flush=True)
        start = time.perf_counter()
        try:
            result = run_one(name, dict(sizes[name]), args.skip_trl)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            key = f"{name}: error"
            result = {key: None, "_notes": {key: f"{type(exc).__name__}: {exc}"}}
        seconds[name] = round(time.perf_counter() - start, 1)
        notes.update(result.pop("_notes", {}))
        figures.update(result)

    print("\n== results ==", flush=True)
    emit({**figures, "_notes": notes})
    meta = {
        "mode": "quick" if args.quick else "full",
        "skip_trl": args.skip_trl,
        "benchmarks": chosen,
        "sizes": {k: sizes[k] for k in chosen},
        "seconds": seconds,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        **environment(),
    }
    out.write_text(json.dumps({**figures, "_notes": notes, "_meta": meta}, indent=2) + "\n")
    print(f"\nwrote {out}" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
