#!/usr/bin/env bash
# Quickstart: prepares the machine, builds Citadel, starts one citadel-server on the embedded
# etcd (fresh data dir .citadel/quickstart, so a new admin key is printed), joins a local
# citadel-agent, runs a one-time task in a locked-down container and prints its output, then
# creates a cron task and shows its first executions.
#
# Usage: bash scripts/quickstart.sh [--once]
#   (default)  keep the server running until Ctrl-C
#   --once     stop everything and exit 0 once the demo has printed (for scripts and CI)
#
# Run as root on a fresh Debian 12 machine: scripts/setup.sh installs Debian packages.
# Whatever this script starts is stopped on every exit path (Ctrl-C, SIGTERM, failure).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }

once=0
for arg in "$@"; do
  case $arg in
    --once) once=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "quickstart: unknown argument: $arg" >&2
      usage >&2
      exit 2
      ;;
  esac
done

host=127.0.0.1
port=7443
metrics_port=9464
worker_port=7444
data_dir=$repo/.citadel/quickstart
log=$data_dir/server.log
agent_dir=$data_dir/agent
agent_log=$data_dir/agent.log
ready_timeout_s=60
executions_timeout_s=60

server_pid=''
agent_pid=''
server_started=0
stopping_pid=''
phase=setup # setup | running | stopping

say() { printf '==> %s\n' "$*"; }

# Whether something accepts TCP connections on $host:$1.
port_busy() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

