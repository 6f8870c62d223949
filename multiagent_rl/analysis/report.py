"""`run_analysis`: load a run (and runs to compare), compute every metric, print a summary
and write ``RUN/report.html``. This is what ``multiagent-rl analyse RUN [--compare RUN2]`` calls.

>>> text, path = run_analysis("runs/demo", compare=["runs/baseline"])  # doctest: +SKIP
>>> print(text)                                                       # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..backends.base import GenerationBackend
from ..records import Episode
from ..registry import load_scenario
from ..scenario import Scenario
from . import page, plots
from .dynamics import (
    answer_adoption,
    debate_rounds,
    debating,
    dynamics_by_step,
    episode_dynamics,
    influence_graph,
    summarise_dynamics,
)
from .game_report import game_sections
from .games import game_episodes, game_results, moves_by_phase
from .influence import ablation_influence, summarise_ablation
from .league_metrics import exploitability_by_step, league_results, ratings_by_step
from .loading import RunLog, load_run, training_episodes, training_phases
from .messages import (
    agent_message_stats,
    agents_in,
    edge_message_stats,
    message_drift,
    message_stats_by_step,
    role_specialisation,
    text_stats,
)
from .signalling import (
    lexicon,
    meaning_attributes,
    meaning_message_information,
    messages_before_after,
    messages_by_meaning,
    senders,
    signalling_by_step,
    topographic_similarity,
)
from .strategy import strategy_entropy, strategy_table
from .summary import reward_by_step, reward_terms_by_step, summary_table, unique_names
from .tables import Table

PHASE_ROWS = [
    ("episodes", "episodes"), ("team_accuracy", "team answer correct"), ("answer_changes", "answer changes / episode"),
    ("flips_wrong_to_correct", "flips wrong→correct / episode"), ("flips_correct_to_wrong", "flips correct→wrong / episode"),
    ("last_round_agreement", "last round unanimous"), ("converged", "converged"),
    ("mean_convergence_round", "mean convergence round"), ("majority_team_agreement", "team answer = majority"),
    ("mean_chars", "mean message chars"), ("distinct_1", "distinct-1"),
]


@dataclass
class RunAnalysis:
    """Every table computed for one run (each loads into pandas as is)."""

    run: RunLog
    agents: list[str]
    rewards: Table
    reward_terms: Table
    agent_stats: Table
    edge_stats: Table
    by_step: Table
    drift: Table
    specialisation: Table
    rounds: Table
    debate_steps: Table
    adoption: Table
    early: dict[str, Any]
    late: dict[str, Any]
    early_examples: list[Episode] = field(default_factory=list)
    late_examples: list[Episode] = field(default_factory=list)
    ablation: Table | None = None
    ablation_summary: Table | None = None
    topographic: Table | None = None
    information: Table | None = None
    signalling_steps: Table | None = None
    signalling_messages: Table | None = None
    signalling_lexicon: Table | None = None  # early and late rows of `signalling.lexicon`
    signalling_heldout: Table | None = None
    debating: bool = True  # several agents answer in the last round (`dynamics.debating`)
    results: Table | None = None  # games: wins / draws / losses per side (`games.game_results`)
    moves: Table | None = None
    ratings: Table | None = None  # a league's metrics (`league_metrics`)
    league: Table | None = None
    exploitability: Table | None = None
    strategy: Table | None = None  # an OpenSpiel league: the first and last strategy tables (`strategy`)
    strategy_entropy: Table | None = None


def _phase(episodes: list[Episode], dynamics: dict[int, dict]) -> dict[str, Any]:
    stats = text_stats([t for e in episodes for t in e.turns])
    rows = [dynamics[id(e)] if id(e) in dynamics else episode_dynamics(e) for e in episodes]
    return summarise_dynamics(rows) | {"mean_chars": stats["mean_chars"], "distinct_1": stats["distinct_1"]}


STRUCTURE_COLUMNS = ["split", "step", "agent", "episodes", "topographic_similarity", "topographic_similarity_shuffled",
                     "posdis", "posdis_shuffled", "bosdis", "bosdis_shuffled"]


def _thinned(steps: Table, keep: int = 12) -> Table:
    """At most `keep` evenly spaced training steps (first and last included) and every
    held-out evaluation: a table the late steps are not cut from."""
    train = sorted({r["step"] for r in steps if r["split"] == "train"})
    if len(train) > keep:
        train = [train[round(i * (len(train) - 1) / (keep - 1))] for i in range(keep)]
    return Table([r for r in steps if r["split"] != "train" or r["step"] in train], STRUCTURE_COLUMNS)


def _examples(episodes: list[Episode], first: bool, n: int) -> list[Episode]:
    ordered = training_episodes(episodes)
    if not ordered:
        return []
    step = ordered[0].step if first else ordered[-1].step
    same = [e for e in ordered if e.step == step] if step is not None else (ordered if first else ordered[::-1])
    return same[:n]


def analyse(
    run: RunLog,
    *,
    progress: bool = False,
    backend: GenerationBackend | None = None,
    scenario: Scenario | None = None,
    ablation_sample: int = 20,
    signalling: bool | None = None,
) -> RunAnalysis:
    """Compute every table of the report for one loaded run. The ablation runs only with a
    `backend` (and the run's scenario, loaded by name unless given); the signalling tables
    when `signalling` is True, or by default for scenarios named like "signalling"."""
    episodes = run.episodes
    stages = tqdm(total=8, desc=f"analysing {run.name}", unit="stage", disable=not progress)

    def done(table: Any) -> Any:
        stages.update()
        return table

    early, late = training_phases(episodes)
    # Each training episode's dynamics, computed once for the by-step curves and both phases.
    training = [e for e in training_episodes(episodes) if e.step is not None]
    dynamics = {id(e): episode_dynamics(e) for e in training}
    analysis = RunAnalysis(
        run=run,
        agents=agents_in(episodes),
        rewards=done(reward_by_step(episodes, run.metrics)),
        reward_terms=reward_terms_by_step(episodes),
        agent_stats=done(agent_message_stats(episodes)),
        edge_stats=done(edge_message_stats(episodes)),
        by_step=done(message_stats_by_step(episodes)),
        drift=done(message_drift(episodes)),
        specialisation=done(role_specialisation(late)),
        rounds=debate_rounds(episodes),
        debate_steps=done(dynamics_by_step(list(dynamics.values()))),
        adoption=done(answer_adoption(episodes)),
        early=_phase(early, dynamics),
        late=_phase(late, dynamics),
        early_examples=_examples(episodes, True, 2),
        late_examples=_examples(episodes, False, 2),
    )
    stages.close()
    analysis.debating = debating(episodes)
    games = game_episodes(episodes)
    if games:
        analysis.results, analysis.moves = game_results(games), moves_by_phase(games)
    for name, table in (("ratings", ratings_by_step(run.metrics)), ("league", league_results(run.metrics)),
                        ("exploitability", exploitability_by_step(run.metrics))):
        setattr(analysis, name, table or None)
    if run.strategies:  # the first and the last evaluation's (one table when there is one)
        ends = [run.strategies[0], run.strategies[-1]][:len(run.strategies)]
        analysis.strategy, analysis.strategy_entropy = strategy_table(ends), strategy_entropy(ends)
    if backend is not None and episodes:
        scenario = scenario or load_scenario(run.scenario)
        analysis.ablation = ablation_influence(late or episodes, scenario, backend, sample=ablation_sample, progress=progress)
        analysis.ablation_summary = summarise_ablation(analysis.ablation)
    if signalling is None:
        signalling = "signal" in (run.scenario or "")
    if signalling and episodes and meaning_attributes(episodes):
        # Early and late side by side (the same episodes twice when the log has one step).
        phases = [("early", early or episodes), ("late", late or episodes)]
        analysis.topographic = Table(
            [{"phase": phase} | row for phase, part in phases for row in topographic_similarity(part)],
            ["phase", "agent", "attributes", "episodes", "pairs", "topographic_similarity"])
        analysis.information = Table(
            [{"phase": phase} | row for phase, part in phases for row in meaning_message_information(part)],
            ["phase", "agent", "episodes", "mutual_information_bits", "meaning_entropy_bits", "normalised_mi",
             "adjusted_mi_bits", "adjusted_normalised_mi"])
        # One point per step (per bin past 60 steps); held-out evaluations (step 0: untrained) as their own points.
        signallers = senders(episodes)  # the curves follow the one who signals, when there is one
        agent = signallers[0] if len(signallers) == 1 else None
        analysis.signalling_steps = Table([*signalling_by_step(episodes, agent=agent, bins=60),
                                           *signalling_by_step(episodes, agent=agent, split="eval")])
        analysis.signalling_messages = messages_by_meaning(episodes)
        analysis.signalling_lexicon = Table([*lexicon(episodes, phase="early"), *lexicon(episodes, phase="late")])
        analysis.signalling_heldout = messages_before_after(episodes)
    return analysis


def render_report(main: RunAnalysis, others: Sequence[RunAnalysis] = ()) -> str:
    """The report's HTML for `main`, with `others` in the summary and reward curves."""
    runs = [main, *others]
    agents = main.agents
    summary = summary_table(runs)
    sections = game_sections(main)  # a game's report leads with who wins
    sections += [("summary", "Summary", page.section(
        "summary", "Summary", "Early = first third of the training steps, late = last third.",
        page.table(summary, max_rows=None, summary=True)))]

    curves = {name: a.rewards for name, a in zip(unique_names(runs), runs, strict=True)}
    sections.append(("rewards", "Rewards", page.section(
        "rewards", "Team reward", "Mean team reward per training step (train, smoothed when long) and on held-out tasks (eval).",
        page.figure(plots.reward_curves(curves), "team reward by training step")
        + (page.figure(plots.reward_terms(list(main.reward_terms)), "reward terms by training step")
           if len(main.reward_terms) else ""))))

    volume = influence_graph(main.edge_stats, weight="messages", agents=agents)
    sections.append(("messages", "Messages", page.section(
        "messages", "Messages", "What each agent says and how it changes over training.",
        page.figure(plots.message_trends(main.by_step, agents), "message length and diversity over training")
        + "<h3>Per agent</h3>" + page.table(main.agent_stats)
        + '<div class="grid2"><div><h3>Per edge (sender → receiver)</h3>'
        + page.table(Table(main.edge_stats, ["sender", "receiver", "messages", "mean_chars", "distinct_1", "entropy_bits"]))
        + "</div><div>"
        + page.figure(plots.draw_weighted_graph(volume, "Message volume on the graph", "{:.0f}", "#2563eb",
                                                "edge width and label = messages delivered"), "message graph with per-edge volume")
        + "</div></div>")))

    adoption = influence_graph(main.adoption, weight="adoption_rate", agents=agents)
    body = ('<div class="grid2"><div>'
            + page.figure(plots.draw_weighted_graph(adoption, "Influence: answer adoption", "{:.0%}", "#ea580c",
                                                    "share of chances where the receiver switched to the sender's answer"), "influence graph")
            + "</div><div><h3>Adoption per edge</h3>" + page.table(main.adoption) + "</div></div>")
    if main.ablation_summary is not None:
        causal = influence_graph(main.ablation_summary, weight="answer_change_rate", agents=agents)
        body += ('<h3>Causal influence by ablation</h3><div class="grid2"><div>'
                 + page.figure(plots.draw_weighted_graph(causal, "Influence: ablation", "{:.0%}", "#9333ea",
                                                         "share of removals that changed the receiver's answer"), "ablation influence graph")
                 + "</div><div>" + page.table(main.ablation_summary) + "</div></div>")
    sections.append(("influence", "Influence", page.section(
        "influence", "Who listens to whom",
        "An edge's weight is how often the receiver's final answer adopted the sender's earlier proposal (and, with a model, how often removing the sender's message changed it).",
        body)))

    if main.debating:
        phases = Table([{"measure": label, "early": main.early[key], "late": main.late[key]} for key, label in PHASE_ROWS])
        sections.append(("dynamics", "Debate", page.section(
            "dynamics", "Debate dynamics", "How answers move between rounds (rounds count from 0) and how that changes with training.",
            page.figure(plots.debate_panels(main.rounds, main.debate_steps), "debate dynamics")
            + '<div class="grid2"><div><h3>By round</h3>'
            + page.table(Table(main.rounds, ["round", "turns", "changed", "change_rate", "accuracy", "unanimous_rate"]))
            + "</div><div><h3>Early vs late training</h3>" + page.table(phases)
            + "</div></div>")))

    sections.append(("language", "Language", page.section(
        "language", "Specialisation and drift",
        "Jensen-Shannon distance between word distributions: between agents late in training, and for each agent between early and late training.",
        page.figure(plots.specialisation_panels(agents, main.specialisation, main.drift), "specialisation and drift")
        + page.table(main.drift))))

    if main.topographic is not None:
        steps = main.signalling_steps or Table([])
        body = page.figure(plots.signalling_trends(steps, list(dict.fromkeys(r["agent"] for r in steps))),
                           "code structure over training")
        body += page.table(main.topographic) + page.table(main.information)
        if steps:
            body += ("<h3>Structure against chance, over training</h3>"
                     + page.table(_thinned(steps), max_rows=None))
        if main.signalling_heldout:
            body += ("<h3>The same held-out tasks, before and after training</h3>"
                     + page.table(main.signalling_heldout, max_rows=None))
        if main.signalling_messages:
            body += ("<h3>The same meanings, early and late in training</h3>"
                     + page.table(main.signalling_messages, max_rows=None))
        if main.signalling_lexicon:
            shown = ["attribute", "value", "position", "symbol", "share", "episodes"]
            body += ('<h3>Lexicon: the most used symbol for each attribute value, by position</h3><div class="grid2">'
                     + "".join(f"<div><h3>{phase}</h3>"
                               + page.table(Table(main.signalling_lexicon.where(phase=phase), shown), max_rows=None)
                               + "</div>" for phase in ("early", "late"))
                     + "</div>")
        sections.append(("signalling", "Signalling", page.section(
            "signalling", "Signalling structure",
            "Topographic similarity (Spearman between meaning Hamming and message edit distances) and mutual information "
            "between meanings and first messages, over training and early vs late (first and last third of the steps). "
            "Adjusted MI subtracts the MI the same messages get with the meanings shuffled (the small-sample bias, "
            "which alone gives talk whose every message differs the full H(meaning)); normalised, 0 = no relation, "
            "1 = the messages identify the meaning. Positional and bag-of-symbols disentanglement (posdis, bosdis; "
            "Chaabouni et al. 2020): 1 = each message position (each symbol's count) names one attribute only; "
            "\"shuffled\" columns are the same measure with the messages shuffled across the meanings (chance).",
            body)))

    sections.append(("transcripts", "Transcripts", page.section(
        "transcripts", "Sample transcripts", "Episodes from the first and the last training step, side by side.",
        page.transcripts_side_by_side(main.early_examples, main.late_examples, agents))))

    notes = "".join(f"<li>{page.escape(n)}</li>" for a in runs for n in a.run.notes)
    if notes:
        sections.append(("notes", "Notes", page.section("notes", "Notes on the logs", "", f"<ul>{notes}</ul>")))
    compared = f" · compared with {', '.join(a.run.name for a in others)}" if others else ""
    subtitle = f"scenario {main.run.scenario or '–'} · {len(main.run.episodes)} episodes{compared}"
    return page.page(f"Communication report: {main.run.name}", subtitle, sections)


def run_analysis(
    run: str | Path,
    compare: list[str | Path] | None = None,
    out: Path | None = None,
    progress: bool = True,
    *,
    backend: GenerationBackend | None = None,
    scenario: Scenario | None = None,
    ablation_sample: int = 20,
) -> tuple[str, Path]:
    """Analyse `run` (and `compare` runs), write the report (default ``RUN/report.html``)
    and return (printable summary table, report path). Raises `RunError` for a folder
    without episodes or metrics. With a `backend`, the report adds causal influence by
    ablation on `ablation_sample` late episodes."""
    main = analyse(load_run(run, progress), progress=progress, backend=backend, scenario=scenario, ablation_sample=ablation_sample)
    others = [analyse(load_run(path, progress), progress=progress) for path in compare or []]
    html_text = render_report(main, others)
    path = Path(out) if out is not None else Path(run) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(".report-*.html"):  # left by an analyse killed mid-write
        stale.unlink(missing_ok=True)
    # Write then rename, so a crash never leaves half a report where a good one was.
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(html_text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return summary_table([main, *others]).to_text(), path
