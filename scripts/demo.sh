#!/usr/bin/env bash
# ctnet's main job, shown in a minute: start the daemon on its embedded default store, make a
# user-defined bridge network, run two containers on it and let one reach the other, at db's
# static address and by name through the embedded DNS. Everything runs in a private host namespace ("ctnet-demo") so the
# machine's own interfaces and firewall are untouched, and everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f dist/cli/main.js ] && [ -f build/Release/ctnet.node ] || npm run build >/dev/null

ns=ctnet-demo
dir=$(mktemp -d /tmp/ctnet-demo.XXXXXX)
export CTNET_HOST="unix://$dir/ctnet.sock"
ctnet() { ./bin/ctnet "$@"; }
step() { printf '\n\033[1m$ ctnet %s\033[0m\n' "$*"; ctnet "$@"; }

cleanup() {
  set +e
  ctnet rm -f web db >/dev/null 2>&1
  ctnet network rm demo_net >/dev/null 2>&1
  [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

ip netns add "$ns"
# --dns 127.0.0.1: names the demo does not know are never forwarded to a real resolver.
nsenter --net="/run/netns/$ns" -- node dist/cli/main.js daemon --data-root "$dir/data" --exec-root "$dir/exec" \
  -H "$CTNET_HOST" --dns 127.0.0.1 --log-level warn &
daemon=$!
for _ in $(seq 100); do ctnet version >/dev/null 2>&1 && break; sleep 0.1; done

step network create -d bridge --subnet 10.77.0.0/24 demo_net
step run -d --name db --net demo_net --ip 10.77.0.254 sleep 1000
step run -d --name web --net demo_net sleep 1000
step network ls
step ps
step inspect -f '{{.NetworkSettings.Networks.demo_net.IPAddress}}' web
step exec web ping -c 2 10.77.0.254
step exec web getent hosts db
step exec web ping -c 2 db
echo
echo "demo done: web reached db over demo_net, by address and by name; cleaning up"
