#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the browser tests (headless, no download of a browser
# of its own). Idempotent; needs root for apt-get when they are missing.
set -euo pipefail
command -v chromium >/dev/null && command -v chromedriver >/dev/null && exit 0
[[ $(id -u) == 0 ]] || { echo "browser: install chromium and chromium-driver (Debian), or run as root" >&2; exit 1; }
echo "browser: installing chromium and chromium-driver from Debian"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
