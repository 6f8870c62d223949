"""How long `multiagent-rl analyse` takes on a log of 10,000 debate-like episodes.

Writes a synthetic run (100 steps x 100 episodes, 3 solvers, 2 rounds, plus eval episodes
every 10 steps) to a temporary folder and times `run_analysis` on it, without the ablation
(which needs a model). Run: ``python benchmarks/analysis_speed.py [EPISODES]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from multiagent_rl.analysis import run_analysis, write_synthetic_debate_run


def main(episodes: int = 10_000) -> dict[str, float]:
    steps = 100
    per_step = max(1, episodes // steps)
    with tempfile.TemporaryDirectory(prefix="mrl-analysis-bench-") as tmp:
        run = write_synthetic_debate_run(Path(tmp) / "run", steps=steps, episodes_per_step=per_step,
                                         solvers=3, rounds=2, eval_every=10, eval_episodes=20)
        start, cpu_start = time.perf_counter(), time.process_time()
        _, report = run_analysis(run, progress=False)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        size = report.stat().st_size
    total = steps * per_step
    # CPU time too: on a shared machine the wall time mostly measures the neighbours.
    print(f"analyse {total} episodes: {seconds:.1f} s (CPU {cpu:.1f} s; report {size / 1e6:.1f} MB)")
    return {f"analyse {total} episodes (s)": round(seconds, 2), f"analyse {total} episodes, CPU (s)": round(cpu, 2)}


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
