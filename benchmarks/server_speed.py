"""The shared vLLM server (`multiagent-rl serve`, `rollout.server`) on this CPU, two figures:

(a) training: 2 processes x 1 thread generating through one vLLM server process, against the
    same 2 processes each generating in-process with HF; the same global batch (debate, 2
    solvers, 2 rounds, 4 tasks x 4 samples, random rewards; benchmarks/scaling.py's worker).
    Mean step seconds after the warm-up step, and their ratio. On this CPU vLLM is slower
    than HF per token (benchmarks/vllm_speed.py) and the server shares the 2 cores with
    training; the figure that matters is a GPU's.
(b) orchestration: our rollout through `ServerBackend` (HTTP, one request per completion,
    JSON both ways), each round's `generate` timed end to end, against vLLM's own batched
    `LLM.generate` in process on exactly the prompts, sampling settings, seeds and LoRA
    requests of each round (tokenising before the clock). Debate 2x2, 4 tasks x 6 samples,
    rank-16 adapters with random B. Target <= 20% overhead.

The server and the in-process engine run one after another, never side by side.

    python -m benchmarks.server_speed [--steps 3] [--tasks 4] [--group 6] [--max-new-tokens 16]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from benchmarks.common import EMBEDDED, TINY, emit, randomize_lora_b
from benchmarks.scaling import arm, summary
from benchmarks.vllm_speed import RecordingVLLM, raw_rounds, raw_vllm

SERVER = {"max_loras": 8, "max_lora_rank": 16, "ready_timeout": 600}


class TimedRecording(RecordingVLLM):
    """Records each round's requests and seed, and the seconds its `generate` took."""

    seconds = 0.0

    def generate(self, requests, seed=None):
        start = time.perf_counter()
        try:
            return super().generate(requests, seed)
        finally:
            self.seconds += time.perf_counter() - start


def training(model: str, steps: int, scratch: Path) -> dict:
    """(a): mean step seconds of 2 processes x 1 thread, HF in process and through a server."""
    from multiagent_rl.serve import LocalServer

    hf = summary(arm(model, steps, processes=2, threads=1))
    with LocalServer(model, log=scratch / "server-training.log", **SERVER) as server:
        served = summary(arm(model, steps, processes=2, threads=1, server=server.url))
    print(f"  2 processes x 1 thread: HF in process {hf['seconds']:.2f} s/step (rollout {hf['rollout']:.2f}), "
          f"through one vLLM server {served['seconds']:.2f} s/step (rollout {served['rollout']:.2f})", flush=True)
    return {
        "server: step seconds, 2 processes x 1 thread, HF in process": round(hf["seconds"], 3),
        "server: step seconds, 2 processes x 1 thread, one vLLM server": round(served["seconds"], 3),
        "server: vLLM server / HF in process, step time (x)": round(served["seconds"] / hf["seconds"], 3),
    }


def orchestration(model: str, tasks: int, group: int, max_new_tokens: int, scratch: Path) -> dict:
    """(b): the server path's generate calls against raw `LLM.generate` on the same rounds."""
    from multiagent_rl import load_scenario
    from multiagent_rl.adapters import LoraSettings, adapter_map, adapter_names, attach_adapters
    from multiagent_rl.backends.server import ServerBackend
    from multiagent_rl.backends.vllm import VLLMBackend
    from multiagent_rl.models import load_model, resolve_model_path
    from multiagent_rl.rollout import Sampling, rollout
    from multiagent_rl.serve import LocalServer

    scenario = load_scenario("debate", solvers=2, rounds=2)
    adapters = adapter_map(scenario)
    names = adapter_names(adapters)
    base, tokenizer = load_model(model)
    peft_model = attach_adapters(base, names, LoraSettings(rank=16))
    randomize_lora_b(peft_model)
    folder = scratch / "adapters"
    rng = random.Random(0)
    task_list = [scenario.sample_task(rng, "train") for _ in range(tasks)]
    sampling = Sampling(temperature=1.0, max_new_tokens=max_new_tokens)
    with LocalServer(model, log=scratch / "server-orchestration.log", **SERVER) as server:
        client = ServerBackend(server.url, resolve_model_path(model), tokenizer)
        client.sync(peft_model, names, folder)  # saved under folder/, served from there
        del peft_model, base
        recorder = TimedRecording(client)
        rollout(scenario, recorder, task_list[:1], group_size=1, adapters=adapters, sampling=sampling, seed=0)  # warm-up
        recorder.calls.clear()
        recorder.seconds = 0.0
        ours = rollout(scenario, recorder, task_list, group_size=group, adapters=adapters, sampling=sampling, seed=1)
    engine = VLLMBackend(resolve_model_path(model), adapter_dirs={n: str(folder / n) for n in names}, max_lora_rank=16,
                         seed=0)
    try:
        raw_vllm(engine, *recorder.calls[0])  # warm-up
        raw_seconds, raw_tokens = raw_rounds(engine, recorder.calls)
    finally:
        engine.close()
    print(f"  server generate calls {recorder.seconds:.1f} s ({ours.generated_tokens} tokens), raw vLLM generate "
          f"{raw_seconds:.1f} s ({raw_tokens} tokens)", flush=True)
    return {
        "server: generate tokens/s through the server": round(ours.generated_tokens / recorder.seconds, 2),
        "server: raw LLM.generate tokens/s": round(raw_tokens / raw_seconds, 2),
        "server: orchestration overhead vs raw generate (%, target <= 20)": round(
            100 * (recorder.seconds / raw_seconds - 1), 2),
    }


def main(model: str = EMBEDDED, steps: int = 3, tasks: int = 4, group: int = 6, max_new_tokens: int = 16,
         parts: tuple[str, ...] = ("training", "orchestration")) -> dict:
    if model == TINY:
        return {"server: skipped": None, "_notes": {"server: skipped": "the tiny model lives in memory; vLLM needs a folder"}}
    print(f"server bench: model={model} debate 2x2; training {steps} steps; orchestration {tasks} tasks x {group} "
          f"samples, {max_new_tokens} tokens", flush=True)
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="mrl-server-bench-") as tmp:
        if "training" in parts:
            figures.update(training(model, steps, Path(tmp)))
        if "orchestration" in parts:
            figures.update(orchestration(model, tasks, group, max_new_tokens, Path(tmp)))
    return emit(figures)


def cli(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Training through a shared vLLM server; its orchestration overhead")
    parser.add_argument("--model", default=EMBEDDED)
    parser.add_argument("--steps", type=int, default=3, help="training steps per arm; the first is a warm-up")
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--group", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--only", choices=["training", "orchestration"], default=None)
    a = parser.parse_args(argv)
    parts = (a.only,) if a.only else ("training", "orchestration")
    return main(a.model, a.steps, a.tasks, a.group, a.max_new_tokens, parts)


if __name__ == "__main__":
    cli()
