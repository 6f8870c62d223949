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
in-process), all sent at once so the server batches them, over one pool of kept-alive
connections (httpx2: the maintained httpx, which huggingface_hub and the OpenAI client use).

Adapters are served under versioned names, `solver@<run nonce>.<version>`: the nonce is drawn
once per start by the main process and shared, so a name is never reused, not even by a
resumed run against a server that still holds the last run's adapters. The last
`keep_versions` versions of each adapter stay loaded (in-flight requests of a stale rollout
finish on their own version); older ones are unloaded and the main process deletes their
folders, so the run folder holds `keep_versions` updates' adapters, not one per step. A league
snapshot that leaves the pool is unloaded and forgotten (`unload`).

Faults: a request that fails for want of the server (refused, reset, cut off mid-answer, timed
out: httpx2's `TransportError`; a 5xx, or a 404 for an adapter name a restarted server no
longer knows) is retried `retries` times; before each retry the client waits up to `timeout`
seconds for the server to answer again and re-loads the adapter versions it lost. Then the call
fails with a `ServerError` naming the address. A refusal (another 4xx) is not retried; a server
without the LoRA load routes (started without runtime LoRA loading) is said at once. With
several processes, a failure of the main process to load adapters is handed to every rank,
so each stops with the same one-line error instead of waiting for the main one.
"""

from __future__ import annotations

import random
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2

from ..symbols import allowed_token_ids
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


def _error_text(response: httpx2.Response) -> tuple[str, bool]:
    """The error's one-line text, and whether vLLM itself answered (its `error` object), not
    the web framework (a route the server does not have: `{"detail": "Not Found"}`)."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}", False
    error = body.get("error", body) if isinstance(body, dict) else body
    message = error.get("message") if isinstance(error, dict) else None
    from_vllm = isinstance(body, dict) and (isinstance(body.get("error"), dict) or body.get("object") == "error")
    return f"HTTP {response.status_code}: {message or body}", from_vllm


def call(url: str, path: str, payload: dict[str, Any] | None = None, timeout: float = 30.0,
         client: httpx2.Client | None = None) -> Any:
    """GET (no payload) or POST JSON to `url + path` (through `client`'s kept-alive connections,
    or a connection of its own); the JSON (or text) answer. Raises `_Transient` for what a live
    server may not repeat, `ServerError` for a refusal."""
    send = client.request if client is not None else httpx2.request
    try:
        response = send("GET" if payload is None else "POST", url + path, json=payload, timeout=timeout)
        response.raise_for_status()
    except httpx2.HTTPStatusError as exc:
        code = exc.response.status_code
        message, from_vllm = _error_text(exc.response)
        if code == 404 and path in LORA_ROUTES and not from_vllm:  # no such route: retrying can't help
            raise ServerError(f"the vLLM server at {url} has no {path} ({message}): {NO_RUNTIME_LORA}") from exc
        if code >= 500 or (code == 404 and path not in LORA_ROUTES):  # 404: an adapter a restart lost
            raise _Transient(message) from exc
        raise ServerError(f"the vLLM server at {url} refused {path}: {message}") from exc
    except httpx2.TransportError as exc:  # refused, reset, timed out, cut off mid-answer
        raise _Transient(str(exc) or type(exc).__name__) from exc
    try:
        return response.json()
    except ValueError:
        return response.text


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
    """`ServerBackend`'s is_main / share / meet over torch.distributed's group of `processes`
    (nothing to do for one process)."""
    import torch.distributed as dist

    if processes < 2 or not (dist.is_available() and dist.is_initialized()):
        return {}

    def share(value: str) -> str:  # the main process's value, on every rank
        values: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(values, value)
        return values[0]

    return {"is_main": dist.get_rank() == 0, "share": share, "meet": share}


