"""Writes what pandas makes of the shared sample candles when it resamples
them, for tests/data.rs to hold `keel`'s aggregation to: bars aligned on
the epoch (days at 00:00 UTC), open first, high max, low min, close last,
volume summed; a bar nothing fell in dropped (pandas makes it NaN), and
`bars` the number of candles in each.

    pip install pandas && python3 tests/data/resample/make.py

Reads ../shared/data beside the repository; writes the CSVs beside this
script.
"""
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / ".." / "shared" / "data"

CASES = [
    ("UNITTEST_BTC-1m.csv", ["15min", "1h", "1D"]),
    ("crypto-5m/ETH_BTC-5m.csv", ["1h", "4h", "1D"]),
]
NAMES = {"5min": "5m", "15min": "15m", "1h": "1h", "4h": "4h", "1D": "1d"}

for file, rules in CASES:
    df = pd.read_csv(SHARED / file, parse_dates=["time"], index_col="time")
    df.index = df.index.tz_convert(None)  # UTC, as naive times
    for rule in rules:
        agg = df.resample(rule, origin="epoch", label="left", closed="left").agg(
            {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
        )
        agg["bars"] = df["close"].resample(rule, origin="epoch", label="left", closed="left").count()
        agg = agg[agg["bars"] > 0]
        out = HERE / f"{Path(file).stem}-to-{NAMES[rule]}.csv"
        agg.index = agg.index.strftime("%Y-%m-%dT%H:%M:%SZ")
        agg.index.name = "time"
        agg.to_csv(out, float_format="%.17g")
        print(out.name, len(agg))
