"""What happened, as data: tasks, messages, turns, episodes, and the episode log.

The episode log is append-only msgpack in framed records, so a crash at any
moment leaves every completed episode readable:

    frame = MAGIC (4 bytes) | length (uint32 BE) | crc32 (uint32 BE) | msgpack payload

A reader yields every frame whose checksum holds; after a truncated or
corrupted frame it scans forward to the next MAGIC and reports what it skipped.
No pickle anywhere: payloads are plain msgpack maps validated by pydantic.

>>> log = EpisodeLog("run/episodes/step-000001.msgpack")   # doctest: +SKIP
>>> log.append(episode)                                     # doctest: +SKIP
>>> result = read_episodes("run/episodes/step-000001.msgpack")  # doctest: +SKIP
>>> result.episodes, result.skipped                         # doctest: +SKIP
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgpack
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, model_validator

MAGIC = b"MRL1"
_HEADER = struct.Struct(">4sII")  # magic, payload length, crc32
MAX_FRAME_BYTES = 256 * 1024 * 1024  # a length beyond this is corruption, not data


class Task(BaseModel):
    """One problem for a team: the shared prompt, the reference answer, and
    optional private views (agent name -> text only that agent sees)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="Stable identity of the task; decides its split.")
    prompt: str
    answer: str | None = None
    private: dict[str, str] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)


class Message(BaseModel):
    """What one agent said in one round, and who it was routed to."""

    model_config = ConfigDict(extra="forbid")

    sender: str
    receivers: list[str] = Field(default_factory=list)
    round: int
    text: str
    answer: str | None = Field(default=None, description="The answer parsed from text.")
    visibility: dict[str, str] = Field(
        default_factory=dict, description="receiver -> 'full' | 'answer' (missing means full)."
    )


class RewardEntry(BaseModel):
    """One line of an episode's reward ledger: `value` for `agent` under the term `term`.
    Each reward is written once, where it arises: on the turn whose action earned it
    (`Turn.rewards`) or at the end (`Episode.final`)."""

    model_config = ConfigDict(extra="forbid")

    agent: str
    value: float
    term: str = "total"


class Turn(BaseModel):
    """One agent's action in one round: its message plus generation facts."""

    model_config = ConfigDict(extra="forbid")

    agent: str
    round: int
    adapter: str | None = None
    message: Message
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    observation: str | None = Field(
        default=None, description="What the scenario showed the agent this turn (its `observe` hook), as given."
    )
    rewards: list[RewardEntry] = Field(
        default_factory=list, description="Rewards that arose at this turn (its `act` hook), to any agent: the ledger's per-turn lines."
    )
    trainable: bool = Field(default=True, description="False: the turn yields no training sample (scripted, invalid, ignored).")
    scripted: bool = Field(default=False, description="Played by a Python policy, not a model.")
    valid: bool = Field(default=True, description="False: the scenario rejected the move.")

    @model_validator(mode="before")
    @classmethod
    def _reward_as_ledger(cls, data: Any) -> Any:
        # Logs written before the ledger hold the acting agent's per-turn reward as `reward`.
        if isinstance(data, dict) and "reward" in data:
            data = dict(data)
            value = float(data.pop("reward") or 0.0)
            if value:
                data["rewards"] = [*data.get("rewards", []), {"agent": data.get("agent"), "value": value, "term": "turn"}]
        return data

    @property
    def reward(self) -> float:
        """The per-turn reward the acting agent earned with this turn."""
        return sum(e.value for e in self.rewards if e.agent == self.agent)


