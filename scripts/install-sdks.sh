#!/usr/bin/env bash
# Installs Commet's official SDKs — the contract of Tally's HTTP API — into target/sdks, where
# the end-to-end test `sdks` finds them: @commet/node with npm, commet-sdk with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
NODE_SDK="@commet/node@7.10.0"
PYTHON_SDK="commet-sdk==9.7.0"
root="target/sdks"
mkdir -p "$root/node" "$root/python"
if [ ! -f "$root/node/node_modules/@commet/node/package.json" ]; then
  npm install --silent --no-audit --no-fund --prefix "$root/node" "$NODE_SDK"
fi
if [ ! -d "$root/python/commet" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --target "$root/python" "$PYTHON_SDK"
fi
echo "SDKs in $root: $NODE_SDK, $PYTHON_SDK"
