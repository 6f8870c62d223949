"""A client of a shared vLLM server (`multiagent-rl serve`): every training process sends its
requests there, and the main process loads each update's adapters into it.

>>> backend = ServerBackend("http://127.0.0.1:8000", model_dir, tokenizer)  # doctest: +SKIP
>>> backend.generate([GenerationRequest(messages=chat, adapter="solver", temperature=0)])  # doctest: +SKIP

Everything here is vLLM's own OpenAI-compatible server: `/v1/completions` with the prompt as
token ids (the chat template is applied here, as in the in-process backend, so the prompt ids
are exact), `return_token_ids` and the sampled token's log-prob (`logprobs: 0`; the server runs
with `--logprobs-mode processed_logprobs`); `/v1/load_lora_adapter` and
`/v1/unload_lora_adapter` (the server runs with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True). One
HTTP request per generation request, so each carries its own seed (`request_seed`, as
in-process), all sent at once so the server batches them.

Adapters are served under versioned names, `solver@<run nonce>.<version>`: the nonce is drawn
once per start by the main process and shared, so a name is never reused, not even by a
resumed run against a server that still holds the last run's adapters. The last
`keep_versions` versions of each adapter stay loaded (in-flight requests of a stale rollout
finish on their own version); older ones are unloaded and the main process deletes their
folders, so the run folder holds `keep_versions` updates' adapters, not one per step. A league
snapshot that leaves the pool is unloaded and forgotten (`unload`).

Faults: a request that fails for want of the server (refused, reset, cut off mid-answer, timed
out, a 5xx, or an adapter name a restarted server no longer knows) is retried `retries` times;
before each retry the client waits up to `timeout` seconds for the server to answer again and
re-loads the adapter versions it lost. Then the call fails with a `ServerError` naming the
address. A refusal (4xx) is not retried; a server without the LoRA load routes (started
without runtime LoRA loading) is said at once.
"""

from __future__ import annotations

import http.client
import json
import random
import secrets
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .base import GenerationRequest, GenerationResult
from .engine_requests import chat_prompt_ids, check_prompt_lengths, request_seed, sampling_settings

MAX_CONNECTIONS = 64  # requests in flight at once per process; the server batches them


class ServerError(ConnectionError):
    """The vLLM server can't be used (unreachable, another model, failed requests); the message
    names the address. A ConnectionError, so the command line shows it as one line."""


class ServerUnreachable(ServerError):
    """No answer from the server's address."""


class _Transient(Exception):
    """A failure a restarted or recovered server may not repeat."""


LORA_ROUTES = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")
NO_RUNTIME_LORA = (
    "it was started without runtime LoRA loading: start it with `multiagent-rl serve`, "
    "or set VLLM_ALLOW_RUNTIME_LORA_UPDATING=True in its environment"
)


def _error_text(exc: urllib.error.HTTPError) -> tuple[str, bool]:
    """The error's one-line text, and whether vLLM itself answered (its `error` object), not
    the web framework (a route the server does not have: `{"detail": "Not Found"}`)."""
    try:
        body = json.loads(exc.read().decode() or "{}")
    except (ValueError, OSError, http.client.HTTPException):
        return f"HTTP {exc.code}", False
    error = body.get("error", body) if isinstance(body, dict) else body
    message = error.get("message") if isinstance(error, dict) else None
    from_vllm = isinstance(body, dict) and (isinstance(body.get("error"), dict) or body.get("object") == "error")
    return f"HTTP {exc.code}: {message or body}", from_vllm


