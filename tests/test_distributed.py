"""Data-parallel training over 2 gloo processes (`accelerate launch`) against 1 process on the
same samples (tests/duo_run.py makes generation independent of the sharding), resume
with the same and another number of processes, per-rank episode logs, one writer of metrics
and checkpoints; and the Ranks helpers on one process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multiagent_rl import read_episodes
from trainers.distributed import Ranks

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "duo_run.py"
# Gradients summed in another order, then Adam: 2 steps at lr 0.01 differ by ~6e-5 here,
# a sixth of one percent of one step; a sample trained twice or missed moves weights by ~1e-2.
TOLERANCE = 5e-4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(out: Path, steps: int, processes: int = 1, trainer: str = "grpo", *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if processes == 1:
        cmd = [sys.executable, str(SCRIPT)]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no",
               "--num_cpu_threads_per_process", "1", "--main_process_port", str(free_port()), str(SCRIPT)]
    proc = subprocess.run([*cmd, "--out", str(out), "--steps", str(steps), "--trainer", trainer, *extra], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def adapters_at(run: Path, step: int) -> dict[str, torch.Tensor]:
    folder = run / "checkpoints" / f"step-{step}" / "adapters"
    return {f"{a.name}/{k}": v for a in sorted(folder.iterdir()) for k, v in load_file(a / "adapter_model.safetensors").items()}


def optimizer_at(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step-{step}" / "optimizer.safetensors")


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= TOLERANCE, f"max abs difference {worst:.2e} > {TOLERANCE}"


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    train(root / "one", steps=3)
    train(root / "two", steps=2, processes=2)
    for name in ("two-resumed", "two-then-one"):
        shutil.copytree(root / "two", root / name)
    train(root / "two-resumed", steps=3, processes=2)
    train(root / "two-then-one", steps=3, processes=1)
    return root


def test_two_processes_take_the_steps_one_process_takes(runs):
    one, two = runs / "one", runs / "two"
    start = adapters_at(one, 1)
    assert any((v != 0).any() for k, v in start.items() if "lora_B" in k), "step 1 trained nothing"
    for step in (1, 2):
        assert_close(adapters_at(one, step), adapters_at(two, step))
        assert_close(optimizer_at(one, step), optimizer_at(two, step))
    # Every non-timing metric is the same, under the same keys (step 2 ends the 2-step run,
    # so only it evaluates there).
    for a, b in zip(metrics(one)[:3], metrics(two), strict=True):
        train_keys = {k for k in b if a["step"] != 2 or not k.startswith("eval/")}
        assert a.keys() == train_keys
        for key in train_keys - {k for k in a if k.startswith(("perf/", "runtime/"))}:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    assert metrics(two)[-1]["runtime/processes"] == 2 and metrics(one)[-1]["runtime/processes"] == 1


def test_resume_with_the_same_or_another_number_of_processes(runs):
    for name in ("two-resumed", "two-then-one"):
        run = runs / name
        assert [m["step"] for m in metrics(run)] == [0, 1, 2, 3], name
        assert_close(adapters_at(runs / "one", 3), adapters_at(run, 3))
        assert_close(optimizer_at(runs / "one", 3), optimizer_at(run, 3))


def test_each_rank_writes_its_own_episode_log_and_only_the_main_one_writes_the_rest(runs):
    two = runs / "two"
    logs = sorted(p.name for p in (two / "episodes").iterdir())
    assert logs == [f"{tag}-{step:06d}.rank{r}.msgpack" for tag, step in
                    [("eval-step", 0), ("eval-step", 2), ("step", 1), ("step", 2)] for r in (0, 1)]
    for step in (1, 2):
        parts = [read_episodes(two / "episodes" / f"step-{step:06d}.rank{r}.msgpack") for r in (0, 1)]
        assert all(not p.skipped for p in parts)
        # 4 tasks x 3 samples, two whole groups per rank, global group ids
        assert [len(p.episodes) for p in parts] == [6, 6]
        assert [sorted({e.group for e in p.episodes}) for p in parts] == [[0, 1], [2, 3]]
        one = read_episodes(runs / "one" / "episodes" / f"step-{step:06d}.msgpack").episodes
        both = parts[0].episodes + parts[1].episodes
        assert [[t.message.text for t in e.turns] for e in both] == [[t.message.text for t in e.turns] for e in one]
    assert sorted(p.name for p in two.iterdir()) == [".lock", "checkpoints", "config.yaml", "episodes", "metrics.jsonl"]
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step-1", "step-2"]
    assert [m["step"] for m in metrics(two)] == [0, 1, 2]  # one writer: no line twice


def critic_at(run: Path, step: int) -> dict[str, torch.Tensor]:
    folder = run / "checkpoints" / f"step-{step}" / "critic"
    adapter = next((folder / "adapter").iterdir()) / "adapter_model.safetensors"
    return {**{f"head/{k}": v for k, v in load_file(folder / "head.safetensors").items()},
            **{f"adapter/{k}": v for k, v in load_file(adapter).items()},
            **{f"optimizer/{k}": v for k, v in load_file(folder / "optimizer.safetensors").items()}}


def test_two_processes_take_the_critic_steps_one_process_takes(tmp_path):
    train(tmp_path / "one", steps=2, trainer="critic")
    train(tmp_path / "two", steps=2, processes=2, trainer="critic")
    for step in (1, 2):
        assert_close(adapters_at(tmp_path / "one", step), adapters_at(tmp_path / "two", step))
        assert_close(critic_at(tmp_path / "one", step), critic_at(tmp_path / "two", step))
    a, b = metrics(tmp_path / "one")[1], metrics(tmp_path / "two")[1]
    assert "value/explained_variance" in a and a.keys() == b.keys()
    for key in [k for k in a if k.startswith(("value/", "advantage/", "update/", "loss/"))]:
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key


def test_each_rank_plays_ahead_in_its_own_rollout_worker(tmp_path):
    train(tmp_path, 3, 2, "grpo", "--hf", "--set", "rollout.max_staleness=1")
    assert [m["rollout/staleness"] for m in metrics(tmp_path) if m["step"] > 0] == [0, 1, 1]
    for rank in (0, 1):
        versions = [{ep.policy_version for ep in read_episodes(tmp_path / "episodes" / f"step-{s:06d}.rank{rank}.msgpack").episodes}
                    for s in (1, 2, 3)]
        assert versions == [{0}, {0}, {1}]
    first, last = adapters_at(tmp_path, 1), adapters_at(tmp_path, 3)
    assert any(not torch.equal(first[k], last[k]) for k in first)


def test_ranks_on_one_process_are_the_identity():
    ranks = Ranks()
    assert ranks.is_main and not ranks.distributed
    assert ranks.shard([1, 2, 3]) == [1, 2, 3] and ranks.shard_start(3) == 0
    assert ranks.sum([1, 2.5]) == [1.0, 2.5] and ranks.max([3]) == [3.0] and ranks.gather(["a"]) == ["a"]


def test_work_done_once_runs_on_the_main_process_and_reaches_every_rank(monkeypatch):
    calls = []
    assert Ranks().from_main(lambda: calls.append("main") or 0.25) == 0.25 and calls == ["main"]
    # Rank 1 of 2: gather hands it every rank's items in rank order, the main process's first.
    monkeypatch.setattr(Ranks, "gather", lambda self, items: [0.25, *items])
    assert Ranks(index=1, count=2).from_main(lambda: calls.append("other")) == 0.25 and calls == ["main"]


def test_shards_cover_every_item_once_in_order():
    items = list(range(7))
    for count in (1, 2, 3, 7, 9):
        shards = [Ranks(index=i, count=count).shard(items) for i in range(count)]
        assert [x for s in shards for x in s] == items
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        assert [Ranks(index=i, count=count).shard_start(7) for i in range(count)] == [
            sum(len(s) for s in shards[:i]) for i in range(count)
        ]
