#!/usr/bin/env python3
"""Writes the Parquet and Feather (Arrow IPC) candle files of this folder
with the Python ecosystem's own writers, pandas and pyarrow, from the shared
sample data (run from here: pip install pyarrow pandas; python3 make.py).
Every file holds the first rows of shared/data/crypto-5m/ETH_BTC-5m.csv
(300 for the two main files, 60 for the others), except the yfinance one
(30 GOOG days); README.md says what each is for."""
import csv
import datetime

import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

SHARED = "../../../../shared/data"
PRICES = ["open", "high", "low", "close", "volume"]
rows = list(csv.DictReader(open(f"{SHARED}/crypto-5m/ETH_BTC-5m.csv")))[:300]
goog = list(csv.DictReader(open(f"{SHARED}/GOOG-1d.csv")))[:30]
ms = [int(datetime.datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp() * 1000)
      for r in rows]


def values(n, dtype="float64"):
    return {c: pd.Series([float(r[c]) for r in rows[:n]], dtype=dtype) for c in PRICES}


def freqtrade(n, unit):
    """freqtrade's frame: a `date` column (UTC) and the prices."""
    date = pd.Series(pd.to_datetime(ms[:n], unit="ms", utc=True)).astype(f"datetime64[{unit}, UTC]")
    return pd.DataFrame({"date": date, **values(n)})


def table(n, time, time_name="timestamp", dtype=pa.float64()):
    """A pyarrow table: `time` (an array) and the prices as `dtype`."""
    columns = {time_name: time}
    columns.update({c: pa.array([float(r[c]) for r in rows[:n]], dtype) for c in PRICES})
    return pa.table(columns)


# freqtrade's own feather: `df.reset_index(drop=True).to_feather(path,
# compression_level=9, compression="lz4")`, the date in ns (pandas 2) or ms.
freqtrade(300, "ns").reset_index(drop=True).to_feather(
    "freqtrade-ETH_BTC-5m.feather", compression_level=9, compression="lz4")
freqtrade(60, "ms").reset_index(drop=True).to_feather(
    "freqtrade-ms-ETH_BTC-5m.feather", compression_level=9, compression="lz4")

# pandas' to_parquet (pyarrow, snappy) of a frame indexed by time: a named
# index is a column of its name, an unnamed one `__index_level_0__`; a name
# no alias knows is found through the pandas metadata.
indexed = freqtrade(300, "ns").set_index("date")
indexed.to_parquet("pandas-ETH_BTC-5m.parquet")
naive = freqtrade(60, "ns").set_index("date")
naive.index = naive.index.tz_localize(None).rename(None)
naive.to_parquet("pandas-index-ETH_BTC-5m.parquet")
indexed.iloc[:60].rename_axis("bar_start").to_parquet("pandas-named-index-ETH_BTC-5m.parquet")

# pyarrow with int64 epoch times in s, ms, µs and ns (told apart by digits).
for unit, scale in [("s", 1 / 1000), ("ms", 1), ("us", 1000), ("ns", 1_000_000)]:
    t = pa.array([int(m * scale) for m in ms[:60]], pa.int64())
    pq.write_table(table(60, t), f"epoch-{unit}-ETH_BTC-5m.parquet")

