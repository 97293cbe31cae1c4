#!/usr/bin/env bash
# Vendor the dashboard's third-party assets at build time (never committed): the world map of
# @svg-maps/world (CC BY 4.0, credited on the page) into src/weathertweets/static/vendor/.
# Needs npm; without it the page still works and shows the countries as a table instead.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=$ROOT/src/weathertweets/static/vendor
HERE=$ROOT/tools/assets
[[ -f $OUT/world.svg && $OUT/world.svg -nt $HERE/package-lock.json ]] && exit 0
if ! command -v npm >/dev/null; then
  echo "assets: npm not found; the dashboard will show no world map" >&2
  exit 0
fi
(cd "$HERE" && npm ci --silent --no-audit --no-fund)
mkdir -p "$OUT"
cp "$HERE/node_modules/@svg-maps/world/world.svg" "$OUT/world.svg"
cp "$HERE/node_modules/@svg-maps/world/LICENSE.md" "$OUT/world-LICENSE.md"
echo "assets: vendored the world map into src/weathertweets/static/vendor/"
