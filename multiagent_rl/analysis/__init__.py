"""Analysing emergent communication: metrics over episode logs, causal influence by
ablation, and a self-contained HTML report.

Every metric is a pure function of a list of `Episode`s returning a `Table` (a list of dicts:
``pandas.DataFrame(table)`` loads it as is):

>>> from multiagent_rl.analysis import load_run, agent_message_stats, answer_adoption, influence_graph
>>> run = load_run("runs/demo")                                  # doctest: +SKIP
>>> agent_message_stats(run.episodes).to_records()               # doctest: +SKIP
>>> influence_graph(answer_adoption(run.episodes)).edges(data="weight")  # doctest: +SKIP
>>> text, path = run_analysis("runs/demo")   # what `multiagent-rl analyse runs/demo` does  # doctest: +SKIP
"""

from .disentanglement import (
    bag_of_symbols_disentanglement,
    positional_disentanglement,
    shuffled_baseline,
    topsim,
)
from .dynamics import (
    answer_adoption,
    debate_by_step,
    debate_dynamics,
    debate_rounds,
    debating,
    dynamics_by_step,
    episode_dynamics,
    influence_graph,
    summarise_dynamics,
)
from .games import episode_moves, game_results, moves_by_phase
from .influence import ablation_influence, summarise_ablation
from .league_metrics import exploitability_by_step, league_results, ratings_by_step, win_rate_matrix
from .loading import (
    RunError,
    RunLog,
    load_run,
    read_metrics,
    read_strategies,
    training_episodes,
    training_phases,
)
from .messages import (
    agent_message_stats,
    edge_message_stats,
    message_drift,
    message_stats_by_step,
    role_specialisation,
)
from .report import RunAnalysis, analyse, render_report, run_analysis
from .signalling import (
    lexicon,
    meaning_attributes,
    meaning_message_information,
    messages_before_after,
    messages_by_meaning,
    signalling_by_step,
    topographic_similarity,
)
from .strategy import strategy_entropy, strategy_table
from .summary import reward_by_step, reward_terms_by_step, summary_table, term_means
from .synthetic import write_synthetic_debate_run
from .synthetic_games import write_synthetic_game_run
from .tables import Table
from .textstats import distinct_n, edit_distance, entropy_bits, js_distance, spearman, words

__all__ = [
    "RunAnalysis", "RunError", "RunLog", "Table", "ablation_influence", "agent_message_stats", "analyse",
    "answer_adoption", "bag_of_symbols_disentanglement", "debate_by_step", "debate_dynamics", "debate_rounds", "debating", "distinct_n", "dynamics_by_step",
    "episode_dynamics", "episode_moves", "edge_message_stats", "edit_distance", "entropy_bits", "exploitability_by_step",
    "game_results", "influence_graph", "js_distance", "league_results", "lexicon", "load_run", "moves_by_phase", "ratings_by_step",
    "meaning_attributes", "meaning_message_information", "message_drift", "message_stats_by_step", "messages_before_after", "messages_by_meaning",
    "positional_disentanglement", "read_metrics", "read_strategies", "render_report", "reward_by_step", "reward_terms_by_step", "role_specialisation", "run_analysis", "shuffled_baseline", "signalling_by_step", "spearman",
    "strategy_entropy", "strategy_table", "summarise_ablation", "summarise_dynamics", "summary_table", "term_means", "topographic_similarity", "topsim",
    "training_episodes", "training_phases", "win_rate_matrix", "words", "write_synthetic_debate_run",
    "write_synthetic_game_run",
]