class Episode(BaseModel):
    """A whole episode: task, every turn in order, rewards per agent."""

    model_config = ConfigDict(extra="forbid")

    episode_id: str
    scenario: str
    task: Task
    turns: list[Turn] = Field(default_factory=list)
    final: list[RewardEntry] = Field(
        default_factory=list, description="The scenario's reward at the end (its `reward`): the ledger's final lines."
    )
    teams: dict[str, str] = Field(default_factory=dict, description="agent -> team")
    team_answer: str | None = None
    split: Literal["train", "eval", "play"] = "train"
    step: int | None = None
    group: int | None = Field(default=None, description="Index of the task's sample group.")
    branch: list[int] = Field(
        default_factory=list, description="Its path in the task's tree: sample index, then its alternative at each fork."
    )
    seed: int | None = None
    policy_version: int | None = Field(
        default=None, description="The update count of the adapters that played it (training episodes only)."
    )
    meta: dict[str, Any] = Field(default_factory=dict)
    reward_terms: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="term -> agent -> value (unweighted); the reward is their weighted sum."
    )
    events: list[dict[str, Any]] = Field(default_factory=list, description="What the scenario's engine reported, in order.")
    truncated: bool = Field(default=False, description="Stopped at max_turns before the scenario ended it.")
    winner: str | None = Field(default=None, description="The winning team, 'draw', or None where the scenario names none.")
    scripted: list[str] = Field(default_factory=list, description="Agents played by Python policies, not models.")
    failure: str | None = Field(
        default=None, description="Set when user code (the reward) failed on this episode: what, where, which task."
    )

    @model_validator(mode="before")
    @classmethod
    def _rewards_as_ledger(cls, data: Any) -> Any:
        # `rewards={agent: value}` (and logs written before the ledger): the final lines.
        if isinstance(data, dict) and "rewards" in data:
            data = dict(data)
            given = data.pop("rewards") or {}
            data["final"] = [*data.get("final", []), *({"agent": a, "value": v, "term": "total"} for a, v in given.items())]
        return data

    @property
    def messages(self) -> list[Message]:
        return [turn.message for turn in self.turns]

    def ledger(self) -> Iterator[tuple[int | None, RewardEntry]]:
        """Every reward of the episode once, in order: (turn index, entry) for per-turn
        rewards, then (None, entry) for the final ones."""
        for i, turn in enumerate(self.turns):
            for entry in turn.rewards:
                yield i, entry
        for entry in self.final:
            yield None, entry

    def returns(self, own_turns: bool = True) -> dict[str, float]:
        """Each agent's whole reward: the sum of its ledger lines (final and per-turn). With
        `own_turns=False`, the rewards it earned on its own turns are left out (`rewards`).
        This is the one place a return is computed; GRPO, the critic, metrics and analysis
        all read it (directly or through `rewards` / `team_reward`)."""
        out: dict[str, float] = {}
        for at, entry in self.ledger():
            if at is None:
                out[entry.agent] = out.get(entry.agent, 0.0) + entry.value
        for at, entry in self.ledger():
            if at is not None and (own_turns or entry.agent != self.turns[at].agent):
                out[entry.agent] = out.get(entry.agent, 0.0) + entry.value
        return out

    def reweighted(self, weights: Mapping[str, float]) -> Episode:
        """A copy whose ledger lines of the terms in `weights` are scaled by them (a shaping
        term annealed away); the record itself is left as it was played."""
        if not weights:
            return self
        copy = self.model_copy(deep=True)
        for entry in [*(e for t in copy.turns for e in t.rewards), *copy.final]:
            entry.value *= weights.get(entry.term, 1.0)
        return copy

    @property
    def rewards(self) -> dict[str, float]:
        """Each agent's reward apart from what it earned on its own turns (`Turn.reward`): the
        final reward plus per-turn rewards given to it while others acted."""
        return self.returns(own_turns=False)

    def model_teams(self) -> set[str]:
        """The teams of the agents a model plays (scripted agents left out)."""
        return {team for agent, team in self.teams.items() if agent not in self.scripted}

    def team_reward(self) -> float:
        """Mean whole reward over the model-played agents (the team's score for cooperative
        scenarios; a scripted opponent's reward does not count)."""
        values = [v for a, v in self.returns().items() if a not in self.scripted]
        return sum(values) / len(values) if values else 0.0


