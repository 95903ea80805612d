#!/bin/sh
# The compose demo's one-shot deployer: keys for the gateway and two nodes,
# the DstackAccessNFT contract on the dev chain, one access token per node.
# Writes /run/shared/deploy.env last, so its presence means "all done".
#
#   deploy.sh               deploy and mint (the deployer service)
#   deploy.sh revoke TOKEN  the contract owner revokes a token
set -eu
umask 077

SHARED=/run/shared
export GATEWAY_RPC_URL="${GATEWAY_RPC_URL:-http://anvil:8545}"

# anvil's development account 0 (mnemonic "test test ... junk"): a public
# test key that owns the contract on the dev chain, never a real secret.
printf '%s\n' 0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80 > /tmp/signer.key
export GATEWAY_SIGNER_KEY=/tmp/signer.key

if [ "${1:-}" = revoke ]; then
  : "${2:?usage: deploy.sh revoke TOKEN}"
  . "$SHARED/deploy.env"
  exec gateway node revoke "$2" --contract "$GATEWAY_CHAIN_CONTRACT" --json
fi

if [ -s "$SHARED/deploy.env" ]; then
  . "$SHARED/deploy.env"
  if gateway node info 1 --contract "$GATEWAY_CHAIN_CONTRACT" >/dev/null 2>&1; then
    echo "deployer: contract $GATEWAY_CHAIN_CONTRACT already deployed and minted"
    exit 0
  fi
  echo "deployer: the chain was reset; deploying again"
  rm -f "$SHARED/deploy.env"
fi

# Keys: each private key goes to the volume of the one container that uses it.
gateway node keygen --force --out /run/gateway-secrets/gateway.key > "$SHARED/gateway.pub"
gateway node keygen --force --out /run/node-a-secrets/node.key >/dev/null
gateway node keygen --force --out /run/node-b-secrets/node.key >/dev/null

contract=$(gateway node deploy --json | jq -r .address)
export GATEWAY_CONTRACT="$contract"
echo "deployer: DstackAccessNFT at $contract"

# anvil's development accounts 1 and 2 own the nodes' tokens. Only the
# public halves of the node keys go on chain.
gateway node mint 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 node-a --key-file /run/node-a-secrets/node.key
gateway node mint 0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC node-b --key-file /run/node-b-secrets/node.key

chmod 644 "$SHARED/gateway.pub"
printf 'GATEWAY_CHAIN_CONTRACT=%s\n' "$contract" > "$SHARED/deploy.env.tmp"
chmod 644 "$SHARED/deploy.env.tmp"
mv "$SHARED/deploy.env.tmp" "$SHARED/deploy.env"
echo "deployer: done"
