#!/usr/bin/env python3
"""Reference indicator values from TA-Lib (the C library shipped in PyPI's
TA-Lib wheel) on ../shared/data/GOOG-1d.csv, for the SDK's indicator tests.

    pip install TA-Lib==0.8.2 numpy
    python3 strategy-sdk/tests/reference/make_talib_reference.py

Writes talib_goog_1d.csv beside this script: one row per bar, one column per
indicator output, empty where TA-Lib gives no value yet (warm-up).
"""
import csv
import pathlib

import numpy as np
import talib

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]
DATA = REPO.parent / "shared" / "data" / "GOOG-1d.csv"


def main() -> None:
    rows = list(csv.DictReader(DATA.open()))
    col = lambda name: np.array([float(r[name]) for r in rows], dtype=np.float64)
    high, low, close, volume = col("high"), col("low"), col("close"), col("volume")

    bb_upper, bb_middle, bb_lower = talib.BBANDS(close, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0)
    macd, macd_signal, macd_hist = talib.MACD(close, fastperiod=12, slowperiod=26, signalperiod=9)
    stoch_k, stoch_d = talib.STOCH(high, low, close, fastk_period=14, slowk_period=3,
                                   slowk_matype=0, slowd_period=3, slowd_matype=0)
    series = {
        "sma_20": talib.SMA(close, timeperiod=20),
        "ema_20": talib.EMA(close, timeperiod=20),
        "rsi_14": talib.RSI(close, timeperiod=14),
        "atr_14": talib.ATR(high, low, close, timeperiod=14),
        "bb_upper": bb_upper,
        "bb_middle": bb_middle,
        "bb_lower": bb_lower,
        "macd": macd,
        "macd_signal": macd_signal,
        "macd_hist": macd_hist,
        "stoch_k": stoch_k,
        "stoch_d": stoch_d,
        "obv": talib.OBV(close, volume),
    }
    out = HERE / "talib_goog_1d.csv"
    with out.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["time", *series])
        for i, r in enumerate(rows):
            w.writerow([r["time"], *("" if np.isnan(v[i]) else repr(float(v[i])) for v in series.values())])
    print(f"wrote {out} ({len(rows)} rows, TA-Lib {talib.__ta_version__.decode() if isinstance(talib.__ta_version__, bytes) else talib.__ta_version__})")


if __name__ == "__main__":
    main()
