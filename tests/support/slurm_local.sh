#!/usr/bin/env bash
# Local Slurm "cluster" for CI and tests: one slurmctld, two slurmd (n1, n2) on
# this machine, plus slurmdbd + MariaDB so that `sacct` (used by submitit to
# read job states) works.  Needs root; tested on Debian 12 without systemd.
#
#   bash tests/support/slurm_local.sh install   # apt packages only (skipped if present)
#   bash tests/support/slurm_local.sh start     # install if needed, configure, start, wait for idle nodes
#   bash tests/support/slurm_local.sh stop      # stop our daemons (by pid file)
#   bash tests/support/slurm_local.sh status    # daemons + sinfo
#   bash tests/support/slurm_local.sh env       # shell exports needed by clients (none by default)
#   bash tests/support/slurm_local.sh purge     # stop, then delete the whole base dir
#
# State (spool, state save, MariaDB data, logs, pid files) lives under
# $ENERGY_AT_SLURM_DIR (default /tmp/energy-at-slurm).  The config goes to
# /etc/slurm/slurm.conf and /etc/slurm/slurmdbd.conf, the paths Slurm reads by
# default, so plain sbatch/sinfo/submitit work from any process without extra
# env.  Consequence: one such cluster per machine; `stop` it before switching
# ENERGY_AT_SLURM_DIR (the mysql user must be able to traverse that path).
set -euo pipefail

DEFAULT_BASE=/tmp/energy-at-slurm
BASE=${ENERGY_AT_SLURM_DIR:-$DEFAULT_BASE}
ETC=/etc/slurm
START_TIMEOUT_S=${ENERGY_AT_SLURM_TIMEOUT:-90}   # bound on every wait below

CLUSTER=ci
SLURMD_NODES=(n1 n2)
SLURMD_PORTS=(17001 17002)
DB_PORT=17306             # own MariaDB on a non-standard port: never clashes with a system one
DB_USER=slurm
DB_PASS=slurm_local_ci    # local-only, bound to 127.0.0.1
DB_NAME=slurm_acct_db

PKGS=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
# One binary per package, to tell cheaply whether the install already happened.
BINS=(slurmctld slurmd sbatch munged slurmdbd mariadbd)

RUN=$BASE/run
LOG=$BASE/log
MYSQL_RUN=$RUN/mysqld     # must be owned by mysql, else mariadbd cannot write its pid file (then segfaults)
MYSQL_SOCK=$MYSQL_RUN/mysqld.sock

say() { echo "[slurm_local] $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- helpers
# True when the pid in $2 is alive AND is the program $1 (guards against
# stale pid files whose pid got reused by something else).
alive() {
    local name=$1 pidfile=$2 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]
}

any_alive() {
    local pid
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done
    return 1
}

