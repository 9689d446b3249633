"""Offline model backends, served through litellm like any provider."""

from rlm_kernel.models.policies import Policy, PolicyError, ScriptedReplies, load_policy, register_policy

__all__ = ["Policy", "PolicyError", "ScriptedReplies", "load_policy", "register_policy"]