def call(url: str, path: str, payload: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    """GET (no payload) or POST JSON to `url + path`; the JSON (or text) answer. Raises
    `_Transient` for what a live server may not repeat, `ServerError` for a refusal."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as exc:
        message, from_vllm = _error_text(exc)
        if exc.code == 404 and path in LORA_ROUTES and not from_vllm:  # no such route: retrying can't help
            raise ServerError(f"the vLLM server at {url} has no {path} ({message}): {NO_RUNTIME_LORA}") from exc
        if exc.code >= 500 or (exc.code == 404 and path not in LORA_ROUTES):  # 404: an adapter a restart lost
            raise _Transient(message) from exc
        raise ServerError(f"the vLLM server at {url} refused {path}: {message}") from exc
    # Refused, reset, timed out (URLError is an OSError), or cut off mid-answer (IncompleteRead
    # and the other http.client errors are not OSErrors): a restarted server may answer.
    except (OSError, http.client.HTTPException) as exc:
        raise _Transient(str(getattr(exc, "reason", exc)) or type(exc).__name__) from exc
    try:
        return json.loads(text)
    except ValueError:
        return text


def served_models(url: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The server's `/v1/models` entries (the base model first, then loaded adapters)."""
    try:
        answer = call(url, "/v1/models", timeout=timeout)
    except _Transient as exc:
        raise ServerUnreachable(
            f"no vLLM server answers at {url} ({exc}); start one with `multiagent-rl serve --model MODEL`"
        ) from exc
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        raise ServerError(f"{url} answered /v1/models with something other than a model list: {str(answer)[:80]}")
    return answer["data"]


def check_server(url: str, model_path: str, timeout: float = 10.0) -> dict[str, Any]:
    """The base model entry of the server at `url`, if it serves `model_path`; else a one-line
    `ServerError` (before any weights load on this side)."""
    models = served_models(url, timeout)
    bases = [m for m in models if not m.get("parent")]
    roots = {str(m.get("root") or m.get("id")) for m in bases}
    if model_path not in roots:
        raise ServerError(
            f"the vLLM server at {url} serves {', '.join(sorted(roots)) or 'no model'}, not this run's model "
            f"{model_path}; start it with `multiagent-rl serve --model {model_path}`"
        )
    return next(m for m in bases if str(m.get("root") or m.get("id")) == model_path)


def process_group(processes: int) -> dict[str, Any]:
    """`ServerBackend`'s is_main / barrier / share over torch.distributed's group of `processes`
    (nothing to do for one process)."""
    import torch.distributed as dist

    if processes < 2 or not (dist.is_available() and dist.is_initialized()):
        return {}

    def share(value: str) -> str:
        values: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(values, value)
        return values[0]

    return {"is_main": dist.get_rank() == 0, "barrier": dist.barrier, "share": share}


class ServerBackend:
    """`GenerationBackend` on a shared vLLM server at `url` serving `model_path`.

    `tokenizer`: the model's (the chat template is applied here). `keep_versions`: versions of
    each adapter kept loaded (rollout.max_staleness + 1). `is_main` / `barrier` / `share`: the
    process group (main loads adapters, every rank waits for it, `share` hands the main
    process's value to every rank); one process by default. `where`: what a final failure
    says about resuming (e.g. the last checkpoint)."""

    def __init__(self, url: str, model_path: str, tokenizer, *, timeout: float = 300.0, retries: int = 3,
                 keep_versions: int = 1, seed: int = 0, is_main: bool = True,
                 barrier: Callable[[], None] = lambda: None, share: Callable[[str], str] = lambda value: value,
                 where: Callable[[], str] = lambda: "") -> None:
        self.url = url.rstrip("/")
        self.model_path = model_path
        self.tokenizer = tokenizer
        self.timeout = timeout
        self.retries = retries
        self.keep_versions = max(1, keep_versions)
        self.is_main = is_main
        self._barrier = barrier
        self._where = where
        self._rng = random.Random(seed)  # call seeds as the in-process backend draws them
        base = check_server(self.url, model_path, min(timeout, 10.0))
        self.base_name = str(base.get("id"))
        self.max_model_len = int(base.get("max_model_len") or 2048)
        self.nonce = share(secrets.token_hex(4))  # the main process's, on every rank
        self._versions: dict[str, list[tuple[str, str]]] = {}  # adapter -> [(served name, folder)], oldest first
        self._next_version: dict[str, int] = {}

    # -- adapters ----------------------------------------------------------------

    @property
    def adapters(self) -> dict[str, str]:
        """Adapter -> the name the server serves its current version under."""
        return {name: versions[-1][0] for name, versions in sorted(self._versions.items())}

    def sync(self, model, adapters: Sequence[str], folder) -> None:
        """Main process: save `model`'s `adapters` under `folder` (which the server must be able
        to read) and load them under new names; every rank: use those names from now on."""
        folder = Path(folder)
        added: dict[str, tuple[str, str]] = {}
        for name in adapters:  # every rank counts versions alike: the same names everywhere
            version = self._next_version.get(name, 0)
            self._next_version[name] = version + 1
            added[name] = (f"{name}@{self.nonce}.{version}", str((folder / name).resolve()))
        if self.is_main:
            from ..adapters import save_adapters

            save_adapters(model, folder, adapters)
            self._with_retries("load adapters", lambda: [self._load(*added[name]) for name in adapters])
        for name, entry in added.items():
            self._versions.setdefault(name, []).append(entry)
        dropped = [entry for versions in self._versions.values() for entry in versions[: -self.keep_versions]]
        for name in self._versions:
            self._versions[name] = self._versions[name][-self.keep_versions :]
        self._discard(dropped)
        self._barrier()  # no rank asks for a name before the server has it

    def unload(self, adapter: str) -> None:
        """Main process: unload every version of `adapter` (a league snapshot that left the
        pool) and delete its folders; every rank: forget it, so a restarted server never gets
        it back."""
        self._discard(self._versions.pop(adapter, []))

    def _discard(self, entries: Sequence[tuple[str, str]]) -> None:
        """Main process: unload these (served name, folder) versions and delete their folders
        (and a step's folder once it is empty), keeping any folder a loaded version still reads."""
        if not self.is_main or not entries:
            return
        for served, _ in entries:
            try:
                call(self.url, "/v1/unload_lora_adapter", {"lora_name": served}, self.timeout)
            except (_Transient, ServerError):  # freeing a slot early is an optimisation only
                pass
        kept = {path for versions in self._versions.values() for _, path in versions}
        for path in {path for _, path in entries} - kept:
            shutil.rmtree(path, ignore_errors=True)
            try:
                Path(path).parent.rmdir()  # step-N/ once none of its adapters is loaded
            except OSError:  # another adapter of that update is still loaded
                pass

    def served_versions(self) -> dict[str, list[tuple[str, str]]]:
        """Adapter -> its loaded versions, oldest first, as (served name, folder): what a
        follower (`follow`) needs to generate with the newest."""
        return {name: list(versions) for name, versions in self._versions.items()}

    def follow(self, versions: dict[str, list[tuple[str, str]]]) -> None:
        """Generate with the newest of `versions` (another process's `served_versions`), never
        loading adapters itself except to restore what a restarted server lost."""
        self._versions = {name: [tuple(entry) for entry in entries] for name, entries in versions.items()}

    def _load(self, served: str, path: str) -> None:
        try:
            call(self.url, "/v1/load_lora_adapter", {"lora_name": served, "lora_path": path}, self.timeout)
        except ServerError as exc:
            if "already been loaded" not in str(exc):  # another rank re-loaded it first
                raise

    def _reload_lost(self) -> None:
        """Wait up to `timeout` for the server to answer, then re-load the newest version of
        each adapter if it was lost (a restarted server knows none). The newest only: it is the
        one this process generates with, and an older one's folder may already be deleted (a
        follower playing with it re-loads it itself, as its own newest)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                known = {str(m.get("id")) for m in served_models(self.url, timeout=5.0)}
                break
            except ServerUnreachable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        for versions in self._versions.values():
            served, path = versions[-1]
            if served not in known:
                self._load(served, path)

    def _with_retries(self, what: str, attempt: Callable[[], Any]) -> Any:
        for tries in range(self.retries + 1):
            try:
                if tries:
                    self._reload_lost()
                return attempt()
            except (_Transient, ServerUnreachable) as exc:  # a refusal (ServerError) is not retried
                last = exc
        where = self._where()
        raise ServerError(
            f"the vLLM server at {self.url} failed to {what} after {self.retries} retries ({last}); "
            f"the run stopped{' at ' + where if where else ''}: restart the server and run the same command to resume"
        )

    # -- generation --------------------------------------------------------------

    def _payload(self, request: GenerationRequest, prompt_ids: list[int], seed: int) -> dict[str, Any]:
        model = self.base_name
        if request.adapter is not None:
            versions = self._versions.get(request.adapter)
            if not versions:
                loaded = ", ".join(sorted(self._versions)) or "none"
                raise ServerError(f"unknown adapter {request.adapter!r}; loaded adapters: {loaded}")
            model = versions[-1][0]
        settings = {k: v for k, v in sampling_settings(request, seed).items() if v is not None}
        return {"model": model, "prompt": prompt_ids, "return_token_ids": True, **settings}

    def _complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        answer = call(self.url, "/v1/completions", payload, self.timeout)
        try:
            return answer["choices"][0]
        except (KeyError, IndexError, TypeError) as exc:
            raise ServerError(f"{self.url} answered /v1/completions without a choice: {str(answer)[:80]}") from exc

    def generate(self, requests: Sequence[GenerationRequest], seed: int | None = None) -> list[GenerationResult]:
        """Results in request order; every request sent at once, each with its own seed. Only
        the requests that failed are sent again on a retry (each is seeded, so its result does
        not depend on what else is in flight)."""
        requests = list(requests)
        if not requests:
            return []
        if seed is None:
            seed = self._rng.getrandbits(63)
        prompt_ids = [chat_prompt_ids(self.tokenizer, r.messages) for r in requests]
        check_prompt_lengths(requests, prompt_ids, self.max_model_len)
        payloads = [self._payload(r, ids, request_seed(seed, i)) for i, (r, ids) in enumerate(zip(requests, prompt_ids, strict=True))]
        choices: list[dict[str, Any] | None] = [None] * len(requests)

        def attempt() -> None:
            todo = [i for i, c in enumerate(choices) if c is None]
            with ThreadPoolExecutor(max_workers=min(len(todo), MAX_CONNECTIONS)) as pool:
                futures = {i: pool.submit(self._complete, payloads[i]) for i in todo}
            failure: BaseException | None = None
            for i, future in futures.items():
                try:
                    choices[i] = future.result()
                except (_Transient, ServerError) as exc:
                    failure = failure if isinstance(failure, ServerError) else exc
            if failure is not None:
                raise failure

        self._with_retries(f"generate {len(requests)} completions", attempt)
        return [self._result(r, ids, c) for r, ids, c in zip(requests, prompt_ids, choices, strict=True)]

    def _result(self, request: GenerationRequest, prompt_ids: list[int], choice: dict[str, Any] | None) -> GenerationResult:
        assert choice is not None
        token_ids = [int(t) for t in choice.get("token_ids") or []]
        logprobs = [float(x) for x in ((choice.get("logprobs") or {}).get("token_logprobs") or [])]
        if len(logprobs) != len(token_ids):
            raise ServerError(
                f"the vLLM server at {self.url} returned {len(token_ids)} tokens but {len(logprobs)} log-probs"
            )
        return GenerationResult(
            text=choice.get("text") or "",
            prompt_ids=prompt_ids,
            completion_ids=token_ids,
            logprobs=logprobs,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            tag=request.tag,
        )

    def close(self) -> None:
        """Nothing to stop: the server outlives the run."""
