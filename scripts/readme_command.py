"""Print set-up command N (1 or 2) of README.md's "Set-up commands" section: .ci/run runs them from
here, so that what README tells a newcomer is what CI runs, step for step."""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def setup_commands(text: str) -> list[str]:
    """The bash blocks of the "## Set-up commands" section, in order."""
    section = text.split("## Set-up commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)\n```", section, re.S)]


if __name__ == "__main__":
    commands = setup_commands(README.read_text(encoding="utf-8"))
    if len(commands) != 2 or len(sys.argv) != 2 or sys.argv[1] not in ("1", "2"):
        sys.exit(f"usage: readme_command.py 1|2 (README.md's set-up section has {len(commands)} commands)")
    print(commands[int(sys.argv[1]) - 1])
