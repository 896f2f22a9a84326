#!/usr/bin/env python3
"""Writes the layout files of this folder from the shared sample data
(run from here: python3 make.py). Standard library only."""
import csv, datetime, json

SHARED = "../../../../shared/data"
rows = list(csv.DictReader(open(f"{SHARED}/crypto-5m/ETH_BTC-5m.csv")))[:48]
goog = list(csv.DictReader(open(f"{SHARED}/GOOG-1d.csv")))[:30]


def ms(t):
    return int(datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1000)


# Binance klines: no header, 12 columns, open time in ms (µs for spot files since 2025).
for name, scale in [("binance-ETHBTC-5m.csv", 1), ("binance-ETHBTC-5m-2025.csv", 1000)]:
    with open(name, "w") as f:
        for r in rows:
            t = ms(r["time"])
            v, c = float(r["volume"]), float(r["close"])
            f.write(f"{t*scale},{r['open']},{r['high']},{r['low']},{r['close']},{r['volume']},"
                    f"{(t + 299_999)*scale},{v*c:.8f},{int(v) % 97 + 3},{v/2:.8f},{v*c/2:.8f},0\n")
# pandas' to_csv of a frame indexed by a UTC DatetimeIndex named "date".
with open("pandas-ETHBTC-5m.csv", "w") as f:
    f.write("date,open,high,low,close,volume\n")
    for r in rows:
        d = datetime.datetime.fromisoformat(r["time"].replace("Z", "+00:00"))
        f.write(f"{d.strftime('%Y-%m-%d %H:%M:%S')}+00:00,{r['open']},{r['high']},{r['low']},{r['close']},{r['volume']}\n")
# yfinance intraday: Datetime with the exchange's offset.
with open("yfinance-ETHBTC-5m.csv", "w") as f:
    f.write("Datetime,Open,High,Low,Close,Adj Close,Volume\n")
    est = datetime.timezone(datetime.timedelta(hours=-5))
    for r in rows:
        d = datetime.datetime.fromisoformat(r["time"].replace("Z", "+00:00")).astimezone(est)
        f.write(f"{d.strftime('%Y-%m-%d %H:%M:%S%z')[:-2]}:00,{r['open']},{r['high']},{r['low']},"
                f"{r['close']},{r['close']},{r['volume']}\n")
# yfinance daily: dates, and an adjusted close beside the close.
with open("yfinance-GOOG-1d.csv", "w") as f:
    f.write("Date,Open,High,Low,Close,Adj Close,Volume\n")
    for r in goog:
        f.write(f"{r['time'][:10]},{r['open']},{r['high']},{r['low']},{r['close']},"
                f"{float(r['close'])*0.9871:.6f},{r['volume']}\n")
# Capitalised, quoted header and fields.
with open("capitalised-ETHBTC-5m.csv", "w") as f:
    f.write('"Time","Open","High","Low","Close","Volume"\n')
    for r in rows:
        f.write(f'"{r["time"]}","{r["open"]}","{r["high"]}","{r["low"]}","{r["close"]}","{r["volume"]}"\n')
# freqtrade's JSON: [[ms, o, h, l, c, v], ...].
json.dump([[ms(r["time"]), float(r["open"]), float(r["high"]), float(r["low"]), float(r["close"]),
            float(r["volume"])] for r in rows], open("freqtrade-ETH_BTC-5m.json", "w"))
# Names no alias knows, epoch seconds: imported with --columns.
with open("custom-ETHBTC-5m.csv", "w") as f:
    f.write("Zeit,Erster,Hoch,Tief,Letzter,Umsatz\n")
    for r in rows:
        f.write(f"{ms(r['time'])//1000},{r['open']},{r['high']},{r['low']},{r['close']},{r['volume']}\n")
# gzip-compressed, as Python's gzip writes them (no timestamp, so the
# bytes are the same each time): a pandas CSV and freqtrade's JSON.
import gzip
for name in ["pandas-ETHBTC-5m.csv", "freqtrade-ETH_BTC-5m.json"]:
    with open(name, "rb") as src, open(name + ".gz", "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as dst:
            dst.write(src.read())
