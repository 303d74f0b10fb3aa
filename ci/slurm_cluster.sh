#!/usr/bin/env bash
# Single-node SLURM cluster (with accounting) for CI and local tests.
#
#   ci/slurm_cluster.sh start           install if missing, configure, start, wait until usable
#   ci/slurm_cluster.sh stop [NAME...]  stop the named daemons (default: all five), slurmd first,
#                                       munged last; returns once their processes are gone
#   ci/slurm_cluster.sh running         print the daemons now running, one name a line
#   ci/slurm_cluster.sh status          exit 0 + one line if the controller is UP and the node idle (or busy)
#
# Daemons: munged mariadbd slurmdbd slurmctld slurmd. The pytest fixture (tests/slurm_fixtures.py)
# runs `running` before `start` and, at the end of the session, `stop` of those it started.
#
# Built for Debian 12 run as root without systemd (policy-rc.d blocks service starts, so
# every daemon is started by hand). Facts behind the choices: /work/shared/slurm-notes.md.
# Accounting (mariadb + slurmdbd) is not optional: the snakemake SLURM executor polls
# `sacct`, and without accounting it drops its jobs and hangs forever.
set -euo pipefail

LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
DB_PASS=slurm-ci-local       # only reachable on 127.0.0.1 of a throwaway CI machine
WAIT_S=${SLURM_CLUSTER_WAIT_S:-120}
HOST=$(hostname -s)
export DEBIAN_FRONTEND=noninteractive

log() { echo "slurm_cluster: $*"; }
die() { echo "slurm_cluster: ERROR: $*" >&2; exit 1; }

# wait_for DESCRIPTION CMD...: retry CMD once a second, give up after WAIT_S seconds.
wait_for() {
  local what=$1 deadline=$((SECONDS + WAIT_S)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${WAIT_S}s waiting for $what (logs: $LOG_DIR)"
    sleep 1
  done
}

# Daemons are tracked by pid file. alive PID NAME also checks the name (a stale pid file's
# pid may now be someone else's) and skips zombies (this container's init reaps lazily).
declare -A PIDFILE=(
  [munged]=/run/munge/munged.pid [mariadbd]=/run/mysqld/mysqld.pid
  [slurmdbd]=$RUN_DIR/slurmdbd.pid [slurmctld]=$RUN_DIR/slurmctld.pid [slurmd]=$RUN_DIR/slurmd.pid
)
alive() {
  local st; st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  [[ $st =~ ^$1\ \((.*)\)\ ([A-Z]) && ${BASH_REMATCH[1]} == "$2" && ${BASH_REMATCH[2]} != Z ]]
}
daemon_pid() {
  local pid; pid=$(cat "${PIDFILE[$1]}" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" "$1" && echo "$pid"
}
running() { daemon_pid "$1" >/dev/null; }

# slurm client commands can block for MessageTimeout when the controller is down.
sq() { timeout 15 "$@"; }
ctld_up() { sq scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { sq sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1; }
# A node running jobs (mixed/allocated/completing) is healthy too: `start` must not
# fail just because a workflow is using the cluster.
node_ok() { [[ $1 =~ ^(idle|mixed|allocated|completing)$ ]]; }
tcp_open() { timeout 2 bash -c "</dev/tcp/127.0.0.1/$1"; }

install_packages() {
  local pkgs=(slurmctld slurmd slurm-client munge mariadb-server slurmdbd) missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]}"
  # A fresh CI image may have no package lists yet: update once and retry.
  { apt-get install -y --no-install-recommends "${pkgs[@]}" || { apt-get update &&
    apt-get install -y --no-install-recommends "${pkgs[@]}"; }; } </dev/null >"$LOG_DIR/apt.log" 2>&1 ||
    die "apt-get install failed (see $LOG_DIR/apt.log)"
}

# write_file PATH MODE: install stdin as PATH only if it differs; return 0 if it changed.
write_file() {
  local tmp; tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $1 ]] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  install -m "$2" "$tmp" "$1" && rm -f "$tmp"
}