# stop_pidfiles NAME:PIDFILE...: TERM all of them at once (stopping one by
# one takes 1-3 s each), wait up to 15 s, then KILL leftovers. Never by name.
stop_pidfiles() {
    local spec name pidfile pid i pids=()
    for spec in "$@"; do
        name=${spec%%:*} pidfile=${spec#*:}
        if alive "$name" "$pidfile"; then
            pid=$(<"$pidfile")
            say "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        rm -f "$pidfile"
    done
    for ((i = 0; i < 150; i++)); do
        any_alive "${pids[@]}" || return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            say "pid $pid did not exit on TERM, sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

# wait_for DESCRIPTION LOGFILE CMD...: retry CMD until it succeeds or timeout.
wait_for() {
    local what=$1 logfile=$2
    shift 2
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            say "timed out after ${START_TIMEOUT_S}s waiting for $what"
            show_log "$logfile"
            exit 1
        fi
        sleep 0.2
    done
}

show_log() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        echo "----- tail -n 25 $f" >&2
        tail -n 25 "$f" >&2 || true
    done
}

installed() {
    local b
    for b in "${BINS[@]}"; do
        command -v "$b" >/dev/null 2>&1 || [[ -x /usr/sbin/$b ]] || return 1
    done
}

# ---------------------------------------------------------------- install
cmd_install() {
    if installed; then
        say "packages already installed"
        return 0
    fi
    [[ $(id -u) == 0 ]] || die "install needs root"
    export DEBIAN_FRONTEND=noninteractive
    # Fresh containers often ship without package lists.
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt-get update -qq
    fi
    # "invoke-rc.d: policy-rc.d denied execution of start" is expected: nothing
    # starts by itself here, `start` launches every daemon by hand.
    # A failure may be stale lists (404 on a superseded .deb): update once, retry.
    if ! apt-get install -y -qq --no-install-recommends "${PKGS[@]}"; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${PKGS[@]}"
    fi
    installed || die "packages installed but binaries still missing: ${BINS[*]}"
}

# ---------------------------------------------------------------- config
ensure_hostname() {
    local h
    h=$(hostname)
    # slurmctld and slurmd resolve SlurmctldHost / NodeHostname.
    if ! getent hosts "$h" >/dev/null; then
        say "adding '127.0.0.1 $h' to /etc/hosts"
        echo "127.0.0.1 $h" >>/etc/hosts
    fi
}

render_slurm_conf() {
    local host cpus mem hw i
    host=$(hostname)
    # `slurmd -C` prints this machine's hardware; each fake node claims all of it.
    hw=$(slurmd -C | head -n 1)
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    [[ -n $cpus && -n $mem ]] || die "cannot parse 'slurmd -C' output: $hw"
    cat <<EOF
# Generated by tests/support/slurm_local.sh -- edits are overwritten on next start.
ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Default credential lifetime (120 s) delays every requeue by ~145 s.
AuthInfo=cred_expire=10
# No cgroup plugins in CI containers: track processes via /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
# Schedule immediately instead of batching submissions (tests submit and wait).
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
SelectType=select/cons_tres
# Cores only: CR_Core_Memory without DefMemPerCPU hands each job the whole node.
SelectTypeParameters=CR_Core
# A node that was DOWN comes back as soon as its slurmd registers.
ReturnToService=2
# Allow requeue (submitit requeues Checkpointable jobs on timeout/preemption).
JobRequeue=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
# No mail in CI; avoids "Configured MailProg is invalid" at every start.
MailProg=/bin/true
StateSaveLocation=$BASE/state
# %n = node name: each slurmd needs its own spool, pid file and log.
SlurmdSpoolDir=$BASE/spool/slurmd-%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
EOF
    # Two slurmd on one host (Debian builds with multiple-slurmd): distinct
    # node names and ports, same address.
    for i in "${!SLURMD_NODES[@]}"; do
        echo "NodeName=${SLURMD_NODES[$i]} NodeHostname=$host NodeAddr=127.0.0.1 Port=${SLURMD_PORTS[$i]} CPUs=$cpus RealMemory=$mem State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=$(IFS=,; echo "${SLURMD_NODES[*]}") Default=YES MaxTime=7-00:00:00 State=UP"
}

render_slurmdbd_conf() {
    cat <<EOF
# Generated by tests/support/slurm_local.sh -- edits are overwritten on next start.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
# TCP to our own MariaDB instance (see DB_PORT).
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
}

# write_if_changed FILE MODE CONTENT -> returns 0 if the file changed.
write_if_changed() {
    local file=$1 mode=$2 content=$3
    if [[ -f $file ]] && [[ $(<"$file") == "$content" ]]; then
        return 1
    fi
    mkdir -p "$(dirname "$file")"
    printf '%s\n' "$content" >"$file.tmp"
    chmod "$mode" "$file.tmp"
    mv "$file.tmp" "$file"
    return 0
}

# ---------------------------------------------------------------- daemons
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    # A munged that already works (ours or the system's) is reused.
    munge_ok && return 0
    say "starting munged"
    mkdir -p /run/munge "$RUN/munge" "$LOG"
    chown munge:munge /run/munge "$RUN/munge"   # munged runs as munge and writes socket/pid here
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key              # munged refuses a key readable by others
    runuser -u munge -- /usr/sbin/munged --pid-file="$RUN/munge/munged.pid" \
        </dev/null >>"$LOG/munged.stderr" 2>&1
    wait_for "munge" "$LOG/munged.stderr" munge_ok
}

