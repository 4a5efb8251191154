#!/usr/bin/env bash
# Snakemake (--sdm conda) runs this inside the environment of tcplimits.yaml once its packages
# are installed: add the `tcplimits` of this checkout, editable, so that the jobs run the
# checkout's code. It finds the checkout from its own path, wherever the environment is made.
set -euo pipefail
checkout="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python -m pip install --quiet --no-deps -e "$checkout"
