#!/usr/bin/env bash
# The atlas's browser test needs headless Chromium (Debian's `chromium` package).
# Installs it with apt-get when missing and this user may; otherwise says how, and fails.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
  if $SUDO true 2>/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
    exit 0
  fi
fi
echo "headless Chromium is missing: install Debian's chromium package (apt-get install chromium)" >&2
exit 1
