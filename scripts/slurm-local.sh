#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, from Debian's packages (slurm-wlm 22.05, slurmdbd,
# munge, mariadb-server), to run the sweep through the Slurm profile without a real cluster:
#
#   scripts/slurm-local.sh start    generate the configuration, start the daemons, wait until
#                                   the node is idle (does nothing for a daemon already running)
#   scripts/slurm-local.sh stop     cancel the cluster's jobs, stop every daemon it started
#   scripts/slurm-local.sh status   which daemons run, the node's state (exit 1 when not up)
#
# then:  snakemake --workflow-profile workflow/profiles/slurm --configfile config/tiny.yaml
#
# Everything lives in one state directory ($TCPLIMITS_SLURM_STATE, default
# /var/tmp/tcplimits-slurm): slurm.conf, slurmdbd.conf, a munge key and socket, the MariaDB
# data, the daemons' logs and pid files. The one thing outside it is a symlink
# /etc/slurm/slurm.conf -> the state's slurm.conf, made by start and removed by stop (start
# refuses to replace a slurm.conf that is not its own): Slurm's commands would find the
# cluster through SLURM_CONF as well, but the executor plugin's job step
# (snakemake-executor-plugin-slurm-jobstep) removes every SLURM_* variable before it calls
# srun inside the job, so srun must find the configuration at its default place.
#
# Why slurmdbd and MariaDB: snakemake-executor-plugin-slurm asks `sacct` for the state of
# its jobs (its default, and what real clusters offer); sacct needs the accounting daemon,
# which needs a database. The node's CPUs and memory are the machine's (`slurmd -C`).
# Needs root (slurmd runs jobs as their user; the daemons run as root here). The state
# directory and the munge key must be root's own: start, stop and status refuse anything
# else (in /var/tmp, which every user may write, another user could make them first and so
# hold the key that root's cluster trusts).
set -euo pipefail

state=${TCPLIMITS_SLURM_STATE:-/var/tmp/tcplimits-slurm}
cluster=tcplimits
partition=local
ctld_port=${TCPLIMITS_SLURM_CTLD_PORT:-6817}
slurmd_port=${TCPLIMITS_SLURM_SLURMD_PORT:-6818}
dbd_port=${TCPLIMITS_SLURM_DBD_PORT:-6819}
db_port=${TCPLIMITS_SLURM_DB_PORT:-6833}
node=$(hostname -s)
export SLURM_CONF=$state/etc/slurm.conf
default_conf=/etc/slurm/slurm.conf

