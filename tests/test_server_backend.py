"""ServerBackend against a small fake of vLLM's OpenAI server in a thread: what each request
carries, how answers are read, and the faults (unreachable, another model, a dropped
connection, a restarted server, retries exhausted, a failure while the main process loads
adapters with several processes). The real server: test_server_slow.py."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from multiagent_rl.backends import GenerationRequest
from multiagent_rl.backends.engine_requests import request_seed
from multiagent_rl.backends.server import (
    ServerBackend,
    ServerError,
    ServerUnreachable,
    check_server,
)
from multiagent_rl.config import ConfigError, load_config
from multiagent_rl.serve import free_port

MODEL = "/models/base"


class FakeVLLM(ThreadingHTTPServer):
    """Answers /v1/models, /v1/completions and the LoRA load/unload routes as vLLM does."""

    daemon_threads = True

    def __init__(self, model: str = MODEL):
        super().__init__(("127.0.0.1", 0), Handler)
        self.model = model
        self.loras: dict[str, str] = {}
        self.completions: list[dict] = []
        self.events: list[tuple[str, str]] = []  # ("load" | "unload", name)
        self.drop = 0  # the next `drop` completions close the connection unanswered
        self.short = 0  # the next `short` completions send half their body, then close
        self.runtime_lora = True  # False: no LoRA load/unload routes (VLLM_ALLOW_RUNTIME_LORA_UPDATING unset)
        self.load_fails = False  # True: every adapter load answers 500 (a server failing)
        self.lora_posts = 0  # requests to the LoRA routes, answered or not
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeVLLM

    def log_message(self, *args) -> None:
        pass

    def _send(self, code: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, message: str) -> None:
        self._send(code, {"error": {"message": message, "code": code}})

    def do_GET(self) -> None:
        s = self.server
        data = [{"id": s.model, "root": s.model, "parent": None, "max_model_len": 64}]
        data += [{"id": name, "root": path, "parent": s.model} for name, path in s.loras.items()]
        self._send(200, {"object": "list", "data": data})

    def do_POST(self) -> None:
        s = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
            s.lora_posts += 1
            if not s.runtime_lora:  # the web framework's answer for a route the server lacks
                return self._send(404, {"detail": "Not Found"})
        if self.path == "/v1/load_lora_adapter":
            if s.load_fails:
                return self._error(500, "the engine is dead")
            if body["lora_name"] in s.loras:
                return self._error(400, f"The lora adapter '{body['lora_name']}' has already been loaded.")
            s.loras[body["lora_name"]] = body["lora_path"]
            s.events.append(("load", body["lora_name"]))
            return self._send(200, "Success")
        if self.path == "/v1/unload_lora_adapter":
            if body["lora_name"] not in s.loras:
                return self._error(404, f"The lora adapter '{body['lora_name']}' cannot be found.")
            s.loras.pop(body["lora_name"])
            s.events.append(("unload", body["lora_name"]))
            return self._send(200, "Success")
        with s.lock:
            dropped, short = s.drop > 0, s.short > 0
            s.drop -= dropped
            s.short -= short
        if dropped:
            self.close_connection = True
            self.connection.close()
            return
        if short:  # a cut mid-answer: the client reads fewer bytes than Content-Length says
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "400")
            self.end_headers()
            self.wfile.write(b'{"id": "c", "choi')
            self.wfile.flush()
            self.close_connection = True
            self.connection.close()
            return
        if body["model"] != s.model and body["model"] not in s.loras:
            return self._error(404, f"The model `{body['model']}` does not exist.")
        s.completions.append(body)
        n = min(body["max_tokens"], 3)
        choice = {"index": 0, "text": f"out{body['seed'] % 7}", "token_ids": list(range(10, 10 + n)),
                  "logprobs": {"token_logprobs": [-0.5] * n, "tokens": ["x"] * n},
                  "finish_reason": "length" if n == body["max_tokens"] else "stop"}
        self._send(200, {"id": "c", "model": body["model"], "choices": [choice]})


class FakeTokenizer:
    def apply_chat_template(self, messages, add_generation_prompt, tokenize, return_dict):
        return [len(m["content"]) for m in messages] + [1]

    def encode(self, text, add_special_tokens=False):
        return [1000 + sum(map(ord, text))]  # one token per word


@pytest.fixture
def fake():
    server = FakeVLLM()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def saved(monkeypatch):
    """save_adapters as a no-op that records its folders (no model here)."""
    folders = []
    monkeypatch.setattr("multiagent_rl.adapters.save_adapters", lambda model, folder, names: folders.append(folder))
    return folders


def backend(url: str, **options) -> ServerBackend:
    return ServerBackend(url, MODEL, FakeTokenizer(), timeout=2.0, retries=options.pop("retries", 2), **options)


CHAT = [{"role": "user", "content": "hello"}]


def test_requests_carry_prompt_ids_settings_and_their_own_seed(fake, saved, tmp_path):
    b = backend(fake.url)
    b.sync(None, ["solver"], tmp_path / "step-0")
    requests = [
        GenerationRequest(messages=CHAT, adapter="solver", max_new_tokens=2, temperature=0.7, top_p=0.9, stop=["\n"], tag="a"),
        GenerationRequest(messages=CHAT, adapter=None, max_new_tokens=8, temperature=0.0, top_p=0.5, tag="b"),
    ]
    results = b.generate(requests, seed=5)
    sent = sorted(fake.completions, key=lambda p: p["max_tokens"])
    assert [p["seed"] for p in sent] == [request_seed(5, 0), request_seed(5, 1)]
    assert sent[0]["model"] == b.adapters["solver"] and sent[1]["model"] == MODEL
    assert sent[0]["prompt"] == [5, 1] and sent[0]["stop"] == ["\n"] and "stop" not in sent[1]
    assert (sent[0]["temperature"], sent[0]["top_p"]) == (0.7, 0.9)
    assert (sent[1]["temperature"], sent[1]["top_p"]) == (0.0, 1.0)  # greedy
    for p in sent:
        assert p["logprobs"] == 0 and p["return_token_ids"] is True and p["include_stop_str_in_output"] is False
    assert [r.tag for r in results] == ["a", "b"]
    assert results[0].completion_ids == [10, 11] and results[0].logprobs == [-0.5, -0.5]
    assert results[0].finish_reason == "length" and results[1].finish_reason == "stop"
    assert results[0].prompt_ids == [5, 1] and results[0].text == f"out{request_seed(5, 0) % 7}"


def test_a_symbol_channel_is_sent_as_allowed_token_ids(fake, saved, tmp_path):
    from multiagent_rl import SymbolChannel

    b = backend(fake.url)
    code = SymbolChannel(("ka", "po"), length=2)
    results = b.generate([GenerationRequest(messages=CHAT, channel=code, temperature=1.0, tag="code"),
                          GenerationRequest(messages=CHAT, max_new_tokens=3, tag="free")], seed=1)
    sent = {p["max_tokens"]: p for p in fake.completions}
    ids = list(code.token_ids(FakeTokenizer()))
    assert sent[2]["allowed_token_ids"] == ids and "allowed_token_ids" not in sent[3]
    assert results[0].allowed_token_ids == tuple(ids) and results[1].allowed_token_ids is None


def test_unreachable_is_one_line_naming_the_address():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachable, match=url) as caught:
        backend(url)
    assert "\n" not in str(caught.value) and "multiagent-rl serve" in str(caught.value)


def test_a_server_of_another_model_is_refused(fake):
    with pytest.raises(ServerError, match=f"serves {MODEL}, not this run's model /models/other"):
        check_server(fake.url, "/models/other")


def test_a_dropped_connection_is_retried(fake):
    fake.drop = 1
    results = backend(fake.url).generate([GenerationRequest(messages=CHAT, temperature=0)] * 3, seed=1)
    assert len(results) == 3 and len(fake.completions) == 3  # each request answered once


def test_retries_exhausted_stop_with_the_address_and_where_to_resume(fake):
    fake.drop = 100
    b = backend(fake.url, retries=1, where=lambda: "its last checkpoint runs/x/checkpoints/step-2")
    with pytest.raises(ServerError) as caught:
        b.generate([GenerationRequest(messages=CHAT)], seed=1)
    message = str(caught.value)
    assert fake.url in message and "after 1 retries" in message and "runs/x/checkpoints/step-2" in message
    assert fake.drop == 98  # the first try and one retry


def test_a_connection_cut_mid_answer_is_retried(fake):
    fake.short = 2
    results = backend(fake.url).generate([GenerationRequest(messages=CHAT, temperature=0)] * 3, seed=1)
    assert len(results) == 3 and len(fake.completions) == 3 and fake.short == 0


def test_a_server_without_runtime_lora_loading_stops_at_once_naming_why(fake, saved, tmp_path):
    fake.runtime_lora = False
    b = backend(fake.url, retries=3)
    with pytest.raises(ServerError) as caught:
        b.sync(None, ["solver"], tmp_path / "step-0")
    message = str(caught.value)
    assert "\n" not in message and fake.url in message and "/v1/load_lora_adapter" in message
    assert "multiagent-rl serve" in message and "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in message
    assert fake.lora_posts == 1  # no retry, no wait for a server that is up


def test_live_adapter_folders_are_deleted_once_unloaded(fake, monkeypatch, tmp_path):
    def save(model, folder, names):  # what save_adapters leaves on disk, without a model
        for name in names:
            (folder / name).mkdir(parents=True, exist_ok=True)
            (folder / name / "adapter_config.json").write_text("{}")

    monkeypatch.setattr("multiagent_rl.adapters.save_adapters", save)
    live = tmp_path / "live_adapters"
    b = backend(fake.url, keep_versions=2)
    for step in range(6):
        b.sync(None, ["a", "b"], live / f"step-{step}")
        assert len(list(live.iterdir())) <= 2  # the versions the server may still serve
    assert sorted(p.name for p in live.iterdir()) == ["step-4", "step-5"]
    assert sorted(fake.loras.values()) == sorted(str((live / f"step-{s}" / n).resolve()) for s in (4, 5) for n in "ab")


def test_a_resumed_run_removes_the_adapter_folders_an_earlier_start_left(fake, saved, tmp_path):
    from multiagent_rl.team import Team

    live = tmp_path / "live_adapters"
    for name in ("step-7", "step-8", "frozen-step-0", "step-9"):
        (live / name / "a").mkdir(parents=True)
    b = backend(fake.url)
    b.sync(None, ["a"], live / "step-9")  # the resumed run's adapters
    team = Team(None, None, None, None, b, {"agent": "a"}, live_dir=live)
    assert team.remove_stale_live_adapters() == ["frozen-step-0", "step-7", "step-8"]
    assert [p.name for p in live.iterdir()] == ["step-9"]


def test_a_dropped_snapshot_is_unloaded_and_never_reloaded(fake, saved, tmp_path):
    from multiagent_rl.team import Team

    class Model:
        def delete_adapter(self, name):
            self.deleted = name

    live = tmp_path / "live_adapters"
    (live / "frozen-step-0" / "frozen-step-0").mkdir(parents=True)
    b = backend(fake.url)
    team = Team(None, None, Model(), None, b, {"agent": "shared"}, live_dir=live)
    team.sync(0)
    team.frozen = ["frozen-step-0"]
    team.serve_frozen(["frozen-step-0"])
    snapshot = b.adapters["frozen-step-0"]
    team.drop("frozen-step-0")
    assert team.model.deleted == "frozen-step-0" and team.frozen == []
    assert ("unload", snapshot) in fake.events and snapshot not in fake.loras
    assert "frozen-step-0" not in b.adapters and not (live / "frozen-step-0").exists()
    fake.loras.clear()  # a restart
    b.generate([GenerationRequest(messages=CHAT, adapter="shared")], seed=2)
    assert list(fake.loras) == [b.adapters["shared"]]  # the live adapter back, the snapshot not


def test_versions_are_new_names_and_old_ones_unloaded(fake, saved, tmp_path):
    b = backend(fake.url, keep_versions=2)
    names = []
    for step in range(4):
        b.sync(None, ["a", "b"], tmp_path / f"step-{step}")
        names.append(b.adapters["a"])
    assert len(set(names)) == 4 and len(saved) == 4
    assert sorted(n for n in fake.loras if n.startswith("a@")) == names[2:]  # the last two versions kept
    assert ("unload", names[0]) in fake.events and ("unload", names[1]) in fake.events
    assert fake.loras[names[-1]] == str((tmp_path / "step-3" / "a").resolve())
    again = backend(fake.url)  # a second start against the same server: other names
    again.sync(None, ["a"], tmp_path / "step-0")
    assert again.adapters["a"] not in names


def test_a_restarted_server_gets_the_adapters_back(fake, saved, tmp_path):
    b = backend(fake.url)
    b.sync(None, ["solver"], tmp_path / "step-0")
    fake.loras.clear()  # what a restart loses
    results = b.generate([GenerationRequest(messages=CHAT, adapter="solver")], seed=2)
    assert len(results) == 1 and b.adapters["solver"] in fake.loras
    assert fake.events.count(("load", b.adapters["solver"])) == 2


def test_a_restarted_server_gets_the_newest_version_back_not_the_older_kept_ones(fake, saved, tmp_path):
    b = backend(fake.url, keep_versions=2)
    for step in range(2):
        b.sync(None, ["solver"], tmp_path / f"step-{step}")
    fake.loras.clear()
    b.generate([GenerationRequest(messages=CHAT, adapter="solver")], seed=2)
    assert list(fake.loras) == [b.adapters["solver"]]  # an older one's folder may be gone; its user re-loads it


def test_other_ranks_use_the_names_main_loaded(fake, saved, tmp_path):
    main = backend(fake.url, share=lambda value: "n0nce")
    other = backend(fake.url, share=lambda value: "n0nce", is_main=False)
    for b in (main, other):
        b.sync(None, ["solver"], tmp_path / "step-1")
    assert other.adapters == main.adapters and len(saved) == 1  # saved once, by the main process
    assert fake.events == [("load", main.adapters["solver"])]


def test_a_failed_load_on_the_main_process_stops_the_other_ranks_with_its_error(fake, saved, tmp_path):
    fake.load_fails = True
    handed: queue.Queue = queue.Queue()  # the main process's outcome, as `meet` hands it over

    def main_meets(failure: str) -> str:
        handed.put(failure)
        return failure

    main = backend(fake.url, retries=1, share=lambda value: "n0nce", meet=main_meets)
    other = backend(fake.url, retries=1, share=lambda value: "n0nce", is_main=False,
                    meet=lambda failure: handed.get(timeout=30))
    raised: list[BaseException] = []

    def sync_other() -> None:
        try:
            other.sync(None, ["solver"], tmp_path / "step-0")
        except BaseException as exc:
            raised.append(exc)

    waiting = threading.Thread(target=sync_other)
    waiting.start()
    with pytest.raises(ServerError, match="failed to load adapters after 1 retries") as caught:
        main.sync(None, ["solver"], tmp_path / "step-0")
    waiting.join(timeout=30)
    assert [type(e) for e in raised] == [ServerError] and str(raised[0]) == str(caught.value)
    assert fake.url in str(caught.value) and "\n" not in str(caught.value)
    assert main.adapters == {} == other.adapters  # neither takes the names on


RANK_SCRIPT = """
import sys
from pathlib import Path

