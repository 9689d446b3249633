"""The documented import path of `replay_run` (README: `rlm_kernel.formats.replay.replay_run`); the code is in rerun.py."""

from rlm_kernel.formats.rerun import (
    REPLAYED_SETTINGS,
    Replayed,
    load_trace,
    recorded_history,
    recorded_settings,
    replay_context,
    replay_rlm,
    replay_run,
    root_call,
    tools_for_replay,
)

__all__ = [
    "REPLAYED_SETTINGS",
    "Replayed",
    "load_trace",
    "recorded_history",
    "recorded_settings",
    "replay_context",
    "replay_rlm",
    "replay_run",
    "root_call",
    "tools_for_replay",
]
