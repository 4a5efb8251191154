#!/usr/bin/env bash
# Install what tcplimits needs on a fresh Debian-like machine (idempotent):
#   scripts/bootstrap.sh          the tool: Python package + debootstrap + the agent image
#   scripts/bootstrap.sh --test   also the test tools: pytest, snakefmt, Chromium + chromedriver,
#                                 Compose (Debian's docker-compose, v1) unless v2 is there,
#                                 and a local Slurm cluster's packages for tests/test_slurm.py
#                                 (slurm-wlm, slurmdbd, munge, mariadb-server, the executor plugin)
set -euo pipefail
cd "$(dirname "$0")/.."

test_tools=false
[[ "${1:-}" == "--test" ]] && test_tools=true

python=${PYTHON:-python3}
"$python" - <<'PY' || { echo "tcplimits needs Python 3.11 or newer (set PYTHON=...)" >&2; exit 1; }
import sys; sys.exit(sys.version_info < (3, 11))
PY

# Debian packages: debootstrap builds the base image where no registry can be reached;
# the report's browser test drives Debian's Chromium; the compose test brings a run's
# compose.yml up with whichever Compose is installed.
packages=()
bare_packages=()  # installed with --no-install-recommends
command -v debootstrap >/dev/null || packages+=(debootstrap)
# the Debian archive's keys: the base build checks the mirror's signatures against them
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || packages+=(debian-archive-keyring)
if $test_tools; then
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
    echo "please install these packages, then run this again: ${packages[*]} ${bare_packages[*]}" >&2
    if ((${#bare_packages[@]})); then
      echo "(${bare_packages[*]} with --no-install-recommends)" >&2
    fi
    exit 1
  fi
fi

extras=""
$test_tools && extras="[test,slurm]"
"$python" -m pip install -q --disable-pip-version-check -e ".${extras}"
command -v pyenv >/dev/null && pyenv rehash || true

if ! "$python" -c 'import docker; docker.from_env().ping()' 2>/dev/null; then
  echo "Docker Engine is not reachable: start it (e.g. 'systemctl start docker') and run this again" >&2
  exit 1
fi
# Builds the Debian base (once, ~1 min) and the agent image when missing.
"$python" -m tcplimits image >&2
