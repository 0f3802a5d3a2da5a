#!/usr/bin/env bash
# Install the Debian libraries telesurg needs: libosmesa6 (MuJoCo off-screen rendering on the CPU)
# and ffmpeg (the stock decoder the video tests check our streams against).
set -euo pipefail
need=()
dpkg -s libosmesa6 >/dev/null 2>&1 || need+=(libosmesa6)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
if [ ${#need[@]} -eq 0 ]; then
  echo "system-deps: libosmesa6 and ffmpeg already present, skipping apt-get"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing ${need[*]}; not root, so not installing."
  echo "system-deps: run 'sudo apt-get install -y ${need[*]}' (MuJoCo rendering and the ffmpeg check need them)."
  exit 0
fi
echo "system-deps: installing ${need[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "system-deps: done"
