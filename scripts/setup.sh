#!/usr/bin/env bash
# Installs what devbox needs on Debian/Ubuntu (apt packages, a venv with devbox in .venv) and nothing else.
# Idempotent: a second run only checks. Usage: sudo scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (sudo $0)" >&2; exit 1; }

pkgs=(python3 python3-venv python3-pip mmdebstrap busybox-static nftables iproute2 ca-certificates
      debian-archive-keyring)
if [ "${1:-}" = "--test" ]; then
  # the tests also run real peers: a registry, skopeo and podman (issue: images and sharing)
  pkgs+=(docker-registry skopeo podman runc apache2-utils curl)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's docker-registry package starts a system registry on :5000; the tests run their own.
if [ "${1:-}" = "--test" ] && command -v systemctl >/dev/null && systemctl is-active -q docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi

py=python3
for v in python3.13 python3.12 python3.11; do
  if command -v "$v" >/dev/null && "$v" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then py=$v; break; fi
done
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
# compat mode: a plain .pth path entry; the default editable finder adds ~25 ms to every command
.venv/bin/pip install -q --disable-pip-version-check -e ".${extra}" --config-settings editable_mode=compat
# setuptools is only needed to build (pip builds in an isolated env); in the venv its
# distutils-precedence.pth imports _distutils_hack at every Python start (~5 ms of each devbox command)
if .venv/bin/python -c 'import setuptools' 2>/dev/null; then
  .venv/bin/pip uninstall -q -y --disable-pip-version-check setuptools >/dev/null 2>&1 || true
fi
# The launcher: pip's console script, but started with python -S. `site` (the venv's prefix, .pth files)
# costs ~2-3 ms of every command; the two paths it would add are set here instead. Subprocesses that
# devbox starts with sys.executable get the ordinary start.
site_dir=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cat > .venv/bin/devbox.tmp <<EOF
#!$PWD/.venv/bin/python -S
# devbox's launcher, written by scripts/setup.sh (python -S: see there)
import sys
sys.path[1:1] = ["$PWD", "$site_dir"]
from devbox.cli import main
sys.exit(main())
EOF
chmod 755 .venv/bin/devbox.tmp && mv .venv/bin/devbox.tmp .venv/bin/devbox
# bytecode now, so that the first commands (and shells with PYTHONDONTWRITEBYTECODE) do not recompile
.venv/bin/python -m compileall -q devbox >/dev/null
ln -sf "$PWD/.venv/bin/devbox" /usr/local/bin/devbox
echo "setup.sh: ready (devbox at /usr/local/bin/devbox -> .venv/bin/devbox)" >&2
