"""The set-up files agree: pins in pyproject.toml and environment.yml, README and .ci/run."""

import os
import re
import shutil
import subprocess
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


_LOGGING_STUB = """#!/bin/sh
printf '%s|%s\\n' "${ATEN_CPU_CAPABILITY-}" "$0 $*" >> "$CI_LOG"
[ -z "$CI_FAIL_FIRST_PASS" ] || [ -n "${ATEN_CPU_CAPABILITY-}" ] || [ "$(basename "$0")" != pytest ] || exit 1
"""

# python3 -m venv DIR: log the call, say whether an old .venv was still there, and make DIR/bin/pip
# and DIR/bin/pytest logging stubs
_PYTHON3_STUB = """#!/bin/sh
[ ! -e .venv ] || echo "|stale .venv" >> "$CI_LOG"
printf '%s|%s\\n' "${ATEN_CPU_CAPABILITY-}" "python3 $*" >> "$CI_LOG"
if [ "$1 $2" = "-m venv" ]; then
    mkdir -p "$3/bin" && cp "$CI_STUB" "$3/bin/pip" && cp "$CI_STUB" "$3/bin/pytest"
fi
"""


def _run_ci(tmp_path: Path, readme: str, fail_first_pass: bool = False) -> tuple[int, list[str]]:
    """Run .ci/run for real in a copy of the repository's layout, with python3, pip and pytest
    replaced by stubs that log their command lines (prefixed by ATEN_CPU_CAPABILITY's value)."""
    repo, stubs = tmp_path / "repo", tmp_path / "stubs"
    (repo / ".ci").mkdir(parents=True)
    stubs.mkdir()
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    (repo / "README.md").write_text(readme)
    (repo / ".venv").mkdir()
    (repo / ".venv" / "old").write_text("a virtual environment from an earlier run")
    for path, text in ((stubs / "python3", _PYTHON3_STUB), (tmp_path / "stub", _LOGGING_STUB)):
        path.write_text(text)
        path.chmod(0o755)
    log = tmp_path / "log"
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    env.update(PATH=f"{stubs}{os.pathsep}{env['PATH']}", CI_LOG=str(log), CI_STUB=str(tmp_path / "stub"),
               CI_FAIL_FIRST_PASS="1" if fail_first_pass else "")
    done = subprocess.run([shutil.which("bash"), str(repo / ".ci" / "run")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, log.read_text().splitlines() if log.exists() else []


def _expected_calls(readme_command: str) -> list[str]:
    """What the stubs log when .ci/run runs ``readme_command`` and then the second nbval pass."""
    return [f"|{' '.join(part.split())}" for part in readme_command.split("&&")] + [
        "default|.venv/bin/pytest --nbval solutions/"]


def test_ci_runs_the_readme_test_command(tmp_path):
    # .ci/run, run for real: it removes the old .venv, then runs the command that follows the
    # README's "<!-- command: test -->" marker, then nbval over solutions/ on torch's plain kernels
    readme = (ROOT / "README.md").read_text()
    rc, calls = _run_ci(tmp_path, readme)
    assert rc == 0 and calls == _expected_calls(_readme_commands()[1]), calls


def test_ci_reads_the_test_command_from_the_readme_rather_than_a_copy_of_it(tmp_path):
    readme = (ROOT / "README.md").read_text()
    command = _readme_commands()[1]
    changed = "python3 -m venv .venv && .venv/bin/pytest --nbval -x tests/"
    assert readme.count(command) == 1 and command != changed
    rc, calls = _run_ci(tmp_path, readme.replace(command, changed))
    assert rc == 0 and calls == _expected_calls(changed), calls


def test_ci_fails_without_a_test_command_and_stops_when_the_first_pass_fails(tmp_path):
    readme = (ROOT / "README.md").read_text()
    rc, calls = _run_ci(tmp_path / "unmarked", readme.replace("<!-- command: test -->", "<!-- command: tests -->"))
    assert rc != 0 and calls == [], calls
    rc, calls = _run_ci(tmp_path / "failing", readme, fail_first_pass=True)
    assert rc != 0 and calls == _expected_calls(_readme_commands()[1])[:-1], calls


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
