"""The set-up files agree: pins in pyproject.toml and environment.yml, README and .ci/run."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        name, _, version = dep.partition("==")
        assert version, f"{dep!r} is not pinned exactly"
        pins[name.strip().lower()] = version.strip()
    return pins


def _environment_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s*-\s*([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_every_dependency_is_pinned_exactly_and_torch_is_2_13_0():
    assert _pyproject_pins()["torch"] == "2.13.0"


def test_environment_yml_pins_the_same_versions_as_pyproject():
    assert _environment_pins() == _pyproject_pins()


def test_environment_yml_uses_python_3_11():
    assert re.search(r"^\s*-\s*python=3\.11\s*$", (ROOT / "environment.yml").read_text(), re.M)


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"<!-- command: \w+ -->\n```bash\n(.+?)\n```", text)


def test_readme_gives_exactly_two_commands_one_for_jupyterlab_one_for_the_tests():
    commands = _readme_commands()
    assert len(commands) == 2
    assert "jupyter lab" in commands[0]
    assert "pytest --nbval" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- command: test -->" in ci  # .ci/run reads the command from the README itself


def test_requires_python_admits_the_pythons_learners_have():
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    for version in ("3.11", "3.12", "3.13"):
        assert version in spec, f"requires-python {spec} shuts out Python {version}"


def test_ci_runs_nbval_over_the_solutions_a_second_time_on_other_cpu_kernels():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^ATEN_CPU_CAPABILITY=default \.venv/bin/pytest --nbval solutions/\s*$", ci, re.M)
    assert "set -euo pipefail" in ci  # a failing first pass stops CI; a failing second pass fails it


def test_the_package_doctests_run_in_the_suite():
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "llmcourse" in ini["testpaths"] and "--doctest-modules" in ini["addopts"]
