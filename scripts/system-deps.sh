#!/usr/bin/env bash
# Install the Debian packages telesurg needs: libosmesa6 (MuJoCo off-screen rendering on the CPU),
# ffmpeg (the stock decoder the video tests check our streams against), and chromium with
# chromium-driver (the dashboard is tested in a real headless browser; never a browser download).
set -euo pipefail
need=()
dpkg -s libosmesa6 >/dev/null 2>&1 || need+=(libosmesa6)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -eq 0 ]; then
  echo "system-deps: libosmesa6, ffmpeg, chromium and chromium-driver already present, skipping apt-get"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing ${need[*]}; not root, so not installing."
  echo "system-deps: run 'sudo apt-get install -y ${need[*]}' (MuJoCo rendering, the ffmpeg check and the"
  echo "system-deps: dashboard's browser test need them; those tests are skipped without them)."
  exit 0
fi
echo "system-deps: installing ${need[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "system-deps: done"
