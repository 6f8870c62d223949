"""Training cost per completion: one whole step (rollout + update) / completions.

Ours (`trainers.loop.Run.train_step`) on a one-agent scenario declared here ("What is a + b?",
a, b in 1..20; reward 1 if the last number of the reply is a + b), then the update part
alone, then the 2-agent debate and a 3-agent debate (solvers=3) with the same settings.
Against TRL's GRPOTrainer with the same model folder, LoRA, prompts (the exact chat messages
our environment builds, in the same step order), group size and max tokens, run by
`benchmarks/trl_grpo_step.py` in its own venv (`benchmarks/.venv-trl`, created on first use
with pinned versions; TRL is never installed into the project's venv). The first step of
each run is a warm-up and is left out when there are more.

If TRL can't run, the TRL figures are null and `_notes` says why (the error text).

    python -m benchmarks.train_cost [--model tiny] [--steps 3] [--skip-trl] [--no-teams]
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import BENCH_DIR, EMBEDDED, TINY, emit, model_folder, remove, scratch_dir
from multiagent_rl import Episode, Role, Scenario, Task, from_edges, last_number
from multiagent_rl.adapters import ALL_PROJECTIONS
from multiagent_rl.config import TrainConfig

TRL_VENV = BENCH_DIR / ".venv-trl"
TRL_VERSION = "1.16.0"  # needs transformers>=4.56.2: works with the project's transformers<5.20
TRL_SCRIPT = BENCH_DIR / "trl_grpo_step.py"
SYSTEM = "Reply with only the final number."


class TrlUnavailable(RuntimeError):
    """TRL's venv can't be used; the message is the reason recorded in the results."""


REWARDS = ("exact", "dense")


def addition_reward(text: str, answer: str, kind: str = "exact") -> float:
    """exact: 1 if the last number is the answer, else 0 (most groups of a weak model score all 0,
    so they carry no signal). dense: 1 if right, else -|error|/20 capped at -1 (-1 without a
    number), so groups almost never tie and every sample reaches the update."""
    found = last_number(text)
    if kind == "exact":
        return float(found == answer)
    if found == answer:
        return 1.0
    try:
        return -min(abs(float(found) - float(answer)), 20.0) / 20.0
    except (TypeError, ValueError):
        return -1.0


def addition_scenario(max_new_tokens: int = 20, reward_kind: str = "exact") -> Scenario:
    """One role, one round: "What is a + b?" with a, b in 1..20; reward from the last number."""

    def make_task(rng: random.Random) -> Task:
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        return Task(key=f"{a}+{b}", prompt=f"What is {a} + {b}?", answer=str(a + b))

    def reward(task: Task, episode: Episode) -> dict[str, float]:
        text = episode.turns[-1].message.text if episode.turns else ""
        return {"solver": addition_reward(text, task.answer, reward_kind)}

    return Scenario(
        name="addition",
        roles=[Role("solver", SYSTEM)],
        graph=from_edges([], agents=["solver"]),  # a lone agent: no edges
        schedule=[["solver"]],
        make_task=make_task,
        reward=reward,
        parse=last_number,
        max_new_tokens=max_new_tokens,
        temperature=1.0,
    )


def train_config(model: str, scenario: str, options: dict, args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        scenario=scenario,
        scenario_options=options,
        model=model,
        mixed_precision=args.mixed_precision,
        lora={"rank": 16, "alpha": 32, "dropout": 0.0, "target_modules": list(ALL_PROJECTIONS)},
        lr=2e-4,
        tasks_per_step=args.tasks,
        group_size=args.group,
        micro_batch_size=micro_batch(args),
        max_new_tokens=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        steps=args.steps,
        log_with=[],
        progress=False,
        seed=0,
    )


def micro_batch(args: argparse.Namespace) -> int:
    """Samples per forward/backward, the same for both trainers (TRL needs it to divide a step)."""
    size = min(16, args.tasks * args.group)
    while (args.tasks * args.group) % size:
        size -= 1
    return size


def measure_ours(config: TrainConfig, steps: int, scenario: Scenario | None = None, keep_prompts: bool = False) -> dict:
    """Run `steps` train steps in a scratch folder; per-completion costs over the steps after the first."""
    from trainers.loop import Run

    with tempfile.TemporaryDirectory(prefix="mrl-train-bench-") as tmp:
        run = Run(config, tmp, scenario=scenario)
        metrics = []
        for step in range(1, steps + 1):
            m = run.train_step(step).metrics()
            metrics.append(m)
            print(
                f"  {run.scenario.name} step {step}: {m['perf/step_seconds']:.2f} s "
                f"(rollout {m['perf/rollout_seconds']:.2f}, update {m['perf/update_seconds']:.2f}) "
                f"for {int(m['update/samples'])} completions",
                flush=True,
            )
        rows = trl_rows(run, steps) if keep_prompts else None
        del run
        gc.collect()
    measured = metrics[1:] if len(metrics) > 1 else metrics
    completions = sum(m["update/samples"] for m in measured)
    informative = sum(m["update/informative_samples"] for m in measured)
    return {
        "per_completion": sum(m["perf/step_seconds"] for m in measured) / completions,
        "rollout_per_completion": sum(m["perf/rollout_seconds"] for m in measured) / completions,
        "update_per_completion": sum(m["perf/update_seconds"] for m in measured) / completions,
        "informative": informative / completions,
        "update_per_informative": (
            sum(m["perf/update_seconds"] for m in measured) / informative if informative else None
        ),
        "mean_tokens": statistics.fmean(m["completions/mean_tokens"] for m in measured),
        "reward": statistics.fmean(m["reward/team_mean"] for m in measured),
        "rows": rows,
    }


def trl_rows(run, steps: int) -> list[dict]:
    """The chat messages our env shows the agent for every task of steps 1..steps, in order."""
    rows = []
    agent = run.scenario.agents[0]
    for step in range(1, steps + 1):
        for task in run.tasks_for_step(step):
            env = run.scenario.make_env(task=task)
            env.reset(seed=0, options={"task": task})
            rows.append({"prompt": env.chat(agent), "answer": task.answer})
    return rows


# ----- TRL ---------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    """The project's torch / transformers / peft versions: the TRL venv gets the same ones."""
    return {
        "torch": importlib.metadata.version("torch").split("+")[0],
        "transformers": importlib.metadata.version("transformers"),
        "peft": importlib.metadata.version("peft"),
    }