# Timestamp types: seconds without a zone in an uncompressed IPC file of two
# record batches; µs in New York's zone (the instants are UTC all the same);
# the deprecated INT96 of Spark and Impala.
t = pa.array([m // 1000 for m in ms[:60]], pa.timestamp("s"))
with pa.ipc.new_file("timestamp-s-ETH_BTC-5m.arrow", table(60, t, "time").schema) as w:
    for batch in table(60, t, "time").to_batches(max_chunksize=30):
        w.write_batch(batch)
t = pa.array([m * 1000 for m in ms[:60]], pa.timestamp("us", tz="America/New_York"))
pq.write_table(table(60, t, "datetime"), "timestamp-us-newyork-ETH_BTC-5m.parquet")
t = pa.array([m * 1000 for m in ms[:60]], pa.timestamp("us", tz="UTC"))
pq.write_table(table(60, t, "date"), "int96-ETH_BTC-5m.parquet",
               use_deprecated_int96_timestamps=True)

# float32 prices; two row groups; the other codecs Keel reads; the time as text.
t = pa.array(ms[:60], pa.timestamp("ms", tz="UTC"))
pq.write_table(table(60, t, "date", pa.float32()), "float32-ETH_BTC-5m.parquet")
pq.write_table(table(60, t, "date"), "row-groups-ETH_BTC-5m.parquet", row_group_size=30)
for codec in ["gzip", "lz4", "none"]:
    pq.write_table(table(60, t, "date"), f"{codec}-ETH_BTC-5m.parquet", compression=codec)
# Files gzipped whole, as pyarrow writes them through a compressed stream
# (and reads them back expanded in memory: pa.BufferReader(pa.input_stream(
# path, compression="detect").read())).
with pa.CompressedOutputStream("gzipped-ETH_BTC-5m.parquet.gz", "gzip") as out:
    pq.write_table(table(60, t, "date"), out)
with pa.CompressedOutputStream("gzipped-ETH_BTC-5m.feather.gz", "gzip") as out:
    feather.write_feather(freqtrade(60, "ms"), out, compression="lz4")
text = pa.array([r["time"] for r in rows[:60]], pa.string())
pq.write_table(table(60, text, "time"), "text-time-ETH_BTC-5m.parquet")

# yfinance's frame, saved by pandas: capitalised names, a date32 `Date`, an
# adjusted close beside the close, an integer volume.
pd.DataFrame({
    "Date": [datetime.date.fromisoformat(r["time"][:10]) for r in goog],
    "Open": [float(r["open"]) for r in goog],
    "High": [float(r["high"]) for r in goog],
    "Low": [float(r["low"]) for r in goog],
    "Close": [float(r["close"]) for r in goog],
    "Adj Close": [float(r["close"]) * 0.9871 for r in goog],
    "Volume": [int(float(r["volume"])) for r in goog],
}).to_parquet("yfinance-GOOG-1d.parquet", index=False)

# Bad files, each refused in one line.
bad = freqtrade(60, "ms")
null = bad.copy()
null["close"] = null["close"].astype("object")
null.loc[6, "close"] = None  # row 7
null["close"] = null["close"].astype("float64")
pq.write_table(pa.Table.from_pandas(null, preserve_index=False), "null-close-ETH_BTC-5m.parquet")
nan = table(60, pa.array(ms[:60], pa.timestamp("ms", tz="UTC")), "date")
volume = nan.column("volume").to_pylist()
volume[11] = float("nan")  # row 12: a NaN, not a null (pandas would make it one)
nan = nan.set_column(5, "volume", pa.array(volume, pa.float64()))
feather.write_feather(nan, "nan-volume-ETH_BTC-5m.feather", compression="lz4")
duplicate = bad.copy()
duplicate.loc[4, "date"] = duplicate.loc[3, "date"]  # row 5 repeats row 4's time
duplicate.to_parquet("duplicate-ETH_BTC-5m.parquet", index=False)
crossed = bad.copy()
crossed.loc[2, "high"] = crossed.loc[2, "low"] / 2  # row 3
crossed.to_feather("high-below-low-ETH_BTC-5m.feather", compression="lz4")
bad.to_parquet("zstd-ETH_BTC-5m.parquet", compression="zstd", index=False)
bad.to_feather("zstd-ETH_BTC-5m.feather", compression="zstd")
bad.drop(columns="volume").to_parquet("missing-volume-ETH_BTC-5m.parquet", index=False)
bad.astype({"close": "str"}).to_parquet("text-close-ETH_BTC-5m.parquet", index=False)

# yfinance's history() of a US stock, saved by pandas: the index's local
# midnights in America/New_York, an hour apart in UTC across the March
# daylight-saving change (refused as daily bars, with how to write dates).
days = pd.bdate_range("2024-03-04", "2024-03-15", tz="America/New_York", name="Date")
prices = [170.0 + i for i in range(len(days))]
pd.DataFrame({
    "Open": prices,
    "High": [p + 1.0 for p in prices],
    "Low": [p - 1.0 for p in prices],
    "Close": [p + 0.5 for p in prices],
    "Volume": [1000 + i for i in range(len(days))],
}, index=days).to_parquet("yfinance-history-AAPL-1d.parquet")