def encode_frame(record: dict[str, Any]) -> bytes:
    # Python-mode dump keeps inf/nan floats; pydantic's encoder covers anything else.
    payload = msgpack.packb(record, use_bin_type=True, default=pydantic_core.to_jsonable_python)
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


class EpisodeLog:
    """Append-only writer. Each append is one whole frame, flushed and fsynced,
    so a crash loses at most the episode being written."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync

    def append(self, episode: Episode) -> None:
        self.extend([episode])

    def extend(self, episodes: list[Episode]) -> None:
        data = b"".join(encode_frame(ep.model_dump()) for ep in episodes)
        with open(self.path, "ab") as handle:
            handle.write(data)
            handle.flush()
            if self.fsync:
                os.fsync(handle.fileno())


@dataclass
class Skipped:
    """A stretch of a log that did not hold a valid record."""

    offset: int
    length: int
    reason: str


@dataclass
class ReadResult:
    episodes: list[Episode] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.skipped

    def describe(self) -> str:
        if not self.skipped:
            return f"{len(self.episodes)} episodes, nothing skipped"
        parts = ", ".join(f"{s.length} bytes at {s.offset} ({s.reason})" for s in self.skipped)
        return f"{len(self.episodes)} episodes; skipped {parts}"


def iter_frames(data: bytes) -> Iterator[tuple[int, dict[str, Any] | None, Skipped | None]]:
    """Yield (offset, record, None) for good frames and (offset, None, Skipped) for bad stretches."""
    pos, end = 0, len(data)
    while pos < end:
        reason = _frame_problem(data, pos)
        if reason is None:
            _, length, _ = _HEADER.unpack_from(data, pos)
            start = pos + _HEADER.size
            try:
                record = msgpack.unpackb(data[start : start + length], raw=False)
            except Exception as exc:  # checksum held but payload is not msgpack
                reason = f"undecodable payload: {exc}"
            else:
                yield pos, record, None
                pos = start + length
                continue
        # Resynchronise on the next magic so one bad frame costs only itself.
        nxt = data.find(MAGIC, pos + 1)
        stop = end if nxt < 0 else nxt
        yield pos, None, Skipped(pos, stop - pos, reason)
        pos = stop


def _frame_problem(data: bytes, pos: int) -> str | None:
    if len(data) - pos < _HEADER.size:
        return "truncated header"
    magic, length, crc = _HEADER.unpack_from(data, pos)
    if magic != MAGIC:
        return "no frame marker"
    if length > MAX_FRAME_BYTES:
        return f"implausible length {length}"
    start = pos + _HEADER.size
    if start + length > len(data):
        return f"truncated frame (needs {length} bytes, has {len(data) - start})"
    if zlib.crc32(data[start : start + length]) != crc:
        return "checksum mismatch"
    return None


def read_episodes(path: str | os.PathLike[str]) -> ReadResult:
    """Every complete, valid episode in a log, plus what was skipped and why."""
    result = ReadResult()
    data = Path(path).read_bytes()
    for offset, record, skipped in iter_frames(data):
        if skipped is not None:
            result.skipped.append(skipped)
            continue
        try:
            result.episodes.append(Episode.model_validate(record))
        except Exception as exc:
            size = _HEADER.size + _HEADER.unpack_from(data, offset)[1]
            result.skipped.append(Skipped(offset, size, f"not an episode: {exc.__class__.__name__}"))
    return result


def read_run_episodes(run_dir: str | os.PathLike[str]) -> ReadResult:
    """All episode logs of a run folder (`episodes/*.msgpack`), in file-name order."""
    result = ReadResult()
    for path in sorted(Path(run_dir, "episodes").glob("*.msgpack")):
        part = read_episodes(path)
        result.episodes.extend(part.episodes)
        result.skipped.extend(part.skipped)
    return result
