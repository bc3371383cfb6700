#!/usr/bin/env bash
# Everything a fresh Debian 12 machine needs for ctnet: system packages, npm packages and the
# build (TypeScript and the native addon). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
packages=(nftables libnftables-dev iproute2 util-linux mount procps iputils-ping busybox-static
  netcat-openbsd curl dnsperf etcd-server etcd-client tini python3 make g++ pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

npm ci --no-audit --no-fund
npm run build