log() { echo "slurm-local: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

need_tools() {
  local missing=() tool
  for tool in slurmctld slurmd slurmdbd sacctmgr sinfo munged mungekey mariadbd \
              mariadb-install-db mariadb; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  ((${#missing[@]} == 0)) || die "missing ${missing[*]}: install the Debian packages" \
    "slurm-wlm slurmdbd munge mariadb-server (scripts/bootstrap.sh --test does)"
  [[ $(id -u) == 0 ]] || die "run as root: slurmd starts jobs as their user"
}

# pid of a daemon of ours that is still running, from its pid file; empty when none
running_pid() {
  local name=$1 pidfile=$state/run/$1.pid pid
  [[ -s $pidfile ]] || return 0
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ && -d /proc/$pid ]] || return 0
  # a recycled pid is not ours: its command line or environment (SLURM_CONF) names the state
  # directory
  cat "/proc/$pid/cmdline" "/proc/$pid/environ" 2>/dev/null | tr '\0' '\n' \
    | grep -q -- "$state" && echo "$pid"
  return 0
}

# refuse PATH WHY: unless PATH is root's own and nobody else may write it
root_only() {
  local path=$1 owner mode
  [[ -L $path ]] && die "$path is a symbolic link; it must be root's own: remove it and start again"
  read -r owner mode < <(stat -c '%u %a' -- "$path")
  [[ $owner == 0 ]] || die "$path belongs to uid $owner, not root: another user may have made" \
    "it to forge the cluster's credentials; remove it and start again"
  (( (8#$mode & 8#022) == 0 )) || die "$path is writable by others (mode $mode); remove it and" \
    "start again"
}

# The state directory, its folders and the munge key: root's own, or nothing is started.
check_state() {
  local parent entry key=$state/munge/munge.key mode powner pmode
  if [[ ! -e $state && ! -L $state ]]; then
    [[ ${1:-} == create ]] || return 0
    parent=$(dirname -- "$state")
    read -r powner pmode < <(stat -c '%u %a' -- "$parent")
    # Its parent may be writable by others only when sticky (/var/tmp): then nobody else can
    # rename or replace what root makes in it.
    if [[ $powner != 0 ]] || (( (8#$pmode & 8#022) != 0 && (8#$pmode & 8#1000) == 0 )); then
      die "$parent is not root's own, or others may replace entries in it (mode $pmode):" \
        "choose another TCPLIMITS_SLURM_STATE"
    fi
    mkdir -m 700 -- "$state"
  fi
  root_only "$state"
  for entry in "$state"/*; do
    [[ -e $entry || -L $entry ]] || continue
    root_only "$entry"
  done
  if [[ -e $key || -L $key ]]; then
    root_only "$key"
    [[ -f $key ]] || die "$key is not a regular file: remove it and start again"
    mode=$(stat -c %a -- "$key")
    [[ $mode == 600 || $mode == 400 ]] || die "$key has mode $mode, readable by others:" \
      "whoever read it can forge credentials; remove it and start again"
  fi
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll COMMAND until it succeeds
  local seconds=$1 what=$2 i
  shift 2
  for ((i = 0; i < seconds * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "$what did not happen within ${seconds}s; see the logs in $state/log"
}

write_config() {
  # 755 whatever the umask: check_state refuses folders others may write
  mkdir -p -m 755 "$state"/{etc,run,log,ctld,slurmd,munge,mysql}
  # Other users reach the munge socket (jobs run as their submitter); the key stays 0600.
  chmod 755 "$state" "$state/munge"
  local cpus memory
  # `slurmd -C` prints the node line Slurm itself would detect: CPUs, sockets, cores, memory.
  read -r cpus memory < <(slurmd -C | awk '/^NodeName/ {
      for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      print v["CPUs"], v["RealMemory"] }')
  [[ $cpus =~ ^[0-9]+$ && $memory =~ ^[0-9]+$ ]] || die "slurmd -C did not report CPUs and memory"
  cat >"$state/etc/slurm.conf.new" <<EOF
# Generated by scripts/slurm-local.sh: a one-node cluster on $node.
ClusterName=$cluster
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$state/munge/munge.socket
CryptoType=crypto/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
# No cgroups: the jobs are containers on the node's Docker engine, which limits them itself.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Job accounting through slurmdbd: the executor plugin reads job states with sacct.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
# (for slurmdbd connections this names the munge socket: the commands would use the default)
AccountingStoragePass=$state/munge/munge.socket
JobCompType=jobcomp/none
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=$partition Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$state/etc/slurmdbd.conf.new" <<EOF
# Generated by scripts/slurm-local.sh: accounting for the cluster $cluster.
AuthType=auth/munge
AuthInfo=socket=$state/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
PidFile=$state/run/slurmdbd.pid
LogFile=$state/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  local f
  for f in slurm.conf slurmdbd.conf; do
    mv "$state/etc/$f.new" "$state/etc/$f"
  done
  chmod 600 "$state/etc/slurmdbd.conf"  # slurmdbd refuses a readable one (it holds a password)
}

start_munge() {
  [[ -n $(running_pid munged) ]] && return 0
  [[ -s $state/munge/munge.key ]] || mungekey --create --keyfile="$state/munge/munge.key" 2>/dev/null
  chmod 600 "$state/munge/munge.key"
  munged --key-file="$state/munge/munge.key" --socket="$state/munge/munge.socket" \
    --pid-file="$state/run/munged.pid" --log-file="$state/log/munged.log" \
    --seed-file="$state/munge/munged.seed" --force
  wait_for 10 "munged answering" test -S "$state/munge/munge.socket"
}

db() { mariadb --socket="$state/run/mysqld.sock" -u root "$@"; }

start_mariadb() {
  if [[ -z $(running_pid mariadbd) ]]; then
    if [[ ! -d $state/mysql/mysql ]]; then
      mariadb-install-db --datadir="$state/mysql" --user=root --auth-root-authentication-method=socket \
        --skip-test-db >"$state/log/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed: $state/log/mariadb-install.log"
    fi
    # Loopback only, on its own port and socket: never the machine's own MariaDB, if any.
    mariadbd --no-defaults --datadir="$state/mysql" --user=root --bind-address=127.0.0.1 \
      --port="$db_port" --socket="$state/run/mysqld.sock" --pid-file="$state/run/mariadbd.pid" \
      --log-error="$state/log/mariadb.log" --innodb-buffer-pool-size=64M \
      --skip-name-resolve >/dev/null 2>&1 &
    disown
    wait_for 60 "MariaDB answering" db -e "select 1"
  fi
  db -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_slurmdbd() {
  if [[ -z $(running_pid slurmdbd) ]]; then
    slurmdbd
    wait_for 60 "slurmdbd answering" sacctmgr -n list cluster
  fi
  # The cluster, an account and root as its user: sacct and the plugin's account checks
  # (sacctmgr list user) then answer as on a real cluster.
  sacctmgr -n -P list cluster format=cluster | grep -qx "$cluster" \
    || sacctmgr -i add cluster "$cluster" >/dev/null
  sacctmgr -n -P list account format=account | grep -qx "$cluster" \
    || sacctmgr -i add account "$cluster" Description="tcplimits local cluster" >/dev/null
  sacctmgr -n -P list user format=user | grep -qx root \
    || sacctmgr -i add user root Account="$cluster" >/dev/null
}

link_config() {
  if [[ -L $default_conf && $(readlink "$default_conf") == "$SLURM_CONF" ]]; then
    return 0
  fi
  [[ -e $default_conf || -L $default_conf ]] && die "$default_conf exists and is not this" \
    "cluster's: this machine has a Slurm configuration of its own; use that cluster"
  mkdir -p "$(dirname "$default_conf")"
  ln -s "$SLURM_CONF" "$default_conf"
}

unlink_config() {
  if [[ -L $default_conf && $(readlink "$default_conf") == "$SLURM_CONF" ]]; then
    rm -f "$default_conf"
  fi
}

node_state() { sinfo -h -n "$node" -o %T 2>/dev/null; }

start() {
  need_tools
  if [[ -n $(running_pid slurmctld) ]]; then
    log "already running (state: $state)"
  else
    write_config
  fi
  link_config
  start_munge
  start_mariadb
  start_slurmdbd
  local fresh_ctld=false
  [[ -n $(running_pid slurmctld) ]] || { slurmctld; fresh_ctld=true; }
  wait_for 60 "slurmctld answering" scontrol ping
  # `stop` cancels every job, so jobs found by a controller that was not running were left
  # by a cluster that died (killed, machine stopped): cancel them rather than run them again.
  if $fresh_ctld; then
    local leftover
    leftover=$(squeue -h -o %i 2>/dev/null || true)
    if [[ -n $leftover ]]; then
      log "cancelling jobs left by a cluster that did not stop cleanly: $(echo $leftover)"
      # shellcheck disable=SC2086
      scancel $leftover || true
    fi
  fi
  [[ -n $(running_pid slurmd) ]] || slurmd
  # A node that was down when the cluster stopped comes back as it was: resume it.
  if node_state | grep -qiE 'down|drain'; then
    scontrol update NodeName="$node" State=RESUME || true
  fi
  wait_for 60 "node $node idle" bash -c "sinfo -h -n '$node' -o %T | grep -qx idle"
  log "up: node $node ($(sinfo -h -n "$node" -o '%c CPUs, %m MB'), partition $partition)"
}

stop_daemons() {  # stop_daemons NAME...: TERM to each at once, wait, then KILL what is left
  local name pid i pids=()
  for name in "$@"; do
    pid=$(running_pid "$name")
    [[ -n $pid ]] && { kill "$pid" 2>/dev/null || true; pids+=("$name:$pid"); }
  done
  for ((i = 0; i < 150; i++)); do
    local alive=()
    for name in "${pids[@]}"; do [[ -d /proc/${name#*:} ]] && alive+=("$name"); done
    pids=("${alive[@]}")
    ((${#pids[@]} == 0)) && break
    sleep 0.2
  done
  for name in "${pids[@]}"; do
    log "${name%%:*} (${name#*:}) did not stop in 30 s: killing it"
    kill -9 "${name#*:}" 2>/dev/null || true
  done
  for name in "$@"; do rm -f "$state/run/$name.pid"; done
}

stop() {
  if [[ -n $(running_pid slurmctld) ]]; then
    # Jobs of this cluster first: their steps would otherwise outlive slurmd.
    local jobs
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [[ -n $jobs ]]; then
      log "cancelling jobs: $(echo $jobs)"
      # shellcheck disable=SC2086
      scancel $jobs || true
      wait_for 60 "jobs ending" bash -c '[[ -z $(squeue -h -o %i) ]]'
    fi
  fi
  # Each stage still needs the next: slurmctld reports to slurmdbd, which writes to MariaDB,
  # and all of them authenticate through munge.
  stop_daemons slurmd slurmctld
  stop_daemons slurmdbd
  stop_daemons mariadbd munged
  unlink_config
  log "stopped (state kept in $state)"
}

status() {
  local name pid up=0
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    pid=$(running_pid "$name")
    if [[ -n $pid ]]; then
      echo "$name: running (pid $pid)"
    else
      echo "$name: not running"
      up=1
    fi
  done
  if ((up == 0)); then
    echo "node $node: $(node_state)"
    [[ $(node_state) =~ ^(idle|mixed|allocated)$ ]] || up=1
  fi
  echo "configuration: $SLURM_CONF"
  return $up
}

case "${1:-}" in
  start) check_state create; start ;;
  stop) check_state; stop ;;
  status) check_state; status ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