class ServerBackend:
    """`GenerationBackend` on a shared vLLM server at `url` serving `model_path`.

    `tokenizer`: the model's (the chat template is applied here). `keep_versions`: versions of
    each adapter kept loaded (rollout.max_staleness + 1). `is_main` / `share` / `meet`: the
    process group, one process by default: the main process loads adapters; `share` hands the
    main process's value to every rank (the run's nonce); `meet` is where every rank waits for
    the main one to load adapters, and hands them its failure ('' for none). `where`: what a
    final failure says about resuming (e.g. the last checkpoint)."""

    def __init__(self, url: str, model_path: str, tokenizer, *, timeout: float = 300.0, retries: int = 3,
                 keep_versions: int = 1, seed: int = 0, is_main: bool = True,
                 share: Callable[[str], str] = lambda value: value, meet: Callable[[str], str] = lambda failure: failure,
                 where: Callable[[], str] = lambda: "") -> None:
        self.url = url.rstrip("/")
        self.model_path = model_path
        self.tokenizer = tokenizer
        self.timeout = timeout
        self.retries = retries
        self.keep_versions = max(1, keep_versions)
        self.is_main = is_main
        self._meet = meet
        self._where = where
        self._rng = random.Random(seed)  # call seeds as the in-process backend draws them
        base = check_server(self.url, model_path, min(timeout, 10.0))
        self.base_name = str(base.get("id"))
        self.max_model_len = int(base.get("max_model_len") or 2048)
        self.nonce = share(secrets.token_hex(4))  # the main process's, on every rank
        # Idle connections are let go well before vLLM's own keep-alive ends (5 s), so none is
        # reused just as the server closes it.
        self._client = httpx2.Client(limits=httpx2.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS, keepalive_expiry=2.0))
        self._versions: dict[str, list[tuple[str, str]]] = {}  # adapter -> [(served name, folder)], oldest first
        self._next_version: dict[str, int] = {}

    # -- adapters ----------------------------------------------------------------

    @property
    def adapters(self) -> dict[str, str]:
        """Adapter -> the name the server serves its current version under."""
        return {name: versions[-1][0] for name, versions in sorted(self._versions.items())}

    def sync(self, model, adapters: Sequence[str], folder) -> None:
        """Main process: save `model`'s `adapters` under `folder` (which the server must be able
        to read) and load them under new names; every rank: use those names from now on. If
        the main process fails to load them, every rank raises its `ServerError`."""
        folder = Path(folder)
        added: dict[str, tuple[str, str]] = {}
        for name in adapters:  # every rank counts versions alike: the same names everywhere
            version = self._next_version.get(name, 0)
            self._next_version[name] = version + 1
            added[name] = (f"{name}@{self.nonce}.{version}", str((folder / name).resolve()))
        failure: ServerError | None = None
        if self.is_main:
            from ..adapters import save_adapters

            save_adapters(model, folder, adapters)
            try:
                self._with_retries("load adapters", lambda: [self._load(*added[name]) for name in adapters])
            except ServerError as exc:
                failure = exc
        # Every rank waits here: none asks for a name before the server has it, and none waits
        # on a main process that failed (each stops with the main process's one-line error).
        failed = self._meet(str(failure) if failure else "")
        if failure is not None:
            raise failure
        if failed:
            raise ServerError(failed)
        for name, entry in added.items():
            self._versions.setdefault(name, []).append(entry)
        dropped = [entry for versions in self._versions.values() for entry in versions[: -self.keep_versions]]
        for name in self._versions:
            self._versions[name] = self._versions[name][-self.keep_versions :]
        self._discard(dropped)

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
                call(self.url, "/v1/unload_lora_adapter", {"lora_name": served}, self.timeout, self._client)
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

    def adapter_folders(self) -> set[Path]:
        """The folders that hold the loaded versions (each adapter's parent: an update's)."""
        return {Path(path).resolve().parent for versions in self._versions.values() for _, path in versions}

    def follow(self, versions: dict[str, list[tuple[str, str]]]) -> None:
        """Generate with the newest of `versions` (another process's `served_versions`), never
        loading adapters itself except to restore what a restarted server lost."""
        self._versions = {name: [tuple(entry) for entry in entries] for name, entries in versions.items()}

    def _load(self, served: str, path: str) -> None:
        try:
            call(self.url, "/v1/load_lora_adapter", {"lora_name": served, "lora_path": path}, self.timeout, self._client)
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

    def _payload(self, request: GenerationRequest, prompt_ids: list[int], seed: int,
                 allowed: tuple[int, ...] | None) -> dict[str, Any]:
        model = self.base_name
        if request.adapter is not None:
            versions = self._versions.get(request.adapter)
            if not versions:
                loaded = ", ".join(sorted(self._versions)) or "none"
                raise ServerError(f"unknown adapter {request.adapter!r}; loaded adapters: {loaded}")
            model = versions[-1][0]
        settings = {k: v for k, v in sampling_settings(request, seed, allowed).items() if v is not None}
        return {"model": model, "prompt": prompt_ids, "return_token_ids": True, **settings}

    def _complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        answer = call(self.url, "/v1/completions", payload, self.timeout, self._client)
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
        allowed = allowed_token_ids([r.channel for r in requests], self.tokenizer)
        payloads = [self._payload(r, ids, request_seed(seed, i), allowed[i])
                    for i, (r, ids) in enumerate(zip(requests, prompt_ids, strict=True))]
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
        return [self._result(r, ids, c, a) for r, ids, c, a in zip(requests, prompt_ids, choices, allowed, strict=True)]

    def _result(self, request: GenerationRequest, prompt_ids: list[int], choice: dict[str, Any] | None,
                allowed: tuple[int, ...] | None) -> GenerationResult:
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
            allowed_token_ids=allowed,
        )

    def close(self) -> None:
        """Close this client's connections (the server outlives the run)."""
        self._client.close()
