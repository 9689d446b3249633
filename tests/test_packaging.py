"""What pip and CI are told: version ranges in pyproject.toml, exact hashed pins in requirements.lock."""

from __future__ import annotations

import re
import zipfile

from packaging.specifiers import SpecifierSet

from tests.project_metadata import ROOT, locked_versions, lower_bound, pyproject, runtime_requirements

COMPROMISED_LITELLM = ("1.82.7", "1.82.8", "1.107.0")


def test_the_published_litellm_range_excludes_every_compromised_release() -> None:
    allowed = runtime_requirements()["litellm"].specifier
    assert [version for version in COMPROMISED_LITELLM if allowed.contains(version, prereleases=True)] == []
    assert allowed.contains("1.106.2") and allowed.contains("1.107.1")  # only those releases are excluded


def test_the_lock_pins_a_safe_litellm_inside_the_published_range() -> None:
    locked = locked_versions()["litellm"]
    assert locked not in COMPROMISED_LITELLM
    assert runtime_requirements()["litellm"].specifier.contains(locked)


def test_every_runtime_dependency_is_a_range_the_lock_satisfies() -> None:
    locked = locked_versions()
    for name, requirement in runtime_requirements().items():
        assert not any(spec.operator in ("==", "===", "~=") for spec in requirement.specifier), requirement
        lower_bound(requirement)  # exactly one `>=` bound, the release tests/test_install.py installs
        assert requirement.specifier.contains(locked[name]), (
            f"the lock's {name}=={locked[name]} is outside {requirement}"
        )


def test_the_lock_hashes_every_requirement() -> None:
    lines = (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
    pins = [line for line in lines if "==" in line and not line.startswith(("#", " "))]
    assert len(pins) > 50
    for line in pins:  # a pin followed by its hashes ends with a line continuation
        assert line.rstrip().endswith("\\"), f"{line} has no hash"


def test_classifiers_requires_python_and_ci_name_the_same_python_versions() -> None:
    project = pyproject()["project"]
    prefix = "Programming Language :: Python :: "
    classified = {c.removeprefix(prefix) for c in project["classifiers"] if re.fullmatch(prefix + r"3\.\d+", c)}
    ci_line = re.search(r'^PYTHON_VERSIONS="([^"]+)"', (ROOT / ".ci" / "run").read_text(encoding="utf-8"), re.M)
    assert ci_line, ".ci/run names no PYTHON_VERSIONS"
    assert set(ci_line.group(1).split()) == classified
    oldest = min(classified, key=lambda version: int(version.split(".")[1]))
    assert SpecifierSet(project["requires-python"]) == SpecifierSet(f">={oldest}")


def test_the_wheel_carries_the_benchmark_tasks_but_not_the_performance_figure_scripts(tmp_path) -> None:
    from hatchling.builders.wheel import WheelBuilder

    (wheel,) = WheelBuilder(str(ROOT)).build(directory=str(tmp_path), versions=["standard"])
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    bench = {name.removeprefix("rlm_kernel/bench/") for name in names if name.startswith("rlm_kernel/bench/")}
    assert {"runner.py", "tasks.py", "ruler.py", "hotpotqa.py", "report.py", "compare.py", "ref_driver.py"} <= bench
    assert not [name for name in bench if name.startswith("figures/")]
    in_checkout = {p.name for p in (ROOT / "rlm_kernel" / "bench" / "figures").glob("*.py")}
    assert {"perf.py", "perf_kernel.py", "perf_reference.py", "trace_perf.py", "escapes.py"} <= in_checkout
