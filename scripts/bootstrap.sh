#!/usr/bin/env bash
# Install what tcplimits needs on a Debian-like machine (idempotent). Python packages go into
# a virtual environment in the checkout, .venv (made here, or reused): Debian 12+ and
# Ubuntu 23.04+ refuse `pip install` into the system Python (PEP 668). Afterwards,
# `. .venv/bin/activate` puts its bin/ (tcplimits, snakemake, pytest) first on PATH.
#   scripts/bootstrap.sh          the tool and the sweep: tcplimits[all] in .venv, debootstrap,
#                                 the agent image (needs the Docker engine)
#   scripts/bootstrap.sh --quick  the quick tests only: tcplimits[all,test] in .venv; no Docker,
#                                 no Debian package but the venv one
#   scripts/bootstrap.sh --test   everything for the full tests: tcplimits[all,test], pytest,
#                                 snakefmt, Chromium + chromedriver, Compose (Debian's
#                                 docker-compose, v1) unless v2 is there, and a local Slurm
#                                 cluster's packages for tests/workflow/test_slurm.py (slurm-wlm,
#                                 slurmdbd, munge, mariadb-server), then the agent image
# PYTHON=/path/to/python3.11+ chooses the interpreter the environment is made from.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=tool
case "${1:-}" in
  "") ;;
  --test) mode=test ;;
  --quick) mode=quick ;;
  -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "scripts/bootstrap.sh: unknown option ${1}: use --quick, --test or nothing" >&2; exit 2 ;;
esac

python=${PYTHON:-python3}
venv=.venv
if ! command -v "$python" >/dev/null; then
  echo "scripts/bootstrap.sh: no $python on PATH: install Python 3.11 or newer (Debian: apt-get install python3) or set PYTHON=..." >&2
  exit 1
fi
"$python" - <<'PY' || { echo "scripts/bootstrap.sh: tcplimits needs Python 3.11 or newer, $python is older: set PYTHON=..." >&2; exit 1; }
import sys; sys.exit(sys.version_info < (3, 11))
PY

# A usable environment: its python runs and has pip. Anything else at .venv (a half-made one,
# left by a `python3 -m venv` that failed for want of ensurepip) is made again.
venv_ok() { [[ -x $venv/bin/python ]] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; }

# Debian packages: the venv module where the distribution splits it off (python3.X-venv);
# debootstrap builds the base image where no registry can be reached; the report's browser
# test drives Debian's Chromium; the compose test brings a run's compose.yml up with whichever
# Compose is installed.
packages=()
bare_packages=()  # installed with --no-install-recommends
if ! venv_ok && ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  packages+=("python$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv")
fi
if [[ $mode != quick ]]; then
  command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || packages+=(debootstrap)
  # the Debian archive's keys: the base build checks the mirror's signatures against them
  [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || packages+=(debian-archive-keyring)
fi
if [[ $mode == test ]]; then
  command -v chromium >/dev/null || packages+=(chromium)
  command -v chromedriver >/dev/null || packages+=(chromium-driver)
  # scripts/slurm-local.sh: Slurm's controller and node daemons, accounting (the executor
  # plugin reads job states with sacct) and its database, munge for authentication.
  command -v slurmctld >/dev/null || packages+=(slurm-wlm)
  command -v slurmdbd >/dev/null || packages+=(slurmdbd)
  command -v munged >/dev/null || packages+=(munge)
  command -v mariadbd >/dev/null || packages+=(mariadb-server)
  # Without its recommends: Debian's docker-compose recommends docker.io, a second engine.
  command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 \
    || bare_packages+=(docker-compose)
fi
if ((${#packages[@]} + ${#bare_packages[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${packages[*]} ${bare_packages[*]}" >&2
    apt-get update -qq
    if ((${#packages[@]})); then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    fi
    if ((${#bare_packages[@]})); then
      DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${bare_packages[@]}" >/dev/null
    fi
  else
    echo "scripts/bootstrap.sh: please install these Debian packages, then run this again:" \
      "sudo apt-get install ${packages[*]} ${bare_packages[*]}" >&2
    if ((${#bare_packages[@]})); then
      echo "(${bare_packages[*]} with --no-install-recommends)" >&2
    fi
    exit 1
  fi
fi

if ! venv_ok; then
  rm -rf "$venv"
  echo "making the virtual environment $venv (from $("$python" -c 'import sys; print(sys.executable)'))" >&2
  "$python" -m venv "$venv"
fi
extras=all
[[ $mode != tool ]] && extras=all,test
echo "installing tcplimits[$extras] into $venv (a few minutes the first time)" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extras]"

if [[ $mode == quick ]]; then
  echo "done: . $venv/bin/activate puts tcplimits, snakemake and pytest first on PATH" >&2
  exit 0
fi
# The engine's answer, worded as tcplimits words it (a socket you may not open is named, with
# the fix).
"$venv/bin/python" - <<'PY'
import sys

import docker

from tcplimits.engine import faults

try:
    docker.from_env().ping()
except Exception as err:  # noqa: BLE001 - any failure is the one line below
    sys.exit(f"scripts/bootstrap.sh: {faults.unreachable_reason(err)}")
PY
# Builds the Debian base (once, ~1 min) and the agent image when missing.
"$venv/bin/python" -m tcplimits image >&2
echo "done: . $venv/bin/activate puts tcplimits, snakemake and pytest first on PATH" >&2
