"""Causal influence by ablation: would the receiver have answered differently without
(or with another) one of the messages it received?

For a sample of episodes and each receiver's last turn (round R), the episode is replayed in
the scenario's env up to round R with the recorded actions; then for each message the
receiver got before R, that message is removed from the receiver's inbox (``mode="remove"``)
or its text swapped for the same sender's message of the same round in another episode
(``mode="replace"``), the receiver's prompt is rebuilt with ``env.chat``, and the backend
regenerates its turn greedily (temperature 0, the episode's adapter). The unablated prompt is
regenerated too, so every change is measured against the same backend, not the logged model.
The new answer replaces the receiver's final message in a copy of the episode, and the
scenario recomputes the team answer and rewards.

>>> table = ablation_influence(episodes, scenario, backend, sample=20)  # doctest: +SKIP
>>> influence_graph(summarise_ablation(table), weight="answer_change_rate")  # doctest: +SKIP
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from ..backends.base import GenerationBackend, GenerationRequest
from ..records import Episode, Turn
from ..scenario import Scenario
from .tables import Table, mean
from .textstats import answer_key

MODES = ("remove", "replace")
COLUMNS = [
    "episode_id", "step", "sender", "receiver", "message_round", "receiver_round", "mode",
    "recorded_answer", "baseline_answer", "ablated_answer", "answer_changed",
    "baseline_team_reward", "ablated_team_reward", "team_reward_change",
    "baseline_receiver_reward", "ablated_receiver_reward",
]


@dataclass
class _Case:
    episode: Episode
    final: Turn  # the receiver's last turn, which is regenerated
    chat: list[dict[str, str]]
    ablated: Turn | None = None  # None: the unablated baseline
    replacement: str | None = None


def _safe_parse(scenario: Scenario, text: str) -> str | None:
    try:  # as the env does: a parser must not crash the analysis on odd text
        answer = scenario.parse(text)
    except Exception:
        return None
    return None if answer is None else str(answer)[:500]


def _donors(episodes: Sequence[Episode]) -> dict[tuple[str, int], list[tuple[str, str]]]:
    """(sender, round) -> [(episode_id, text), ...] for replacement messages."""
    donors: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for e in episodes:
        for t in e.turns:
            donors.setdefault((t.agent, t.round), []).append((e.episode_id, t.message.text))
    return donors


def _cases(episode: Episode, scenario: Scenario, mode: str, donors: dict, rng: random.Random) -> list[_Case]:
    """Replay `episode` in the env and build the baseline and ablated prompts of every receiver."""
    final: dict[str, Turn] = {}
    for t in episode.turns:
        if t.agent not in final or t.round >= final[t.agent].round:
            final[t.agent] = t
    env = scenario.make_env(task=episode.task)
    env.reset()
    cases = []
    for receiver, last in sorted(final.items(), key=lambda item: item[1].round):
        while env.round < last.round:  # replay the recorded actions up to the receiver's last round
            acted = {t.agent: t.message.text for t in episode.turns if t.round == env.round}
            env.step(acted)
        incoming = [t for t in episode.turns if t.round < last.round and receiver in t.message.receivers]
        recorded, ablations = env.turns, []
        for ablated in incoming:
            replacement = None
            if mode == "replace":
                pool = [text for eid, text in donors.get((ablated.agent, ablated.round), [])
                        if eid != episode.episode_id and text != ablated.message.text]
                if not pool:
                    continue  # nothing to swap in: this message cannot be ablated this way
                replacement = rng.choice(pool)
            env.turns = [_ablate(t, ablated, receiver, replacement, scenario) for t in recorded]
            ablations.append(_Case(episode, last, env.chat(receiver), ablated, replacement))
            env.turns = recorded
        if ablations:  # the baseline goes first: the ablations are measured against it
            cases += [_Case(episode, last, env.chat(receiver)), *ablations]
    return cases


def _ablate(turn: Turn, ablated: Turn, receiver: str, replacement: str | None, scenario: Scenario) -> Turn:
    if (turn.agent, turn.round) != (ablated.agent, ablated.round):
        return turn
    copy = turn.model_copy(deep=True)
    if replacement is None:
        copy.message.receivers = [r for r in copy.message.receivers if r != receiver]
        copy.message.visibility.pop(receiver, None)
    else:
        copy.message.text = replacement
        copy.message.answer = _safe_parse(scenario, replacement)
    return copy


def _outcome(case: _Case, text: str, scenario: Scenario) -> tuple[str | None, float, float]:
    """(answer, team reward of the receiver's team, receiver reward) with `text` as its last turn."""
    answer = _safe_parse(scenario, text)
    episode = case.episode.model_copy(deep=True)
    for t in episode.turns:
        if t.agent == case.final.agent and t.round == case.final.round:
            t.message.text, t.message.answer = text, answer
    episode.team_answer = scenario.team_answer(episode)
    rewards = scenario.rewards(episode.task, episode)
    team = episode.teams.get(case.final.agent) or scenario.teams.get(case.final.agent)
    members = [a for a in rewards if (episode.teams.get(a) or scenario.teams.get(a)) == team] or list(rewards)
    return answer, sum(rewards[a] for a in members) / len(members), rewards.get(case.final.agent, 0.0)


def ablation_influence(
    episodes: Sequence[Episode],
    scenario: Scenario,
    backend: GenerationBackend,
    *,
    sample: int = 20,
    mode: str = "remove",
    seed: int = 0,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> Table:
    """One row per (sampled episode, received message): the receiver's regenerated answer with
    and without that message, ``answer_changed``, and the change in its team's reward
    (``team_reward_change`` = ablated - baseline). See the module docstring for the method."""
    if mode not in MODES:
        raise ValueError(f"ablation mode {mode!r}; expected one of {', '.join(MODES)}")
    rng = random.Random(seed)
    chosen = list(episodes)
    if len(chosen) > sample:
        chosen = [chosen[i] for i in sorted(rng.sample(range(len(chosen)), sample))]
    donors = _donors(episodes) if mode == "replace" else {}
    cases = [c for e in chosen for c in _cases(e, scenario, mode, donors, rng)]
    requests = []
    for case in cases:
        role = scenario.role(case.final.agent)
        requests.append(GenerationRequest(
            messages=case.chat,
            adapter=case.final.adapter or scenario.adapter_for(case.final.agent),
            temperature=0.0,
            max_new_tokens=max_new_tokens or role.max_new_tokens or scenario.max_new_tokens,
            channel=role.channel,  # a symbol speaker regenerates in its symbols
        ))
    texts: list[str] = []
    batches = range(0, len(requests), batch_size)
    for start in tqdm(batches, desc="ablation", unit="batch", disable=not progress):
        texts.extend(r.text for r in backend.generate(requests[start : start + batch_size]))

    rows, baseline = [], None
    for case, text in zip(cases, texts, strict=True):
        answer, team_reward, own_reward = _outcome(case, text, scenario)
        if case.ablated is None:
            baseline = (answer, team_reward, own_reward)
            continue
        rows.append({
            "episode_id": case.episode.episode_id,
            "step": case.episode.step,
            "sender": case.ablated.agent,
            "receiver": case.final.agent,
            "message_round": case.ablated.round,
            "receiver_round": case.final.round,
            "mode": mode,
            "recorded_answer": case.final.message.answer,
            "baseline_answer": baseline[0],
            "ablated_answer": answer,
            "answer_changed": answer_key(answer) != answer_key(baseline[0]),
            "baseline_team_reward": baseline[1],
            "ablated_team_reward": team_reward,
            "team_reward_change": team_reward - baseline[1],
            "baseline_receiver_reward": baseline[2],
            "ablated_receiver_reward": own_reward,
        })
    return Table(rows, COLUMNS)


def summarise_ablation(table: Sequence[dict]) -> Table:
    """Per edge sender->receiver: ``samples``, ``answer_change_rate`` (share of ablations that
    changed the receiver's answer), ``mean_team_reward_change`` and its absolute value mean."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for row in table:
        grouped.setdefault((row["sender"], row["receiver"]), []).append(row)
    rows = [
        {
            "sender": s,
            "receiver": r,
            "samples": len(group),
            "answer_change_rate": mean(float(g["answer_changed"]) for g in group),
            "mean_team_reward_change": mean(g["team_reward_change"] for g in group),
            "mean_abs_team_reward_change": mean(abs(g["team_reward_change"]) for g in group),
        }
        for (s, r), group in sorted(grouped.items())
    ]
    return Table(rows, ["sender", "receiver", "samples", "answer_change_rate",
                        "mean_team_reward_change", "mean_abs_team_reward_change"])
