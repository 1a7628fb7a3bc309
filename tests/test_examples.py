"""README's set-up commands: the first runs the main job on files inside the repository only, and
both are what CI runs."""

from __future__ import annotations

import json
import os
import re
import shlex

from conftest import ROOT
from npformer.cli import main


def first_command() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.search(r"```bash\n(.*?)\n```", readme, re.S).group(1).strip()


def test_first_command_needs_only_the_clone():
    command = first_command()
    assert "../shared" not in command and "pip install ." in command
    npformer_part = next(part for part in command.split("&&") if "bin/npformer" in part)
    paths = [a for a in shlex.split(npformer_part) if "/" in a and not a.startswith(".venv")]
    assert paths and all((ROOT / p).is_file() for p in paths), paths


def test_first_command_classifies_the_examples(capsys, monkeypatch):
    """The README's own npformer invocation, run from the repository root: one line per review,
    the built-in model agreeing with (at least) 10 of the 12 intended labels."""
    monkeypatch.chdir(ROOT)
    argv = shlex.split(next(part for part in first_command().split("&&") if "bin/npformer" in part))[1:]
    assert main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 12 and [r["line"] for r in rows] == list(range(2, 14))
    assert sum(r["label"].lower() == r["input"]["label"] for r in rows) >= 10
    assert os.path.getsize(ROOT / "examples" / "reviews.tsv") < 4096


def test_ci_runs_readme_set_up_commands_step_for_step():
    """.ci/run takes both commands from README.md (scripts/readme_command.py), the second ending with
    the test run, so README's commands are what CI runs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_command", ROOT / "scripts" / "readme_command.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first, second = module.setup_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert first == first_command()
    assert second.startswith("apt-get update && ") and second.endswith("HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q")
    assert "../shared" not in second
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "scripts/readme_command.py 1" in ci and "scripts/readme_command.py 2" in ci
    assert "pip install" not in ci and "pytest" not in ci.replace("*pytest*", "")  # nothing beside README's
