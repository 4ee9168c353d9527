#!/usr/bin/env bash
# Debian packages: headless MuJoCo rendering (EGL and OSMesa software GL; required) and headless Chromium
# (optional, and only with --optional, as `make test` asks: the test that renders the quickstart's report.html uses
# it and is skipped with a message without it; `make quickstart` does not wait for it).
set -euo pipefail
PKGS=(libegl-mesa0 libegl1 libgl1 libosmesa6 libgles2)
OPTIONAL=()
[ "${1:-}" = "--optional" ] && OPTIONAL=(chromium)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
opt_missing=()
for p in "${OPTIONAL[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || opt_missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && [ ${#opt_missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "rlvla: installing Debian packages (headless rendering${OPTIONAL[*]:+, headless Chromium}): ${missing[*]} ${opt_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  [ ${#missing[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ ${#opt_missing[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${opt_missing[@]}" >/dev/null \
    || echo "rlvla: could not install ${opt_missing[*]}; the report-rendering test will be skipped" >&2
elif [ ${#missing[@]} -gt 0 ]; then
  echo "rlvla: headless rendering needs these Debian packages: ${missing[*]}" >&2
  echo "rlvla: run 'sudo apt-get install ${missing[*]}' (or run make as root), then try again." >&2
  exit 1
else
  echo "rlvla: optional: 'sudo apt-get install ${opt_missing[*]}' lets the test suite render the HTML report" >&2
fi
