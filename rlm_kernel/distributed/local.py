"""A local Ray cluster of one or more nodes in this machine (`ray.cluster_utils.Cluster`, as Ray's own tests do),
started so that it comes up on a busy machine too: for `rlm bench ray` and the tests.

Left to choose their own ports, a node's agents report them to the raylet, which waits at most 15 s for them; on a
busy machine their Python start-up takes longer and the raylet aborts ("The current node timed out during
startup"). Here every agent's port is chosen up front, and the raylet is told the one Ray 2.60 leaves out.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from ray._private import services
from ray.cluster_utils import Cluster

OBJECT_STORE = 80 * 1024 * 1024
_listen_ports: dict[str, int] = {}  # a node's metrics agent port -> its dashboard agent's listen port


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def node_args(**args: Any) -> dict[str, Any]:
    """A node's options (`Cluster(head_node_args=...)`, `Cluster.add_node(...)`) with its agents' ports fixed."""
    ports = {port: free_port() for port in ("metrics_agent_port", "metrics_export_port", "runtime_env_agent_port")}
    _listen_ports[str(ports["metrics_agent_port"])] = listen = free_port()
    return {"object_store_memory": OBJECT_STORE, **ports, "dashboard_agent_listen_port": listen, **args}


def _raylet_told_its_listen_port(start: Callable[..., Any]) -> Callable[..., Any]:
    """Ray 2.60's start_raylet gives the raylet every agent port but the dashboard agent's listen port, which the
    raylet then waits for: pass it the one the agent was given."""

    def started(command: list[str], process_type: str, *args: Any, **kwargs: Any) -> Any:
        if process_type == "raylet":
            metrics = next((c.split("=", 1)[1] for c in command if c.startswith("--metrics-agent-port=")), "")
            if metrics in _listen_ports:
                command = [*command, f"--dashboard_agent_listen_port={_listen_ports[metrics]}"]
        return start(command, process_type, *args, **kwargs)

    started.patched = True  # type: ignore[attr-defined]
    return started


def local_cluster(nodes: int = 1, num_cpus: int = 2, **head: Any) -> Cluster:
    """A cluster of `nodes` nodes of `num_cpus` CPUs each, every node's object store small; `.shutdown()` stops it."""
    if not getattr(services.start_ray_process, "patched", False):
        services.start_ray_process = _raylet_told_its_listen_port(services.start_ray_process)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster = Cluster(
        initialize_head=True, head_node_args=node_args(num_cpus=num_cpus, include_dashboard=False, **head)
    )
    for _ in range(nodes - 1):
        cluster.add_node(**node_args(num_cpus=num_cpus))
    cluster.wait_for_nodes()
    return cluster
