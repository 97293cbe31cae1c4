#!/usr/bin/env bash
# The image's Python install, run by the Dockerfile and by tests/test_deploy.py into a fresh
# venv: the locked runtime and Locust (exact versions, hashes checked), then the project itself.
# No dev tools. `make lock` writes requirements/image.txt from uv.lock.
#
#   tools/install-image.sh /opt/weathertweets
set -euo pipefail
VENV=${1:?usage: install-image.sh VENV}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$VENV/bin/pip" install --quiet --require-hashes --no-deps -r "$ROOT/requirements/image.txt"
# Building the wheel runs build_protos.py: the gRPC stubs are generated here, never copied in.
"$VENV/bin/pip" install --quiet --no-deps "$ROOT"
