"""One local Ray cluster of two nodes for every test here, started once per session (as Ray's own tests do with
`ray.cluster_utils.Cluster`): a head and a worker node, two CPUs each, a small object store. Without Ray
installed nothing here is collected."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

try:
    import ray
except ImportError:  # the ray extra is not installed: nothing here can run
    collect_ignore_glob = ["test_*.py"]

OBJECT_STORE = 80 * 1024 * 1024


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/ray/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.ray)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


LISTEN_PORTS: dict[str, int] = {}  # a node's metrics agent port -> its dashboard agent's listen port


def node_args(**args: Any) -> dict[str, Any]:
    """A node's options with its agents' ports fixed: left to choose their own, the raylet waits at most 15 s for
    the agents to report them, and on a busy machine their Python start-up takes longer (the raylet then aborts)."""
    ports = {port: free_port() for port in ("metrics_agent_port", "metrics_export_port", "runtime_env_agent_port")}
    LISTEN_PORTS[str(ports["metrics_agent_port"])] = listen = free_port()
    return {"object_store_memory": OBJECT_STORE, **ports, "dashboard_agent_listen_port": listen, **args}


def _raylet_told_its_listen_port(start: Callable[..., Any]) -> Callable[..., Any]:
    """Ray 2.60's start_raylet gives the raylet every agent port but the dashboard agent's listen port, which the
    raylet then waits for: pass it the one the agent was given."""

    def started(command: list[str], process_type: str, *args: Any, **kwargs: Any) -> Any:
        if process_type == "raylet":
            metrics = next((c.split("=", 1)[1] for c in command if c.startswith("--metrics-agent-port=")), "")
            if metrics in LISTEN_PORTS:
                command = [*command, f"--dashboard_agent_listen_port={LISTEN_PORTS[metrics]}"]
        return start(command, process_type, *args, **kwargs)

    return started


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    from ray._private import services
    from ray.cluster_utils import Cluster

    services.start_ray_process = _raylet_told_its_listen_port(services.start_ray_process)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    cluster = Cluster(
        initialize_head=True,
        head_node_args=node_args(num_cpus=2, include_dashboard=False),
    )
    cluster.add_node(**node_args(num_cpus=2))
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
