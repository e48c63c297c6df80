#!/usr/bin/env bash
# Every test: the contract (buf lint / breaking, generated code), types, lint and format, the
# build, the agent's single executable, then the unit and integration suites against real etcd
# and Docker, which run that executable as the agent. Needs the Debian packages and
# node_modules that scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v etcd >/dev/null 2>&1 || [ ! -d node_modules ]; then
  echo "test: missing etcd or node_modules; run 'sudo bash scripts/setup.sh' first" >&2
  exit 1
fi

bash scripts/check-proto.sh
echo "test: build (tsc)"
node_modules/.bin/tsc -p .
echo "test: lint and format"
node_modules/.bin/eslint .
node_modules/.bin/prettier --check . >/dev/null
echo "test: the agent binary (the integration suites run it)"
node --import tsx scripts/build-sea.ts citadel-agent
export CITADEL_AGENT_BIN=dist/bin/citadel-agent
echo "test: unit and integration suites"
# One runner invocation, so its closing summary covers every test. Files run one at a time:
# the failover tests measure leader handover and must not compete for the two cores.
exec node --import tsx --enable-source-maps --test --test-concurrency=1 --test-timeout=180000 \
  test/unit/*.test.ts test/integration/*.test.ts
