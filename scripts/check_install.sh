#!/usr/bin/env bash
# After README's two set-up commands in one clone and one .venv (command 1's `pip install .`, then
# command 2's editable install): the CLI, the library and the docs build work from another
# directory, and no compiled kernel was left inside site-packages (pip leaves such files behind,
# and the leftover npformer/ folder would shadow the editable install).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
elsewhere="$(mktemp -d)"
trap 'rm -rf "$elsewhere"' EXIT
cd "$elsewhere"
"$root/.venv/bin/npformer" sentiment "a fine film" | grep -q '"label": "POSITIVE"'
"$root/.venv/bin/npformer" sentiment --backend numba "a fine film" | grep -q '"label": "POSITIVE"'
"$root/.venv/bin/python" -c "import npformer, pathlib; npformer.pipeline; assert pathlib.Path(npformer.__file__).parent == pathlib.Path('$root/npformer')"
"$root/.venv/bin/mkdocs" build --strict -q -f "$root/mkdocs.yml" -d "$elsewhere/site"
leftovers="$(find "$root/.venv" -path '*site-packages/npformer*' \( -name '*.nbi' -o -name '*.nbc' \))"
if [ -n "$leftovers" ] || [ -d "$(echo "$root"/.venv/lib/python3*/site-packages)/npformer" ]; then
    echo "compiled kernels or an npformer folder left in site-packages: $leftovers" >&2
    exit 1
fi
echo "install check: CLI, library and docs build work from another directory; nothing left in site-packages"
