"""multiagent-rl: train teams of LLM agents with reinforcement learning.

The public API: declare a `Scenario` from `Role`s, a message graph, a round
schedule, a task sampler and a reward function; play it as a PettingZoo env;
train its adapters with `multiagent-rl train`.
"""

from .actions import Action
from .answers import answers_match, is_bare_number, last_number, parse_answer, parse_number_answer
from .graph import (
    GraphError,
    MessageGraph,
    chain,
    complete,
    from_edges,
    graph_for_round,
    ring,
    star,
)
from .hooks import EpisodeView, Outcome
from .records import (
    Episode,
    EpisodeLog,
    Message,
    RewardEntry,
    Task,
    Turn,
    read_episodes,
    read_run_episodes,
)
from .registry import list_scenarios, load_scenario, register
from .rewards import (
    RewardTerm,
    WeightedReward,
    answered,
    bare_number_replies,
    blend,
    individual_rewards,
    latest_answers,
    majority_answer,
    reply_share,
    team_reward,
    weighted,
    zero_sum,
)
from .scenario import Role, Scenario, ScenarioError
from .symbols import SymbolChannel
from .task_sources import TaskDataError, TaskTable, tasks_from

__all__ = [
    "Action", "Episode", "EpisodeLog", "EpisodeView", "Outcome", "GraphError", "Message", "MessageGraph", "Role", "Scenario",
    "ScenarioError", "SymbolChannel", "Task", "Turn", "answered", "answers_match", "bare_number_replies", "blend", "chain", "complete", "from_edges",
    "graph_for_round", "individual_rewards", "is_bare_number", "last_number", "latest_answers", "list_scenarios", "load_scenario",
    "majority_answer", "parse_answer", "parse_number_answer", "read_episodes", "read_run_episodes",
    "register", "reply_share", "RewardEntry", "RewardTerm", "ring", "star", "WeightedReward", "weighted", "TaskDataError", "TaskTable", "tasks_from", "team_reward", "zero_sum",
]
__version__ = "0.1.0"
