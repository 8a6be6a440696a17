#!/usr/bin/env bash
# Re-pair and re-execute notebooks after editing their .py source.
# Executes under CI=true (the smoke profile), so the committed outputs are the ones nbval checks.
#   tools/sync_notebooks.sh notebooks/02_rule_tasks.py [more.py ...]
set -euo pipefail
cd "$(dirname "$0")/.."
for src in "${@:-notebooks/*.py}"; do
  CI=true .venv/bin/jupytext --to ipynb --set-kernel python3 --execute "$src"
done
