"""A 30-combination sma-cross grid in vectorbt, for the whole-process
comparison in BENCHMARKS.md: fast 5..30 step 5 × slow 40..200 step 40,
long 20% of equity on the cross up, flat on the cross down, 7.5 bps fees.

    python3 scripts/peers/vectorbt_grid.py FILE.csv
"""
import sys
import warnings

import numpy as np
import pandas as pd
import vectorbt as vbt

warnings.filterwarnings("ignore")

df = pd.read_csv(sys.argv[1])
close = pd.Series(df["close"].values, index=pd.to_datetime(df["time"], utc=True))
fast_n = np.arange(5, 31, 5)
slow_n = np.arange(40, 201, 40)
pairs = [(f, s) for f in fast_n for s in slow_n]
fast = vbt.MA.run(close, window=[p[0] for p in pairs], short_name="fast")
slow = vbt.MA.run(close, window=[p[1] for p in pairs], short_name="slow")
entries = fast.ma_crossed_above(slow)
exits = fast.ma_crossed_below(slow)
pf = vbt.Portfolio.from_signals(
    close, entries, exits, size=0.2, size_type="percent", fees=0.00075, init_cash=10_000
)
ret = pf.total_return()
print(f"vectorbt: {len(close)} bars, {len(pairs)} combinations, best return {ret.max() * 100:.2f}%")