db_admin() { mariadb --no-defaults --protocol=socket --socket="$MYSQL_SOCK" -uroot "$@"; }

start_mariadb() {
    alive mariadbd "$MYSQL_RUN/mysqld.pid" && return 0
    mkdir -p "$BASE/mysql" "$MYSQL_RUN" "$LOG"
    chmod 755 "$BASE" "$RUN"                    # mysql user must traverse to its dirs
    chown mysql:mysql "$BASE/mysql" "$MYSQL_RUN"
    if [[ ! -d $BASE/mysql/mysql ]]; then
        say "initialising MariaDB data dir"
        mariadb-install-db --no-defaults --user=mysql --datadir="$BASE/mysql" \
            --skip-test-db --auth-root-authentication-method=socket \
            >>"$LOG/mariadb-install.log" 2>&1 || { show_log "$LOG/mariadb-install.log"; die "mariadb-install-db failed"; }
    fi
    say "starting mariadbd"
    # --no-defaults: ignore /etc/mysql (system instance settings); setsid + no
    # inherited stdio so callers capturing our output do not hang on the pipe.
    setsid mariadbd --no-defaults --user=mysql --datadir="$BASE/mysql" \
        --socket="$MYSQL_SOCK" --pid-file="$MYSQL_RUN/mysqld.pid" \
        --port=$DB_PORT --bind-address=127.0.0.1 --skip-name-resolve \
        </dev/null >>"$LOG/mariadb.log" 2>&1 &
    wait_for "mariadbd" "$LOG/mariadb.log" db_admin -e 'SELECT 1'
    # Idempotent DB/user setup (--skip-name-resolve: TCP clients are '127.0.0.1').
    db_admin <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
EOF
}

start_slurmdbd() {
    alive slurmdbd "$RUN/slurmdbd.pid" && return 0
    say "starting slurmdbd"
    slurmdbd </dev/null >>"$LOG/slurmdbd.stderr" 2>&1   # forks into the background itself
    wait_for "slurmdbd (sacctmgr show cluster)" "$LOG/slurmdbd.log" sacctmgr -n show cluster
}

start_slurmctld() {
    alive slurmctld "$RUN/slurmctld.pid" && return 0
    say "starting slurmctld"
    slurmctld </dev/null >>"$LOG/slurmctld.stderr" 2>&1
    wait_for "slurmctld (scontrol ping)" "$LOG/slurmctld.log" \
        bash -c 'scontrol ping | grep -q "is UP"'
}

start_slurmd() {
    local node=$1
    alive slurmd "$RUN/slurmd-$node.pid" && return 0
    say "starting slurmd -N $node"
    slurmd -N "$node" </dev/null >>"$LOG/slurmd-$node.stderr" 2>&1
}

