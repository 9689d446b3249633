"""What pyproject.toml declares and what requirements.lock pins, read the way pip reads them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli before 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def pyproject() -> dict[str, Any]:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8")))


def runtime_requirements() -> dict[str, Requirement]:
    """The runtime dependencies of pyproject.toml by canonical name (litellm, ipykernel...)."""
    requirements = (Requirement(line) for line in pyproject()["project"]["dependencies"])
    return {canonicalize_name(r.name): r for r in requirements}


def lower_bound(requirement: Requirement) -> str:
    """The version of the requirement's one `>=` bound: the oldest release rlm_kernel supports."""
    bounds = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    assert len(bounds) == 1, f"{requirement} needs exactly one >= bound, its oldest tested release"
    return bounds[0]


def locked_versions() -> dict[str, str]:
    """Every pin of requirements.lock by canonical name (`name==version ; marker \\` lines)."""
    lines = (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
    pins = [line.split(";")[0].split()[0] for line in lines if "==" in line and not line.startswith(("#", " "))]
    return {canonicalize_name(pin.split("==")[0]): pin.split("==")[1] for pin in pins}
