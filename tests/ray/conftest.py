"""One local Ray cluster of two nodes for every test here, started once per session (as Ray's own tests do with
`ray.cluster_utils.Cluster`): a head and a worker node, two CPUs each, a small object store. Without Ray
installed nothing here is collected."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

try:
    import ray
except ImportError:  # the ray extra is not installed: nothing here can run
    collect_ignore_glob = ["test_*.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/ray/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    from rlm_kernel.distributed.local import local_cluster

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    cluster = local_cluster(nodes=2, num_cpus=2)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
