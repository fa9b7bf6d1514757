#!/usr/bin/env bash
# Rebuilds the vendored chart library: the parts of Apache ECharts that entry.js names, bundled
# and minified into echarts-$ECHARTS.custom.min.js, with the licences of everything inside it.
# Run by hand when upgrading (needs the npm registry); the build and the tests never run it.
# The output is deterministic: running it again on the same versions changes no byte.
set -euo pipefail
ECHARTS=6.1.0
ESBUILD=0.28.2
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --no-save --no-audit --no-fund --ignore-scripts "echarts@$ECHARTS" "esbuild@$ESBUILD" >/dev/null
cp "$here/entry.js" entry.js
zrender="$(node -p 'JSON.parse(require("fs").readFileSync("node_modules/zrender/package.json")).version')"
tslib="$(node -p 'JSON.parse(require("fs").readFileSync("node_modules/tslib/package.json")).version')"
banner="/*! Apache ECharts $ECHARTS (Apache-2.0, with d3 parts under BSD-3-Clause), zrender $zrender (BSD-3-Clause), tslib $tslib (0BSD): a custom build of services/report/assets/echarts/entry.js. Licence texts: the page's Licences section and services/report/assets/echarts/. */"
npx esbuild entry.js --bundle --minify --format=iife --global-name=echarts --target=es2017 \
  --legal-comments=eof "--banner:js=$banner" --log-level=warning \
  --outfile="$here/echarts-$ECHARTS.custom.min.js"
cp node_modules/echarts/LICENSE "$here/LICENSE"
cp node_modules/echarts/NOTICE "$here/NOTICE"
cp node_modules/echarts/licenses/LICENSE-d3 "$here/LICENSE-d3"
cp node_modules/zrender/LICENSE "$here/LICENSE-zrender"
cp node_modules/tslib/LICENSE.txt "$here/LICENSE-tslib"
ls -l "$here/echarts-$ECHARTS.custom.min.js"