write_configs() {
  # Node line from the real hardware, but with 90% of the memory so slurmd never
  # registers with less than configured (which would DRAIN the node).
  local node mem conf_changed=false
  node=$(slurmd -C | head -n1) || die "slurmd -C failed"
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  node=$(sed -e "s/^NodeName=[^ ]*/NodeName=$HOST NodeAddr=127.0.0.1/" \
    -e "s/RealMemory=[0-9]*/RealMemory=$((mem * 9 / 10))/" <<<"$node")
  write_file /etc/slurm/slurm.conf 644 <<EOF && conf_changed=true
# Written by ci/slurm_cluster.sh: single-node CI cluster. Do not edit by hand.
ClusterName=localci
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
MailProg=/bin/true
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=${PIDFILE[slurmctld]}
SlurmdPidFile=${PIDFILE[slurmd]}
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# No usable cgroups here: track processes through /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# Keep --comment in accounting: the snakemake executor writes rule_<name>_wildcards_<...> there.
AccountingStoreFlags=job_comment
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job with no --mem takes the whole node and serialises the rest.
DefMemPerCPU=1000
MinJobAge=3600
SlurmdTimeout=300
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  # slurmdbd refuses a config readable by others (it holds the DB password).
  write_file /etc/slurm/slurmdbd.conf 600 <<EOF || true
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
PidFile=${PIDFILE[slurmdbd]}
LogFile=$LOG_DIR/slurmdbd.log
EOF
  # A changed node/cluster layout needs a restart of the running slurm daemons.
  if $conf_changed && { running slurmctld || running slurmd; }; then
    log "slurm.conf changed: restarting slurmctld and slurmd"
    stop_daemon slurmd; stop_daemon slurmctld
  fi
}