# Kills an etcd left behind in $data_dir by a crashed server, using the pid file the server keeps
# there; checks the process really is that etcd before killing it.
stop_leftover_etcd() {
  local pid_file=$data_dir/etcd/etcd.pid pid
  [[ -r $pid_file ]] || return 0
  pid=$(<"$pid_file")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 0
  if tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "--data-dir=$data_dir/etcd"; then
    echo "quickstart: stopping leftover etcd (pid $pid)" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

# Stops the server with SIGTERM (it resigns, drains and stops its embedded etcd); SIGKILL after
# 30 s if it hangs.
stop_server() {
  [[ -n $server_pid ]] || return 0
  local pid=$server_pid watchdog
  server_pid=''
  stopping_pid=$pid
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping citadel-server (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    (
      sleep 30
      echo "quickstart: citadel-server did not stop within 30 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null
    ) &
    watchdog=$!
    wait "$pid" 2>/dev/null || true
    # Again, in case a second Ctrl-C interrupted the first wait.
    wait "$pid" 2>/dev/null || true
    kill "$watchdog" 2>/dev/null || true
    wait "$watchdog" 2>/dev/null || true
  else
    wait "$pid" 2>/dev/null || true
  fi
  stopping_pid=''
  stop_leftover_etcd
}

# Stops the agent with SIGTERM (it aborts what it runs and removes its containers).
stop_agent() {
  [[ -n $agent_pid ]] || return 0
  local pid=$agent_pid
  agent_pid=''
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping citadel-agent (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

show_log() {
  if ((server_started == 1)) && [[ -s $log ]]; then
    echo "---- last 30 lines of $log ----" >&2
    tail -n 30 "$log" >&2
    echo "----" >&2
  fi
}

on_exit() {
  local rc=$?
  trap - EXIT
  if ((rc != 0)) && [[ $phase != stopping ]]; then
    echo "quickstart: failed (exit $rc)" >&2
    show_log
  fi
  stop_agent
  stop_server
  exit "$rc"
}

on_signal() {
  local signal=$1
  if [[ -n $stopping_pid ]]; then
    # A second Ctrl-C while the server shuts down: kill it now (its etcd dies with it).
    echo "quickstart: $signal again; killing citadel-server" >&2
    kill -KILL "$stopping_pid" 2>/dev/null || true
    return
  fi
  if [[ $phase == running ]]; then
    # The requested way to stop: not a failure.
    echo
    phase=stopping
    exit 0
  fi
  phase=stopping
  echo "quickstart: interrupted by $signal" >&2
  exit 130
}

trap on_exit EXIT
trap 'on_signal SIGINT' INT
trap 'on_signal SIGTERM' TERM

fail() {
  echo "quickstart: $*" >&2
  exit 1
}

# Runs citadelctl against the quickstart server.
citadelctl() {
  CITADEL_SERVER=localhost:$port \
    CITADEL_CA=$data_dir/ca.crt \
    CITADEL_API_KEY_FILE=$data_dir/admin.key \
    node "$repo/dist/cli/main.js" "$@"
}

# Runs citadel-agent from the build.
citadel_agent() {
  node "$repo/dist/agent/main.js" "$@"
}

# Prints field $1 (a dotted path, e.g. task.id) of the JSON document on standard input.
json_field() {
  node -e '
    let s = "";
    process.stdin.on("data", (d) => (s += d)).on("end", () => {
      let v = JSON.parse(s);
      for (const k of process.argv[1].split(".")) v = v?.[k];
      process.stdout.write(String(v ?? ""));
    });' "$1"
}

say "preparing the machine (scripts/setup.sh)"
bash scripts/setup.sh

say "building (npm run build)"
npm run build --silent

for p in "$port" "$worker_port" "$metrics_port"; do
  if port_busy "$p"; then
    fail "port $p on $host is already in use (another citadel-server or quickstart?); stop it first"
  fi
done

say "starting citadel-server (data dir $data_dir, log $log)"
stop_leftover_etcd
rm -rf "$data_dir"
mkdir -p "$(dirname "$data_dir")"
mkdir -m 700 "$data_dir"
# Its own session, so a Ctrl-C on the terminal reaches only this script, which then stops the
# server with one SIGTERM. The admin key is printed once, on the server's stderr.
setsid node dist/server/main.js \
  --data-dir "$data_dir" \
  --listen "$host:$port" \
  --worker-listen "$host:$worker_port" \
  --metrics-addr "$host:$metrics_port" \
  >"$log" </dev/null &
server_pid=$!
server_started=1

deadline=$((SECONDS + ready_timeout_s))
until grep -q '"msg":"citadel-server ready"' "$log" 2>/dev/null; do
  kill -0 "$server_pid" 2>/dev/null || fail "citadel-server exited before it was ready"
  ((SECONDS < deadline)) || fail "citadel-server not ready within ${ready_timeout_s} s"
  sleep 0.2
done
say "citadel-server ready on $host:$port (metrics on http://$host:$metrics_port/metrics)"

say "joining a local worker (citadel-agent, data dir $agent_dir)"
token_json=$(citadelctl token create --expires 10m --description quickstart -o json 2>/dev/null)
token=$(json_field token <<<"$token_json")
ca_hash=$(json_field caHash <<<"$token_json")
[[ -n $token && -n $ca_hash ]] || fail "token create printed no token"
rm -rf "$agent_dir"
citadel_agent join --server "localhost:$port" --token "$token" --ca-hash "$ca_hash" \
  --data-dir "$agent_dir" --hostname quickstart
setsid node "$repo/dist/agent/main.js" run --data-dir "$agent_dir" --slots 4 \
  >"$agent_log" </dev/null &
agent_pid=$!
deadline=$((SECONDS + ready_timeout_s))
until grep -q '"msg":"heartbeat accepted"' "$agent_log" 2>/dev/null; do
  kill -0 "$agent_pid" 2>/dev/null || fail "citadel-agent exited; see $agent_log"
  ((SECONDS < deadline)) || fail "citadel-agent not heartbeating within ${ready_timeout_s} s"
  sleep 0.2
done
citadelctl worker list

say "creating a one-time task that runs now in a container (type container)"
once_json=$(citadelctl task create --type container \
  --payload '{"argv":["echo","hello from a locked-down container"]}' -o json)
once_id=$(json_field task.id <<<"$once_json")
[[ -n $once_id ]] || fail "task create printed no task id"
echo "    created $once_id"

say "creating a cron task (every 5 seconds, Europe/Berlin) that prints the date in a container"
cron_json=$(citadelctl task create --type container --payload '{"argv":["date","-u"]}' \
  --cron '*/5 * * * * *' --tz Europe/Berlin --label env=quickstart -o json)
cron_id=$(json_field task.id <<<"$cron_json")
[[ -n $cron_id ]] || fail "task create printed no task id"
echo "    created $cron_id"

say "listing tasks"
citadelctl task list

say "waiting for the one-time task to finish (at most ${executions_timeout_s} s)"
deadline=$((SECONDS + executions_timeout_s))
while :; do
  exec_json=$(citadelctl execution list --task "$once_id" -o json)
  state=$(node -e '
    let s = "";
    process.stdin.on("data", (d) => (s += d)).on("end", () => {
      const e = (JSON.parse(s).executions ?? [])[0];
      process.stdout.write(e?.state ?? "");
    });' <<<"$exec_json")
  case $state in
    EXECUTION_STATE_SUCCEEDED) break ;;
    EXECUTION_STATE_FAILED | EXECUTION_STATE_TIMED_OUT | EXECUTION_STATE_LOST | EXECUTION_STATE_CANCELLED)
      citadelctl execution list --task "$once_id"
      fail "the one-time task ended $state" ;;
  esac
  ((SECONDS < deadline)) || fail "the one-time task did not finish within ${executions_timeout_s} s (state ${state:-none})"
  sleep 0.5
done
citadelctl execution list --task "$once_id"
printf '    its output: '
node -e '
  let s = "";
  process.stdin.on("data", (d) => (s += d)).on("end", () => {
    const e = JSON.parse(s).executions[0];
    process.stdout.write(Buffer.from(e.result?.stdout ?? "", "base64").toString());
  });' <<<"$exec_json"

say "waiting for the cron task's first two executions (at most ${executions_timeout_s} s)"
deadline=$((SECONDS + executions_timeout_s))
count=0
while :; do
  count=$(citadelctl execution list --task "$cron_id" -o json |
    node -e 'let s="";process.stdin.on("data",(d)=>(s+=d)).on("end",()=>console.log((JSON.parse(s).executions??[]).length))')
  ((count >= 2)) && break
  ((SECONDS < deadline)) || fail "only $count execution(s) of $cron_id after ${executions_timeout_s} s"
  sleep 1
done
citadelctl execution list --task "$cron_id"

if ((once == 1)); then
  say "done (--once)"
  phase=stopping
  exit 0
fi

phase=running
cat <<EOF

Citadel is running; Ctrl-C stops it. To use citadelctl from another shell in $repo:

  export CITADEL_SERVER=localhost:$port
  export CITADEL_CA=$data_dir/ca.crt
  export CITADEL_API_KEY_FILE=$data_dir/admin.key
  node dist/cli/main.js task list

EOF
set +e
wait "$server_pid"
rc=$?
set -e
# Reached only when the server stopped by itself (a signal to this script exits in on_signal).
phase=setup
server_pid=''
fail "citadel-server exited unexpectedly (status $rc)"
