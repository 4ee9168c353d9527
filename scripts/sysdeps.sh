#!/usr/bin/env bash
# Debian packages for headless MuJoCo rendering (EGL and OSMesa software GL).
set -euo pipefail
PKGS=(libegl-mesa0 libegl1 libgl1 libosmesa6 libgles2)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "rlvla: installing Debian packages for headless rendering: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "rlvla: headless rendering needs these Debian packages: ${missing[*]}" >&2
  echo "rlvla: run 'sudo apt-get install ${missing[*]}' (or run make as root), then try again." >&2
  exit 1
fi
