"""`multiagent-rl serve`: vLLM's own OpenAI-compatible server, set up for training runs that
share it (`--set rollout.server=http://HOST:PORT`).

    multiagent-rl serve --model smollm2-135m-instruct --port 8000 --max-loras 8 --max-lora-rank 16
    multiagent-rl serve --model M --port 8000 -- --tensor-parallel-size 2   # vLLM's own flags after --

What it sets on vLLM (`python -m vllm.entrypoints.openai.api_server`): LoRA with runtime
loading (VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, for the adapters each update saves), the
sampled tokens' log-probs after temperature and top-p (`--logprobs-mode processed_logprobs`,
as the in-process backend), vLLM's own sampling defaults rather than the model's
generation_config (every request carries all its settings, as in-process), and on CPU
chunked prefill off (every request is seeded; see backends/vllm.py). `LocalServer` starts
one from tests and benchmarks and waits, bounded, until it answers.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DEFAULT_MAX_MODEL_LEN = 2048  # as the in-process vLLM backend's
CPU_MEMORY_SHARE = 0.3  # on CPU, vLLM's --gpu-memory-utilization is a share of the machine's memory


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform
    except ImportError:
        from .backends.vllm import INSTALL_HINT

        raise SystemExit(f"multiagent-rl: error: serve needs vLLM, which is not installed; run: {INSTALL_HINT}") from None
    return current_platform.is_cpu()


def server_command(model: str, *, host: str = "127.0.0.1", port: int = 8000, max_loras: int = 4,
                   max_lora_rank: int = 16, max_model_len: int = DEFAULT_MAX_MODEL_LEN, seed: int = 0,
                   gpu_memory_utilization: float | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The command line of a vLLM server for `model` (an alias, HF folder or id).
    `gpu_memory_utilization`: None takes vLLM's (0.92 of the GPU) on a GPU, and on CPU 0.3 of
    the machine's memory (vLLM's 0.92 would leave training none)."""
    from .backends.vllm import _supported_rank
    from .models import TINY_ALIAS, ModelError, resolve_model_path

    if model == TINY_ALIAS:
        raise ModelError(f"the {TINY_ALIAS!r} model exists only in memory and vLLM can't serve it; give an HF folder or id")
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", resolve_model_path(model),
        "--host", host, "--port", str(port), "--enable-lora", "--max-loras", str(max_loras),
        "--max-lora-rank", str(_supported_rank(max_lora_rank)), "--max-model-len", str(max_model_len),
        "--logprobs-mode", "processed_logprobs", "--generation-config", "vllm", "--seed", str(seed),
    ]
    if "--no-enable-prefix-caching" not in extra:
        # Each turn's prompt begins with the last one's (and a role's system prompt is every
        # prompt's start): cached blocks are not encoded again. Said, not left to the default.
        command.append("--enable-prefix-caching")
    cpu = _on_cpu()
    if cpu and "--enable-chunked-prefill" not in extra:
        command.append("--no-enable-chunked-prefill")
    if gpu_memory_utilization is None and cpu:
        gpu_memory_utilization = CPU_MEMORY_SHARE
    if gpu_memory_utilization is not None:
        command += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
    return [*command, *extra]


def server_env() -> dict[str, str]:
    return {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}


def add_serve_parser(sub) -> None:
    serve = sub.add_parser("serve", help="Start a vLLM server that training runs share (--set rollout.server=URL).")
    serve.add_argument("--model", required=True, help="alias, HF id or folder: the runs' model")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--max-loras", type=int, default=4,
                       help="adapters in one batch: at least adapters x (rollout.max_staleness + 1) of every run")
    serve.add_argument("--max-lora-rank", type=int, default=16, help="the runs' lora.rank (or larger)")
    serve.add_argument("--max-model-len", type=int, default=DEFAULT_MAX_MODEL_LEN,
                       help="longest prompt + completion in tokens")
    serve.add_argument("--gpu-memory-utilization", type=float, default=None,
                       help=f"share of the GPU's memory (default vLLM's; on CPU: {CPU_MEMORY_SHARE} of the machine's)")
    serve.add_argument("vllm_args", nargs="*", metavar="-- VLLM_ARGS", help="vLLM's own options, after --")


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server in the foreground until it stops (Ctrl-C stops it)."""
    command = server_command(args.model, host=args.host, port=args.port, max_loras=args.max_loras,
                             max_lora_rank=args.max_lora_rank, max_model_len=args.max_model_len,
                             gpu_memory_utilization=args.gpu_memory_utilization, extra=args.vllm_args)
    print(f"serving {command[4]} at http://{args.host}:{args.port} (vLLM)", file=sys.stderr)
    return subprocess.call(command, env=server_env())


def free_port(host: str = "127.0.0.1") -> int:
    """A free local port (for a server, or for training ranks to meet on)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalServer:
    """A vLLM server in a child process, for tests and benchmarks; its output goes to `log`.

    >>> with LocalServer("smollm2-135m-instruct", log=Path("server.log")) as server:  # doctest: +SKIP
    ...     run(f"--set rollout.server={server.url}")
    """

    def __init__(self, model: str, *, log: Path, port: int | None = None, ready_timeout: float = 300.0,
                 **options) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.url = f"http://{self.host}:{self.port}"
        self.command = server_command(model, host=self.host, port=self.port, **options)
        self.log = Path(log)
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None

    def start(self) -> LocalServer:
        from .backends.server import ServerUnreachable, served_models

        with open(self.log, "ab") as out:
            # its own process group: stop() ends vLLM's engine processes with it
            self.process = subprocess.Popen(self.command, env=server_env(), stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with code {self.process.returncode}; see {self.log}")
            try:
                served_models(self.url, timeout=2.0)
                return self
            except ServerUnreachable:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"the vLLM server at {self.url} was not ready in {self.ready_timeout:.0f} s; see {self.log}") from None
                time.sleep(1.0)

    def stop(self, kill: bool = False) -> None:
        """Stop it (`kill`: at once, as a crash would), and wait until it is gone."""
        import signal

        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout=30)
        try:  # engine processes the server left behind
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
