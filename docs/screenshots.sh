#!/usr/bin/env bash
# Makes the report screenshots under docs/ with headless Chromium, from the
# shared sample data and the example strategies (built by the tests into
# target/keel-wasm). The dashboard's is made by its test:
#   KEEL_DASHBOARD_SCREENSHOT=$PWD/docs/dashboard.png cargo test -p keel-host --test integration -- dashboard
# (an absolute path: the test runs in host/)
set -euo pipefail
cd "$(dirname "$0")/.."
keel=${KEEL:-target/debug/keel}
wasm=target/keel-wasm/wasm32-wasip2/release
data=../shared/data
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
shot() { chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size=1200,"$2" --screenshot="$3" "file://$1" 2>/dev/null; }

# atr-breakout as it declares (hourly bars, from five-minute candles), one
# position at a time: its stops, and the signals that limit refused.
printf 'max_open_positions = 1\n' > "$work/limits.toml"
"$keel" --db "$work/k.db" backtest "$wasm/atr_breakout.wasm" \
  --data "$data/crypto-5m/ETH_BTC-5m.csv" --data "$data/crypto-5m/LTC_BTC-5m.csv" \
  --timeframe 1h --risk-limits "$work/limits.toml" --report "$work/backtest.html" >/dev/null 2>&1
shot "$work/backtest.html" 3300 docs/backtest-report.png

"$keel" --db "$work/k.db" run --paper --speed max \
  --feed "replay:$data/UNITTEST_BTC-1m.csv" \
  --strategy "$wasm/sma_cross.wasm,fast=5,slow=20" --strategy "$wasm/rsi_reversion.wasm" >/dev/null
"$keel" --db "$work/k.db" report run --out "$work/run.html" >/dev/null
shot "$work/run.html" 1800 docs/run-report.png

"$keel" --db "$work/k.db" backtest "$wasm/sma_cross.wasm" --data "$data/crypto-5m/XLM_BTC-5m.csv" \
  --param fast=4..20:4 --param slow=30..90:15 --report "$work/grid.html" >/dev/null
shot "$work/grid.html" 1500 docs/grid-report.png

"$keel" --db "$work/k.db" backtest "$wasm/sma_cross.wasm" --data "$data/UNITTEST_BTC-1m.csv" \
  --param fast=5..20:5 --param slow=30,60,90 --walk-forward 4 --report "$work/wf.html" >/dev/null
shot "$work/wf.html" 1700 docs/walk-forward-report.png