start_munge() {
  install -d -o munge -g munge -m 755 /run/munge
  [[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create
  # Log files are created here because munged/mariadbd run as their own users.
  touch "$LOG_DIR/munged.log" && chown munge "$LOG_DIR/munged.log"
  running munged || { log "starting munged"
    runuser -u munge -- munged --log-file="$LOG_DIR/munged.log" </dev/null >>"$LOG_DIR/munged.log" 2>&1 ||
      die "munged failed to start (see $LOG_DIR/munged.log)"; }
  wait_for "munge" bash -c 'munge -n | unmunge'
}

start_mariadb() {
  install -d -o mysql -g mysql -m 755 /run/mysqld
  touch "$LOG_DIR/mariadbd.log" && chown mysql "$LOG_DIR/mariadbd.log"
  running mariadbd || { log "starting mariadbd"
    setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 \
      --pid-file="${PIDFILE[mariadbd]}" --log-error="$LOG_DIR/mariadbd.log" \
      --innodb-buffer-pool-size=512M --innodb-lock-wait-timeout=900 </dev/null >>"$LOG_DIR/mariadbd.log" 2>&1 & }
  wait_for "mariadb" mariadb-admin ping
  # ALTER USER too: a user left from an older run with another password would make
  # slurmdbd retry forever with "Access denied". Root logs in via the unix socket.
  mariadb <<EOF || die "database setup failed"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

# start_slurm_daemon NAME: the slurm daemons fork into the background themselves.
start_slurm_daemon() {
  running "$1" && return 0
  log "starting $1"
  "/usr/sbin/$1" </dev/null >>"$LOG_DIR/$1.stdout" 2>&1 || die "$1 failed to start (see $LOG_DIR/$1.log)"
}

cmd_start() {
  local t0=$SECONDS state err
  mkdir -p "$LOG_DIR" "$RUN_DIR" /var/spool/slurmctld /var/spool/slurmd
  install_packages
  # The package makes $LOG_DIR slurm-owned, but munged refuses to log under a directory
  # not owned by root or munge; all slurm daemons here run as root anyway.
  chown root:root "$LOG_DIR"
  write_configs
  start_munge
  start_mariadb
  start_slurm_daemon slurmdbd
  wait_for "slurmdbd on port 6819" tcp_open 6819
  start_slurm_daemon slurmctld   # registers cluster "localci" in the accounting DB itself
  wait_for "slurmctld (scontrol ping)" ctld_up
  start_slurm_daemon slurmd
  # A node left DOWN/DRAINED by an earlier run never returns by itself: resume it.
  local deadline=$((SECONDS + WAIT_S))
  until state=$(node_state); node_ok "$state"; do
    ((SECONDS < deadline)) || die "node $HOST is '${state:-unknown}', not usable, after ${WAIT_S}s (logs: $LOG_DIR)"
    if [[ $state =~ down|drain|fail ]]; then
      log "node $HOST is $state: resuming"
      sq scontrol update NodeName="$HOST" State=RESUME || true
    fi
    sleep 1
  done
  # The snakemake executor polls sacct: it must work, not say "accounting disabled".
  err=$(sacct -n -X -S now-1hours -o JobID 2>&1 >/dev/null) || die "sacct does not work: $err"
  log "cluster up in $((SECONDS - t0))s"
  cmd_status
}

# Dependency order: each daemon needs the ones before it. Stopping goes the other way.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

# stop_daemon NAME: SIGTERM via its pid file, wait until the process has exited (30 s), then
# SIGKILL and wait again (10 s); fail if it still runs. Appends the pid to STOPPED.
STOPPED=()
stop_daemon() {
  local pid i
  pid=$(daemon_pid "$1") || return 0
  log "stopping $1 (pid $pid)"
  STOPPED+=("$pid")
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 150; i++)); do
    alive "$pid" "$1" || return 0
    sleep 0.2
  done
  log "$1 ignored SIGTERM for 30s: killing it"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive "$pid" "$1" || return 0
    sleep 0.2
  done
  die "$1 (pid $pid) is still running after SIGKILL"
}

cmd_stop() {
  local d i n pid left
  for d in "$@"; do
    [[ " ${DAEMONS[*]} " == *" $d "* ]] || die "unknown daemon '$d' (known: ${DAEMONS[*]})"
  done
  (($#)) || set -- "${DAEMONS[@]}"
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    d=${DAEMONS[i]}
    for n in "$@"; do [[ $n == "$d" ]] && stop_daemon "$d"; done
  done
  # The daemons were reparented to init, which reaps lazily (about a second here): wait
  # (10 s at most) until their zombies are gone too, so nothing of them is left in ps.
  for ((i = 0; i < 50; i++)); do
    left=()
    for pid in "${STOPPED[@]}"; do [[ -e /proc/$pid ]] && left+=("$pid"); done
    ((${#left[@]})) || break
    sleep 0.2
  done
  ((${#left[@]} == 0)) || log "exited, but not yet reaped by their parent: pids ${left[*]}"
  log "stopped: $*"
}

cmd_running() {
  local d
  for d in "${DAEMONS[@]}"; do
    if running "$d"; then echo "$d"; fi
  done
}

cmd_status() {
  local state
  command -v scontrol >/dev/null || { echo "slurm_cluster: not installed"; return 1; }
  ctld_up || { echo "slurm_cluster: slurmctld is not responding"; return 1; }
  state=$(node_state)
  node_ok "$state" || { echo "slurm_cluster: controller UP, node $HOST is '${state:-missing}'"; return 1; }
  echo "slurm_cluster: controller UP, node $HOST $state, $(sinfo -h -N -n "$HOST" -o '%c CPUs, %m MB')"
}

case ${1:-} in
  start) cmd_start ;;
  stop) shift; cmd_stop "$@" ;;
  running) cmd_running ;;
  status) cmd_status ;;
  *) echo "usage: $0 start | stop [NAME...] | running | status" >&2; exit 2 ;;
esac