import torch.distributed as dist

import multiagent_rl.adapters
from multiagent_rl.backends.server import ServerBackend, ServerError, process_group

multiagent_rl.adapters.save_adapters = lambda model, folder, names: None  # no model here
url, out = sys.argv[1], Path(sys.argv[2])
dist.init_process_group("gloo")
client = ServerBackend(url, "/models/base", None, timeout=2.0, retries=1, **process_group(2))
try:
    client.sync(None, ["solver"], out / "step-0")
    outcome = "loaded"
except ServerError as exc:
    outcome = str(exc)
(out / f"rank-{dist.get_rank()}.txt").write_text(outcome)
dist.destroy_process_group()  # left open, gloo's threads now and then abort the exiting interpreter
"""


def test_two_processes_both_stop_with_the_error_when_the_main_one_fails_to_load(fake, tmp_path):
    fake.load_fails = True
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(RANK_SCRIPT))
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no", "--num_cpu_threads_per_process",
         "1", "--main_process_port", str(free_port()), str(script), fake.url, str(tmp_path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]  # each rank said its outcome and ended on its own
    outcomes = [(tmp_path / f"rank-{r}.txt").read_text() for r in (0, 1)]
    assert outcomes[0] == outcomes[1] and "failed to load adapters after 1 retries" in outcomes[0], outcomes
    assert time.monotonic() - began < 90


def cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "multiagent-rl"
    return subprocess.run([str(script), *argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_processes_against_no_server_say_so_once_before_any_rank_starts(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    done = cli("train", "debate", "--out", str(tmp_path / "run"), "--processes", "2",
               "--set", f"rollout.server={url}", "--set", "model=tiny", timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"multiagent-rl: error: no vLLM server answers at {url}")


def test_two_processes_stop_with_one_line_when_the_server_fails_as_adapters_load(tmp_path):
    server = FakeVLLM(model="tiny")
    server.load_fails = True
    try:
        began = time.monotonic()
        done = cli("train", "debate", "--out", str(tmp_path / "run"), "--processes", "2", "--set", "model=tiny",
                   "--set", f"rollout.server={server.url}", "--set", "rollout.server_retries=1",
                   "--set", "rollout.server_timeout_seconds=5", "--set", "progress=false", "--set", "log_with=[]")
        seconds = time.monotonic() - began
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # the launcher says the main process's error once
    assert done.stderr.startswith(f"multiagent-rl: error: the vLLM server at {server.url} failed to load adapters")
    assert seconds < 120


def test_unknown_adapter_and_too_long_prompt_fail_before_sending(fake):
    b = backend(fake.url)
    with pytest.raises(ServerError, match="unknown adapter 'nope'"):
        b.generate([GenerationRequest(messages=CHAT, adapter="nope")])
    with pytest.raises(Exception, match="max_model_len=64"):
        b.generate([GenerationRequest(messages=[{"role": "user", "content": "x"}] * 70)])
    assert fake.completions == []


def test_backend_vllm_with_a_server_is_one_or_the_other():
    with pytest.raises(ConfigError, match="one or the other"):
        load_config(None, ["backend=vllm", "rollout.server=http://127.0.0.1:8000"])


def test_train_against_no_server_is_one_line_exit_2(tmp_path, capsys):
    from multiagent_rl.cli import main

    url = f"http://127.0.0.1:{free_port()}"
    code = main(["train", "debate", "--out", str(tmp_path / "run"), "--set", f"rollout.server={url}",
                 "--set", "model=tiny"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and url in err


def test_serve_runs_vllms_server_with_runtime_lora_and_processed_logprobs():
    pytest.importorskip("vllm", reason="vLLM is not installed")
    from multiagent_rl.cli import build_parser
    from multiagent_rl.serve import server_command, server_env

    args = build_parser().parse_args(["serve", "--model", MODEL, "--port", "8123", "--max-lora-rank", "12",
                                      "--", "--dtype", "float32"])
    command = server_command(args.model, port=args.port, max_lora_rank=args.max_lora_rank, extra=args.vllm_args)
    line = " ".join(command)
    assert "-m vllm.entrypoints.openai.api_server --model /models/base" in line and "--port 8123" in line
    assert "--enable-lora" in line and "--max-lora-rank 16" in line  # rounded up to a rank vLLM serves
    assert "--logprobs-mode processed_logprobs" in line and "--generation-config vllm" in line
    assert "--enable-prefix-caching" in line
    assert command[-2:] == ["--dtype", "float32"]
    assert server_env()["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
