#!/bin/sh
# A one-node Slurm cluster on this machine, for tests and for trying cluster/slurm.yaml.
#
#   sudo cluster/slurm/setup-local-slurm.sh        # idempotent; safe to run again
#
# Installs Debian's slurmctld, slurmd, slurm-client and munge if missing, writes
# /etc/slurm/slurm.conf from what `slurmd -C` reports, starts munged, slurmctld and
# slurmd (no systemd needed) and waits until `sinfo` shows the node idle.
# Exits non-zero with a message when Slurm cannot be started here.
set -eu

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOG=/var/log/slurm
WAIT_SECONDS=${WAIT_SECONDS:-60}

fail() { echo "setup-local-slurm: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs packages and starts daemons)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sinfo >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || fail "slurm is not installed and apt-get is not available"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
        || { apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null 2>&1 && apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null; } \
        || fail "could not install slurmctld slurmd slurm-client munge with apt-get"
fi

# munge: the shared secret Slurm authenticates with
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge 2>/dev/null || true
chmod 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then mungekey --create --force >/dev/null 2>&1 || true; fi
    [ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
if ! pgrep -x munged >/dev/null; then
    if command -v runuser >/dev/null; then
        runuser -u munge -- munged || fail "munged did not start (see /var/log/munge/munged.log)"
    else
        su -s /bin/sh munge -c munged || fail "munged did not start (see /var/log/munge/munged.log)"
    fi
fi

# slurm.conf from the node's real topology
mkdir -p "$CONF_DIR" "$STATE" "$SPOOL" "$LOG"
NODE_LINE=$(slurmd -C 2>/dev/null | grep '^NodeName=' | sed 's/ UpTime=.*//') \
    || fail "'slurmd -C' could not read this node's topology"
[ -n "$NODE_LINE" ] || fail "'slurmd -C' printed no NodeName line"
NODE=$(echo "$NODE_LINE" | sed 's/^NodeName=\([^ ]*\).*/\1/')

NEW_CONF=$(mktemp)
cat >"$NEW_CONF" <<EOF
# written by cluster/slurm/setup-local-slurm.sh — a one-node cluster for tests
ClusterName=dsbuild-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=60
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF

if ! cmp -s "$NEW_CONF" "$CONF"; then
    mv "$NEW_CONF" "$CONF"
    CHANGED=1
else
    rm -f "$NEW_CONF"
    CHANGED=0
fi
chmod 0644 "$CONF"

if [ "$CHANGED" -eq 1 ]; then
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    sleep 2
fi
pgrep -x slurmctld >/dev/null || slurmctld || fail "slurmctld did not start (see $LOG/slurmctld.log)"
pgrep -x slurmd >/dev/null || slurmd || fail "slurmd did not start (see $LOG/slurmd.log)"

waited=0
while :; do
    state=$(sinfo -h -n "$NODE" -o '%t' 2>/dev/null | head -n1 || true)
    case "$state" in
        idle|mix|alloc) break ;;
        down*|drain*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    [ "$waited" -lt "$WAIT_SECONDS" ] || fail "node $NODE is '${state:-unknown}' after ${WAIT_SECONDS}s, not idle (see $LOG/)"
    sleep 1
    waited=$((waited + 1))
done
echo "setup-local-slurm: node $NODE is $state ($(echo "$NODE_LINE" | sed 's/^NodeName=[^ ]* //'))"
