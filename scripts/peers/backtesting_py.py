"""sma-cross in backtesting.py, for the whole-process comparison in
BENCHMARKS.md ("Market data at the speed of memory"). Same rules as
strategies/sma-cross: long 20% of equity when the fast SMA crosses above
the slow one, flat when it crosses back; 7.5 bps fees.

    python3 scripts/peers/backtesting_py.py FILE.csv [FAST SLOW]
"""
import sys
import warnings

import pandas as pd
from backtesting import Backtest, Strategy
from backtesting.lib import crossover

warnings.filterwarnings("ignore")


def sma(values, n):
    return pd.Series(values).rolling(n).mean()


class SmaCross(Strategy):
    fast = 10
    slow = 30

    def init(self):
        self.f = self.I(sma, self.data.Close, self.fast)
        self.s = self.I(sma, self.data.Close, self.slow)

    def next(self):
        if crossover(self.f, self.s) and not self.position:
            self.buy(size=0.2)
        elif crossover(self.s, self.f) and self.position:
            self.position.close()


def main():
    path = sys.argv[1]
    fast, slow = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (10, 30)
    df = pd.read_csv(path)
    df.index = pd.to_datetime(df.pop("time"), utc=True)
    df.columns = ["Open", "High", "Low", "Close", "Volume"]
    SmaCross.fast, SmaCross.slow = fast, slow
    stats = Backtest(df, SmaCross, cash=10_000, commission=0.00075).run()
    print(f"backtesting.py: {len(df)} bars, {stats['# Trades']} trades, return {stats['Return [%]']:.2f}%")


main()