def _probe(python: Path) -> dict | None:
    code = (
        "import json, torch, transformers, peft, trl, datasets; print(json.dumps({'torch': "
        "torch.__version__.split('+')[0], 'transformers': transformers.__version__, "
        "'peft': peft.__version__, 'trl': trl.__version__}))"
    )
    try:
        proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _pip(python: Path, *packages: str) -> None:
    cmd = [str(python), "-m", "pip", "install", "-q", *packages]
    print(f"  $ {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise TrlUnavailable(f"`pip install {' '.join(packages)}` failed: {' | '.join(tail)}")


def ensure_trl_python(install: bool = True) -> Path:
    """The TRL venv's python, creating the venv (pinned versions, no torchvision) if needed."""
    python = TRL_VENV / "bin" / "python"
    want = {**_versions(), "trl": TRL_VERSION}
    have = _probe(python) if python.exists() else None
    if have == want:
        return python
    if not install:
        raise TrlUnavailable(f"{TRL_VENV} is missing or has other versions ({have}); want {want}")
    print(f"setting up {TRL_VENV} for TRL (found {have}; want {want})", flush=True)
    if not python.exists():
        base = shutil.which("python3") or sys.executable
        proc = subprocess.run([base, "-m", "venv", str(TRL_VENV)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise TrlUnavailable(f"cannot create {TRL_VENV}: {proc.stderr.strip()[-300:]}")
        _pip(python, "--upgrade", "pip")
    # torch's CPU build first (as the Makefile does), then TRL with the project's versions.
    _pip(python, f"torch=={want['torch']}")
    _pip(python, f"trl=={TRL_VERSION}", f"transformers=={want['transformers']}", f"peft=={want['peft']}")
    have = _probe(python)
    if have is None:
        raise TrlUnavailable(f"{python} cannot import trl/transformers/peft/datasets after installing")
    if have != want:
        print(f"  note: TRL venv has {have}, wanted {want}", flush=True)
    return python


def run_trl(model_dir: str, rows: list[dict], args: argparse.Namespace, reward: str = "exact", timeout: float = 3600) -> dict:
    """TRL's seconds per completion (and details) or {"error": reason}."""
    try:
        python = ensure_trl_python(install=not args.no_install)
    except TrlUnavailable as exc:
        return {"error": str(exc)}
    with tempfile.TemporaryDirectory(prefix="mrl-trl-bench-") as tmp:
        prompts, out = Path(tmp) / "prompts.json", Path(tmp) / "result.json"
        prompts.write_text(json.dumps({"rows": rows}))
        cmd = [
            str(python), str(TRL_SCRIPT), "--model", model_dir, "--prompts", str(prompts), "--out", str(out),
            "--steps", str(args.steps), "--tasks", str(args.tasks), "--group", str(args.group),
            "--micro-batch", str(micro_batch(args)), "--max-new-tokens", str(args.max_new_tokens),
            "--lr", "2e-4", "--rank", "16", "--alpha", "32", "--reward", reward,
        ]
        if args.mixed_precision == "bf16":
            cmd.append("--bf16")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            return {"error": f"TRL script timed out after {timeout:.0f} s"}
        for line in proc.stdout.splitlines():
            if line.startswith("trl "):
                print(f"  {line}", flush=True)
        result = json.loads(out.read_text()) if out.is_file() else {}
        if not result.get("ok"):
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            return {"error": result.get("error") or f"TRL script exited {proc.returncode}: {tail}"}
        return result


# ----- the benchmark ---------------------------------------------------------------------
def one_agent(kind: str, ours_model: str, folder: str | None, args, trl: bool, figures: dict, notes: dict) -> None:
    """Ours and TRL on the one-agent task with the `kind` reward; adds figures and notes."""
    prefix = f"train 1-agent, {kind} reward:"
    print(f"  -- one agent, {kind} reward", flush=True)
    one = measure_ours(
        train_config(ours_model, "addition", {}, args), args.steps,
        scenario=addition_scenario(args.max_new_tokens, kind), keep_prompts=trl,
    )
    figures[f"{prefix} ours s/completion (whole step)"] = round(one["per_completion"], 5)
    figures[f"{prefix} ours rollout s/completion"] = round(one["rollout_per_completion"], 5)
    figures[f"{prefix} ours update s/completion"] = round(one["update_per_completion"], 5)
    # Samples of all-equal-reward groups have zero advantage: our update skips them, TRL's
    # GRPOTrainer still runs their forward/backward. These figures show how much that matters.
    figures[f"{prefix} ours informative sample fraction"] = round(one["informative"], 3)
    name = f"{prefix} ours update s/informative completion"
    per_informative = one["update_per_informative"]
    figures[name] = round(per_informative, 5) if per_informative is not None else None
    if per_informative is None:
        notes[name] = "no informative sample: every group's rewards were equal, the update was skipped"
    figures[f"{prefix} ours mean completion tokens"] = round(one["mean_tokens"], 2)
    trl_name = f"{prefix} TRL GRPOTrainer s/completion (whole step)"
    ratio_name = f"{prefix} ours/TRL s/completion (x, target <= 0.8)"
    if not trl:
        figures[trl_name] = figures[ratio_name] = None
        notes[trl_name] = notes[ratio_name] = "skipped (--skip-trl)"
        return
    result = run_trl(folder, one["rows"], args, reward=kind)
    if "error" in result:
        print(f"  TRL could not run: {result['error']}", flush=True)
        figures[trl_name] = figures[ratio_name] = None
        notes[trl_name] = notes[ratio_name] = f"TRL did not run: {result['error']}"
        return
    figures[trl_name] = round(result["seconds_per_completion"], 5)
    tokens = result.get("mean_completion_tokens")
    figures[f"{prefix} TRL mean completion tokens"] = round(tokens, 2) if tokens is not None else None
    zero = result.get("frac_reward_zero_std")
    figures[f"{prefix} TRL equal-reward group fraction"] = round(zero, 3) if zero is not None else None
    figures[ratio_name] = round(one["per_completion"] / result["seconds_per_completion"], 3)
    notes[trl_name] = f"trl {result['trl']}, {result['steps']} steps, warm-up excluded: {result['warmup_excluded']}"
    if kind == "dense":  # where both trainers do the same work: peak memory side by side
        from benchmarks.memory import one_agent_peak

        ours_peak = one_agent_peak(ours_model, args.steps, args.tasks, args.group, args.max_new_tokens)
        figures["memory: 1-agent TRL workload, ours peak RSS (MB)"] = round(ours_peak, 1)
        figures["memory: 1-agent TRL workload, TRL peak RSS (MB)"] = round(result["peak_rss_mb"], 1)
        figures["memory: 1-agent TRL workload, ours/TRL peak RSS (x, target <= 1)"] = round(ours_peak / result["peak_rss_mb"], 3)


def main(
    model: str = EMBEDDED,
    steps: int = 3,
    team_steps: int = 2,
    tasks: int = 4,
    group: int = 8,
    max_new_tokens: int = 20,
    mixed_precision: str = "bf16",
    teams: bool = True,
    trl: bool = True,
    no_install: bool = False,
) -> dict:
    args = argparse.Namespace(
        steps=steps, tasks=tasks, group=group, max_new_tokens=max_new_tokens,
        mixed_precision=mixed_precision, no_install=no_install,
    )
    scratch = scratch_dir("mrl-train-cost-")
    figures: dict = {}
    notes: dict[str, str] = {}
    try:
        # One folder for both trainers, so TRL loads exactly the weights we train.
        folder = model_folder(model, scratch) if model == TINY or trl else None
        ours_model = folder if model == TINY else model
        print(
            f"train bench: model={model} tasks={tasks} group={group} max_new_tokens={max_new_tokens} "
            f"steps={steps} (first is warm-up) mixed_precision={mixed_precision} micro_batch={micro_batch(args)}",
            flush=True,
        )
        for kind in REWARDS:
            one_agent(kind, ours_model, folder, args, trl, figures, notes)
        if teams:
            for solvers in (2, 3):
                team = measure_ours(train_config(ours_model, "debate", {"solvers": solvers}, args), team_steps)
                figures[f"train {solvers}-agent debate: s/completion (whole step)"] = round(team["per_completion"], 5)
                figures[f"train {solvers}-agent debate: update s/completion"] = round(team["update_per_completion"], 5)
    finally:
        remove(scratch)
    if notes:
        figures["_notes"] = notes
    return emit(figures)


def cli(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Training cost per completion, ours vs TRL GRPOTrainer")
    parser.add_argument("--model", default=EMBEDDED, help=f"{EMBEDDED!r} (default), {TINY!r} or an HF folder")
    parser.add_argument("--steps", type=int, default=3, help="steps of the one-agent runs (first is warm-up)")
    parser.add_argument("--team-steps", type=int, default=2, help="steps of the 2- and 3-agent runs")
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default="bf16")
    parser.add_argument("--no-teams", action="store_true")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--no-install", action="store_true", help="don't create the TRL venv if missing")
    a = parser.parse_args(argv)
    return main(a.model, a.steps, a.team_steps, a.tasks, a.group, a.max_new_tokens, a.mixed_precision,
                teams=not a.no_teams, trl=not a.skip_trl, no_install=a.no_install)


if __name__ == "__main__":
    cli()