# Wait until every node is usable: idle (or mixed/allocated/completing when
# jobs are already running on a re-start). DOWN/DRAIN nodes get resumed.
wait_nodes_ready() {
    local t0=$SECONDS deadline=$((SECONDS + START_TIMEOUT_S)) states node state ready dead
    while true; do
        states=$(sinfo -h -N -o '%N %T' 2>/dev/null || true)
        ready=0
        while read -r node state; do
            [[ -n $node ]] || continue
            case $state in
                idle | mixed | allocated | completing) ready=$((ready + 1)) ;;
                down | drained | draining | drain | fail | failing)
                    # (A '*' suffix = slurmd not responding yet: just keep waiting.)
                    scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true ;;
            esac
        done <<<"$states"
        ((ready == ${#SLURMD_NODES[@]})) && return 0
        # A slurmd that died (bad config, port in use) will never register:
        # fail now instead of at the deadline (after a grace period for its pid file).
        dead=
        if ((SECONDS - t0 >= 3)); then
            for node in "${SLURMD_NODES[@]}"; do
                alive slurmd "$RUN/slurmd-$node.pid" || dead+=" $node"
            done
        fi
        if [[ -n $dead ]] || ((SECONDS >= deadline)); then
            if [[ -n $dead ]]; then say "slurmd exited for node(s):$dead"; fi
            say "nodes not ready after $((SECONDS - t0))s; sinfo says:"
            echo "$states" >&2
            scontrol show node 2>/dev/null | grep -E 'NodeName|State=|Reason' >&2 || true
            show_log "$LOG/slurmctld.log" "$LOG"/slurmd-*.log "$LOG"/slurmd-*.stderr
            exit 1
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------- commands
cmd_start() {
    [[ $(id -u) == 0 ]] || die "start needs root"
    local t0=$SECONDS conf_changed=0 node
    installed || cmd_install
    ensure_hostname
    mkdir -p "$BASE/state" "$RUN" "$LOG"
    for node in "${SLURMD_NODES[@]}"; do mkdir -p "$BASE/spool/slurmd-$node"; done

    write_if_changed "$ETC/slurm.conf" 644 "$(render_slurm_conf)" && conf_changed=1
    write_if_changed "$ETC/slurmdbd.conf" 600 "$(render_slurmdbd_conf)" && conf_changed=1
    if ((conf_changed)); then
        # Daemons running with an older config would disagree with the file.
        say "config written to $ETC; restarting any running slurm daemons"
        stop_slurm
    fi

    start_munge
    start_mariadb
    start_slurmdbd
    start_slurmctld
    for node in "${SLURMD_NODES[@]}"; do start_slurmd "$node"; done
    wait_nodes_ready
    say "cluster '$CLUSTER' ready (nodes ${SLURMD_NODES[*]}, base $BASE) in $((SECONDS - t0))s"
}

stop_slurm() {
    local node specs=()
    for node in "${SLURMD_NODES[@]}"; do specs+=("slurmd:$RUN/slurmd-$node.pid"); done
    stop_pidfiles "${specs[@]}" "slurmctld:$RUN/slurmctld.pid"
    # After slurmctld, so it can flush pending accounting records to slurmdbd.
    stop_pidfiles "slurmdbd:$RUN/slurmdbd.pid"
}

cmd_stop() {
    stop_slurm
    # Only a munged we started has its pid file here; a system munged is left alone.
    stop_pidfiles "mariadbd:$MYSQL_RUN/mysqld.pid" "munged:$RUN/munge/munged.pid"
    say "stopped"
}

cmd_purge() {
    cmd_stop
    # Guard against an empty/odd override wiping something important.
    [[ $BASE == /*/* ]] || die "refusing to delete suspicious base dir '$BASE'"
    rm -rf "$BASE"
    say "removed $BASE"
}

cmd_status() {
    local rc=0 node
    st() { if alive "$1" "$2"; then echo "$3: running (pid $(<"$2"))"; else echo "$3: stopped"; rc=1; fi; }
    if munge_ok; then echo "munge: ok"; else echo "munge: not working"; rc=1; fi
    st mariadbd "$MYSQL_RUN/mysqld.pid" mariadbd
    st slurmdbd "$RUN/slurmdbd.pid" slurmdbd
    st slurmctld "$RUN/slurmctld.pid" slurmctld
    for node in "${SLURMD_NODES[@]}"; do st slurmd "$RUN/slurmd-$node.pid" "slurmd $node"; done
    if alive slurmctld "$RUN/slurmctld.pid"; then sinfo -N -o '%N %P %T %c %m' || rc=1; fi
    return $rc
}

cmd_env() {
    # Config is at Slurm's default path, so clients need no environment.
    # Only a non-default base dir is worth exporting (for later stop/status).
    if [[ $BASE != "$DEFAULT_BASE" ]]; then
        echo "export ENERGY_AT_SLURM_DIR=$BASE"
    fi
}

case ${1:-} in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    purge) cmd_purge ;;
    *)
        echo "usage: $0 {install|start|stop|status|env|purge}" >&2
        exit 2
        ;;
esac
