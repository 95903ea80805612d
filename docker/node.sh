#!/bin/sh
# A node joining the dstack network the documented way: wait until the
# gateway grants its token, `gateway config render`, `wg-quick up`, then
# fetch the nginx page that is reachable only through the tunnel.
set -eu
: "${NODE_ID:?set NODE_ID}"
set -a
. /run/shared/deploy.env
set +a

conf=/etc/wireguard/wg0.conf
mkdir -p /etc/wireguard
umask 077
echo "node $NODE_ID: waiting for the gateway to grant access"
tries=0
until gateway config render --node "$NODE_ID" \
        --registry /var/lib/dstack-gateway/registry.json \
        --gateway-public-key "$(cat /run/shared/gateway.pub)" \
        --private-key-file /run/node-secrets/node.key > "$conf.new" 2> /tmp/render.err \
      && grep -q '^# access: granted' "$conf.new"; do
  tries=$((tries + 1))
  if [ $((tries % 15)) -eq 0 ]; then
    echo "node $NODE_ID: still waiting ($(grep '^# access:' "$conf.new" 2>/dev/null || tail -n 1 /tmp/render.err))"
  fi
  sleep 1
done
# `DNS =` needs resolvconf inside the container; Docker's resolver stays.
sed '/^DNS = /d' "$conf.new" > "$conf"
rm -f "$conf.new"
wg-quick up wg0
wg show wg0

gateway_ip=$(sed -n 's/^# the dstack gateway (\(.*\))$/\1/p' "$conf")
while :; do
  if curl -fsS --max-time 5 "http://$gateway_ip/"; then :; else echo "node $NODE_ID: no answer through the tunnel"; fi
  sleep 10
done
