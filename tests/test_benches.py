"""Every benchmark under bench/ starts, and its docstring's usage lines say
what its options are.

A broken benchmark is otherwise found only when someone needs its figure.
``python bench/X.py --help`` imports the script and everything it imports
and builds its parser, so an import error or a renamed option shows here;
it runs with only ``pipelines`` and ``plugins`` on the path, as after
``pip install -e .``, so a script that needs the checkout's ``tests`` must
put them on the path itself. The usage lines (``python bench/X.py
[--events 50000] ...`` in the module's docstring) are held to the parser:
each option they name must be in its help, a value they give
(``[--events 50000]``) must be the option's default, and each option of the
parser must be named somewhere in the docstring. No benchmark is run: no
timings here.
"""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import project_env

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SCRIPTS = sorted(BENCH.glob("bench_*.py"))

#: A usage line: ``python bench/X.py ...`` (after ``flock LOCK`` or not);
#: lines indented deeper below it continue it.
COMMAND = re.compile(r"^\s*(?:flock \S+ )?python (bench/bench_\w+\.py)(.*)$")
#: ``--name VALUE`` or ``--name`` in a usage line.
OPTION = re.compile(r"(--[a-z][a-z-]*)(?:[ =]([^\[\]\s-][^\]\s]*))?")

#: Runs a script as ``python SCRIPT --help`` does, its parser's defaults
#: written to a file on the way: argparse prints a default only beside a
#: help text, and most benches' options have none.
HELP_WITH_DEFAULTS = """
import argparse, json, runpy, sys
script, out = sys.argv[1], sys.argv[2]
parse = argparse.ArgumentParser.parse_args

def dumping(self, args=None, namespace=None):
    found = {
        option: action.default
        if isinstance(action.default, (str, int, float, bool, type(None)))
        else repr(action.default)
        for action in self._actions
        for option in action.option_strings
        if action.help is not argparse.SUPPRESS
    }
    with open(out, "w") as file:
        json.dump(found, file)
    return parse(self, args, namespace)

argparse.ArgumentParser.parse_args = dumping
sys.argv = [script, "--help"]
sys.path.insert(0, str(__import__("pathlib").Path(script).resolve().parent))
runpy.run_path(script, run_name="__main__")
"""


def docstring_of(script: Path) -> str:
    return ast.get_docstring(ast.parse(script.read_text())) or ""


def usage_lines(script: Path) -> list[tuple[str, str]]:
    """(the script a usage line runs, the rest of the line with its
    continuation lines) for each usage line of the script's docstring."""
    docstring = docstring_of(script)
    found: list[tuple[str, str]] = []
    lines = docstring.splitlines()
    for index, line in enumerate(lines):
        match = COMMAND.match(line)
        if not match:
            continue
        text = match.group(2)
        indent = len(line) - len(line.lstrip())
        for following in lines[index + 1 :]:
            deeper = len(following) - len(following.lstrip()) > indent
            if not following.strip() or not deeper or COMMAND.match(following):
                break
            text += " " + following.strip()
        found.append((match.group(1), text.split("#")[0].replace("\\", " ")))
    return found


def installed(scratch: Path) -> dict[str, str]:
    """An environment where the project is importable as an install makes it:
    ``pipelines`` and ``plugins`` only (the checkout's root, with its
    ``tests``, is not on the path of ``python bench/X.py``)."""
    site = scratch / "site"
    site.mkdir(exist_ok=True)
    for package in ("pipelines", "plugins"):
        if not (site / package).exists():
            (site / package).symlink_to(ROOT / package, target_is_directory=True)
    return {**project_env(), "PYTHONPATH": str(site)}


def help_of(script: str, scratch: Path) -> tuple[str, dict[str, object]]:
    """What ``python SCRIPT --help`` prints, and its options' defaults."""
    out = scratch / f"{Path(script).stem}.json"
    answer = subprocess.run(
        [sys.executable, "-c", HELP_WITH_DEFAULTS, str(ROOT / script), str(out)],
        cwd=scratch,
        env=installed(scratch),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answer.returncode == 0, f"{script} --help exited {answer.returncode}:\n{answer.stderr}"
    assert answer.stdout.startswith("usage:"), f"{script} --help printed:\n{answer.stdout}"
    defaults: dict[str, object] = json.loads(out.read_text())
    return answer.stdout, defaults


def stated_default(value: str) -> bool:
    """Whether a usage line's value states a default, not a placeholder
    (``URL``, ``N``), a choice (``a|b``) or an ellipsis."""
    return bool(value) and not value.isupper() and "|" not in value and value != "..."


def same(value: str, default: object) -> bool:
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            return float(value.replace("_", "")) == float(default)
        except ValueError:
            return False
    return value == str(default)


def test_every_bench_has_a_usage_line() -> None:
    assert len(SCRIPTS) >= 20, SCRIPTS
    missing = [script.name for script in SCRIPTS if not usage_lines(script)]
    assert not missing, f"no 'python bench/X.py ...' usage line in the docstring of {missing}"


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.stem for script in SCRIPTS])
def test_help_and_docstring_agree(script: Path, tmp_path: Path) -> None:
    usages = usage_lines(script)
    runs = sorted({each for each, _ in usages})
    missing = [each for each in runs if not (ROOT / each).exists()]
    assert not missing, f"{script.name}'s usage lines run {missing}: no such file"
    helps = {each: help_of(each, tmp_path) for each in runs}

    # Each option a usage line names is the parser's, with the default it gives.
    for each, text in usages:
        help_text, defaults = helps[each]
        for option, value in OPTION.findall(text):
            assert option in defaults and re.search(rf"{re.escape(option)}(?![a-z-])", help_text), (
                f"{script.name}'s usage line names {option}; {each} --help does not"
            )
            default = defaults[option]
            if stated_default(value) and default is not None:
                assert same(value, default), (
                    f"{script.name}'s usage line gives {option} {value}; its default is {default!r}"
                )

    # Each option of the parser is in the docstring: one it never mentions is
    # one nobody reading it can use, or whose figure nobody can read.
    described = "\n".join(docstring_of(ROOT / each) for each in {*runs, f"bench/{script.name}"})
    for each in runs:
        unnamed = [
            option
            for option in helps[each][1]
            if option not in ("-h", "--help")
            and not re.search(rf"{re.escape(option)}(?![a-z-])", described)
        ]
        assert not unnamed, f"{each}'s options {unnamed} are not in {script.name}'s docstring"
