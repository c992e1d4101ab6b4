#!/usr/bin/env bash
# Installs the Debian packages the project needs when they are missing: clang (tinygrad's CPU backend compiles
# kernels with it), dataset-fashion-mnist (the real Fashion-MNIST files, for offline end-to-end training),
# chromium with chromium-driver (the dashboard's browser tests drive a real Chromium through Selenium), and curl (the
# README's examples use it, and tests/docs runs them).
# Needs root; otherwise says what to install. Fast and silent when everything is present.
set -euo pipefail
missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing Debian packages: ${missing[*]}" >&2
  echo "       install them as root: apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine has empty package lists: install fails with "no installation candidate" until an update.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
