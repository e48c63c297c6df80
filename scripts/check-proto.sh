#!/usr/bin/env bash
# Checks the public contract: buf lint (STANDARD + COMMENTS), buf breaking for every commit that
# changed proto/ against its parent (and the working tree against HEAD), and that the committed
# generated code in gen/ is exactly what `npm run gen` produces.
set -euo pipefail
cd "$(dirname "$0")/.."
buf=node_modules/.bin/buf

echo "proto: buf lint"
"$buf" lint

if git rev-parse -q --verify HEAD >/dev/null 2>&1; then
  commits=$(git rev-list --max-count=50 HEAD -- proto)
  checked=0
  for c in $commits; do
    parent=$(git rev-parse -q --verify "$c^" 2>/dev/null) || continue
    git cat-file -e "$parent:buf.yaml" 2>/dev/null || continue
    git cat-file -e "$parent:proto/citadel" 2>/dev/null || continue
    "$buf" breaking ".git#ref=$c" --against ".git#ref=$parent"
    checked=$((checked + 1))
  done
  if git cat-file -e HEAD:proto/citadel 2>/dev/null; then
    "$buf" breaking --against ".git#ref=HEAD"
    checked=$((checked + 1))
  fi
  echo "proto: buf breaking passed for $checked change(s)"

  echo "proto: generated code is up to date"
  npm run --silent gen >/dev/null
  if [ -n "$(git status --porcelain -- gen)" ]; then
    git status --short -- gen >&2
    echo "proto: gen/ differs from a fresh 'npm run gen': regenerate and commit it" >&2
    exit 1
  fi
fi
