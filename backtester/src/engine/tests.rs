//! The backtest driver's tests: hand-computed trades, fills, exits and
//! batches through the kernel.

use super::*;
use keel_model::candles::Candle;
use keel_model::{Side, Size, Tick};

/// Emits the scripted signals on the given (0-based) steps; records what it saw.
#[derive(Default)]
struct Script {
    plan: Vec<(usize, Signal)>,
    step: usize,
    fills: Vec<Fill>,
    seen_equity: Vec<f64>,
    latest_bar_open_ms: Vec<(i64, i64)>,
}

impl RunningStrategy for Script {
    fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
        self.seen_equity.push(tick.portfolio.equity);
        for b in &tick.bars {
            self.latest_bar_open_ms.push((tick.time_ms, b.time_ms));
        }
        let now = self.step;
        self.step += 1;
        Ok(self
            .plan
            .iter()
            .filter(|(s, _)| *s == now)
            .map(|(_, sig)| sig.clone())
            .collect())
    }
    fn on_fill(&mut self, fill: &Fill) -> Result<(), String> {
        self.fills.push(fill.clone());
        Ok(())
    }
}

fn candle(i: i64, open: f64, high: f64, low: f64, close: f64) -> Candle {
    Candle {
        time_ms: i * 60_000,
        open,
        high,
        low,
        close,
        volume: 1000.0,
    }
}

fn flat(prices: &[f64]) -> Vec<Candle> {
    prices
        .iter()
        .enumerate()
        .map(|(i, &p)| candle(i as i64, p, p, p, p))
        .collect()
}

fn series(symbol: &str, candles: Vec<Candle>) -> Series {
    Series {
        symbol: symbol.into(),
        candles,
        bar_ms: 60_000,
    }
}

fn loose() -> RiskLimits {
    RiskLimits {
        max_position_fraction: 1.0,
        max_open_positions: 10,
        max_trade_fraction: 1.0,
        min_order_quote: 0.0,
    }
}

fn config(fee_bps: f64, slippage_bps: f64) -> BacktestConfig {
    BacktestConfig {
        cash: 1000.0,
        fills: FillModel {
            fee_bps,
            slippage_bps,
            max_volume_share: None,
            lot_size: 1e-8,
        },
        limits: loose(),
        ..BacktestConfig::default()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn long_round_trip_with_fees_by_hand() {
    // Buy 100 quote on bar 0 -> fills at bar 1's open (10): 10 units, fee 0.10.
    // Close on bar 2 -> fills at bar 3's open (12): fee 0.12. P&L 20 - 0.22.
    let mut s = Script {
        plan: vec![
            (0, Signal::open_long("A", Size::Quote(100.0))),
            (2, Signal::close("A")),
        ],
        ..Script::default()
    };
    let r = run(
        &mut s,
        &[series("A", flat(&[9.0, 10.0, 11.0, 12.0, 13.0]))],
        &config(10.0, 0.0),
    );
    assert_eq!(r.trades.len(), 1);
    let t = &r.trades[0];
    assert_eq!(
        (t.price_entry, t.price_exit, t.quantity),
        (10.0, 12.0, 10.0)
    );
    assert!(close(t.fees, 0.22) && close(t.pnl, 19.78), "{t:?}");
    assert!(close(r.equity_final, 1019.78));
    assert_eq!(t.exit_reason, ExitReason::Signal);
    assert_eq!(s.fills.len(), 2, "the strategy hears of both fills");
    // Marked equity the strategy saw: before, after buying (fee), marked at 11, at 12 (sold at the open).
    assert!(
        close(s.seen_equity[1], 999.9)
            && close(s.seen_equity[2], 1009.9)
            && close(s.seen_equity[3], 1019.78)
    );
}

#[test]
fn slippage_moves_both_fills_against_the_trader() {
    let mut s = Script {
        plan: vec![
            (0, Signal::open_long("A", Size::Base(10.0))),
            (1, Signal::close("A")),
        ],
        ..Script::default()
    };
    let r = run(
        &mut s,
        &[series("A", flat(&[10.0, 10.0, 10.0]))],
        &config(0.0, 100.0),
    );
    let t = &r.trades[0];
    assert!(close(t.price_entry, 10.1) && close(t.price_exit, 9.9));
    assert!(close(t.pnl, -2.0) && close(r.equity_final, 998.0));
}

#[test]
fn short_profits_when_the_price_falls() {
    // Short 10 units at 20, cover at 15: +50 before fees; fees 0.2 + 0.15.
    let mut s = Script {
        plan: vec![
            (0, Signal::open_short("A", Size::Base(10.0))),
            (1, Signal::close("A")),
        ],
        ..Script::default()
    };
    let r = run(
        &mut s,
        &[series("A", flat(&[20.0, 20.0, 15.0, 15.0]))],
        &config(10.0, 0.0),
    );
    let t = &r.trades[0];
    assert_eq!(t.side, Side::Short);
    assert!(close(t.pnl, 50.0 - 0.35), "{t:?}");
    assert!(close(r.equity_final, 1000.0 + 50.0 - 0.35));
}

#[test]
fn a_bar_touching_stop_and_target_exits_at_the_stop() {
    let candles = vec![
        candle(0, 100.0, 100.0, 100.0, 100.0),
        candle(1, 100.0, 100.0, 100.0, 100.0),
        candle(2, 100.0, 120.0, 80.0, 100.0), // touches both 90 and 110
        candle(3, 100.0, 100.0, 100.0, 100.0),
    ];
    let entry = Signal::open_long("A", Size::Base(1.0))
        .stop_loss(90.0)
        .take_profit(110.0);
    let mut s = Script {
        plan: vec![(0, entry)],
        ..Script::default()
    };
    let r = run(&mut s, &[series("A", candles)], &config(0.0, 0.0));
    assert_eq!(r.trades.len(), 1);
    assert_eq!(
        (r.trades[0].exit_reason, r.trades[0].price_exit),
        (ExitReason::StopLoss, 90.0)
    );
    assert_eq!(r.trades[0].time_exit_ms, 2 * 60_000);
    assert!(
        close(r.trades[0].mae, 0.0),
        "MAE is measured at closes after the stop check"
    );
    assert!(close(r.equity_final, 990.0));
}

#[test]
fn take_profit_and_mae_mfe() {
    let candles = vec![
        candle(0, 100.0, 100.0, 100.0, 100.0),
        candle(1, 100.0, 104.0, 95.0, 101.0), // entry at 100; range -5 .. +4
        candle(2, 101.0, 111.0, 100.0, 109.0), // target 110 touched
    ];
    let entry = Signal::open_long("A", Size::Base(2.0))
        .stop_loss(90.0)
        .take_profit(110.0);
    let mut s = Script {
        plan: vec![(0, entry)],
        ..Script::default()
    };
    let r = run(&mut s, &[series("A", candles)], &config(0.0, 0.0));
    let t = &r.trades[0];
    assert_eq!(
        (t.exit_reason, t.price_exit),
        (ExitReason::TakeProfit, 110.0)
    );
    assert!(close(t.pnl, 20.0));
    assert!(close(t.mae, -10.0) && close(t.mfe, 8.0), "{t:?}");
}

#[test]
fn orders_wait_for_their_symbols_next_bar_across_gaps() {
    // B has no bar at minute 1: its order waits for minute 2.
    let a = series("A", flat(&[10.0, 11.0, 12.0, 13.0]));
    let b = series(
        "B",
        vec![
            candle(0, 5.0, 5.0, 5.0, 5.0),
            candle(2, 6.0, 6.0, 6.0, 6.0),
            candle(3, 7.0, 7.0, 7.0, 7.0),
        ],
    );
    let mut s = Script {
        plan: vec![
            (0, Signal::open_long("A", Size::Base(1.0))),
            (0, Signal::open_long("B", Size::Base(1.0))),
        ],
        ..Script::default()
    };
    let r = run(&mut s, &[a, b], &config(0.0, 0.0));
    let fills: Vec<(&str, i64, f64)> = r
        .fills
        .iter()
        .map(|f| (f.symbol.as_str(), f.time_ms, f.price))
        .collect();
    assert_eq!(fills[..2], [("A", 60_000, 11.0), ("B", 120_000, 6.0)]);
    assert_eq!(r.bars, 7, "no bar invented for B's gap");
    // Every bar the strategy saw had closed: open time + bar length <= tick time.
    assert!(
        s.latest_bar_open_ms
            .iter()
            .all(|(tick, open)| open + 60_000 <= *tick)
    );
}

#[test]
fn peeking_cannot_pay_off() {
    // Every bar rises from open to close, then the next opens back down:
    // buying a bar's open and selling its close would win every time, but
    // a strategy only sees closed bars and fills at the next open.
    let candles: Vec<Candle> = (0..40)
        .map(|i| candle(i, 100.0, 110.0, 100.0, 110.0))
        .collect();
    let plan = (0..38)
        .step_by(2)
        .flat_map(|i| {
            [
                (i, Signal::open_long("A", Size::Base(1.0))),
                (i + 1, Signal::close("A")),
            ]
        })
        .collect();
    let mut s = Script {
        plan,
        ..Script::default()
    };
    let r = run(&mut s, &[series("A", candles)], &config(0.0, 0.0));
    assert_eq!(r.trades.len(), 19);
    assert!(
        r.trades
            .iter()
            .all(|t| t.price_entry == 100.0 && t.price_exit == 100.0),
        "open to open: no edge"
    );
    assert!(close(r.equity_final, 1000.0));
}

#[test]
fn risk_limits_reject_with_reasons_and_pending_orders_count() {
    let mut cfg = config(0.0, 0.0);
    cfg.limits = RiskLimits {
        max_position_fraction: 0.5,
        max_open_positions: 1,
        max_trade_fraction: 0.3,
        min_order_quote: 5.0,
    };
    let plan = vec![
        (0, Signal::open_long("A", Size::Quote(300.0))),
        (0, Signal::open_long("A", Size::Quote(300.0)).tag("second")),
        (0, Signal::open_long("A", Size::Quote(301.0)).tag("big")),
        (0, Signal::open_long("A", Size::Quote(1.0)).tag("tiny")),
    ];
    let mut s = Script {
        plan,
        ..Script::default()
    };
    let r = run(&mut s, &[series("A", flat(&[10.0, 10.0, 10.0]))], &cfg);
    let reasons: Vec<&str> = r.rejected.iter().map(|x| x.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "A would be 60.00% of equity, over the 50.00% position limit",
            "order of 30.10% of equity is over the 30.00% trade limit",
            "order of 1.00 is below the minimum order of 5.00",
        ]
    );
    assert_eq!(
        r.fills.len(),
        2,
        "the accepted entry and its end-of-data exit"
    );
}

#[test]
fn reduce_and_tags_keep_positions_apart() {
    let plan = vec![
        (0, Signal::open_long("A", Size::Base(4.0)).tag("core")),
        (0, Signal::open_long("A", Size::Base(1.0)).tag("extra")),
        (1, Signal::reduce("A", Size::Base(1.0)).tag("core")),
        (2, Signal::close("A").tag("extra")),
    ];
    let mut s = Script {
        plan,
        ..Script::default()
    };
    let r = run(
        &mut s,
        &[series("A", flat(&[10.0, 10.0, 11.0, 12.0, 13.0]))],
        &config(0.0, 0.0),
    );
    let trades: Vec<(&str, f64, f64, ExitReason)> = r
        .trades
        .iter()
        .map(|t| (t.tag.as_str(), t.quantity, t.price_exit, t.exit_reason))
        .collect();
    assert_eq!(
        trades,
        [
            ("core", 1.0, 11.0, ExitReason::Signal),
            ("extra", 1.0, 12.0, ExitReason::Signal),
            ("core", 3.0, 13.0, ExitReason::EndOfData),
        ]
    );
    // The ledger identity: final equity = start + every trade's P&L.
    let pnl: f64 = r.trades.iter().map(|t| t.pnl).sum();
    assert!(close(r.equity_final, 1000.0 + pnl));
}

#[test]
fn volume_cap_and_lot_rounding() {
    let mut cfg = config(0.0, 0.0);
    cfg.fills.max_volume_share = Some(0.01); // 1% of 1000 = 10 units
    cfg.fills.lot_size = 0.5;
    let mut s = Script {
        plan: vec![
            (0, Signal::open_long("A", Size::Base(25.0))),
            (1, Signal::open_long("A", Size::Base(0.3)).tag("b")),
        ],
        ..Script::default()
    };
    let r = run(
        &mut s,
        &[series("A", flat(&[10.0, 10.0, 10.0, 10.0]))],
        &cfg,
    );
    assert_eq!(r.fills[0].quantity, 10.0);
    assert_eq!(r.capped_fills, 1);
    assert_eq!(r.rejected[0].reason, "0.3 rounds to zero lots of 0.5");

    // A bar that traded nothing: the cap leaves nothing, and says so.
    let mut quiet = flat(&[10.0, 10.0, 10.0, 10.0]);
    quiet[1].volume = 0.0;
    let mut s = Script {
        plan: vec![(0, Signal::open_long("A", Size::Base(2.0)))],
        ..Script::default()
    };
    let r = run(&mut s, &[series("A", quiet)], &cfg);
    assert_eq!(
        r.rejected[0].reason,
        "2 cut to a 0.01 share of the bar's volume 0, which rounds to zero lots of 0.5"
    );
}

#[test]
fn an_order_the_data_cannot_fill_is_reported() {
    let mut s = Script {
        plan: vec![(2, Signal::open_long("A", Size::Base(1.0)))],
        ..Script::default()
    };
    let r = run(
        &mut s,
        &[series("A", flat(&[10.0, 11.0, 12.0]))],
        &config(0.0, 0.0),
    );
    assert!(r.fills.is_empty() && r.trades.is_empty());
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(
        r.rejected[0].reason,
        "the data ended before a later A bar could fill it"
    );
    assert_eq!(r.rejected[0].time_ms, 3 * 60_000);
}

#[test]
fn counts_stay_exact_when_signals_and_fills_are_not_kept() {
    let plan: Vec<(usize, Signal)> = (0..40)
        .map(|i| {
            (
                i,
                if i % 2 == 0 {
                    Signal::open_long("A", Size::Base(1.0))
                } else {
                    Signal::close("A")
                },
            )
        })
        .collect();
    let prices: Vec<f64> = (0..50).map(|i| 10.0 + (i % 3) as f64).collect();
    let full = run(
        &mut Script {
            plan: plan.clone(),
            ..Script::default()
        },
        &[series("A", flat(&prices))],
        &config(10.0, 0.0),
    );
    let lean_config = BacktestConfig {
        record_signals: false,
        record_fills: false,
        ..config(10.0, 0.0)
    };
    let mut lean_script = Script {
        plan,
        ..Script::default()
    };
    let lean = run(
        &mut lean_script,
        &[series("A", flat(&prices))],
        &lean_config,
    );
    assert!(lean.signals.is_empty() && lean.fills.is_empty());
    assert_eq!(
        (lean.signal_count, lean.fill_count),
        (full.signals.len(), full.fills.len())
    );
    assert_eq!(
        lean_script.fills.len(),
        full.fills.len(),
        "the strategy still hears of every fill"
    );
    assert_eq!(lean.trades, full.trades);
    assert_eq!(lean.equity_final, full.equity_final);
}

#[test]
fn same_inputs_same_result() {
    let candles = keel_model::synth::random_walk(5, 3000, 0, 60_000, 100.0, 0.01);
    let plan: Vec<(usize, Signal)> = (0..2990)
        .step_by(7)
        .map(|i| {
            (
                i,
                if i % 2 == 0 {
                    Signal::open_long("A", Size::FractionOfEquity(0.1))
                } else {
                    Signal::close("A")
                },
            )
        })
        .collect();
    let go = || {
        run(
            &mut Script {
                plan: plan.clone(),
                ..Script::default()
            },
            &[series("A", candles.clone())],
            &BacktestConfig::default(),
        )
    };
    assert_eq!(go(), go());
}

/// Trades both sides of two symbols with stops and targets, and records
/// every tick it sees.
struct Trader {
    n: usize,
    seen: Vec<Tick>,
}

impl RunningStrategy for Trader {
    fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
        self.seen.push(tick.clone());
        self.n += 1;
        let Some(bar) = tick.bars.first() else {
            return Ok(vec![]);
        };
        let (symbol, close) = (&*bar.symbol, bar.close);
        Ok(match self.n % 37 {
            0 => vec![
                Signal::open_long(symbol, Size::FractionOfEquity(0.2))
                    .stop_loss(close * 0.995)
                    .take_profit(close * 1.01),
            ],
            11 => vec![
                Signal::open_short(symbol, Size::Quote(500.0))
                    .tag("s")
                    .stop_loss(close * 1.004),
            ],
            29 => vec![Signal::close(symbol), Signal::close(symbol).tag("s")],
            _ if self.n.is_multiple_of(101) => return Err(format!("tick {}", self.n)),
            _ => vec![],
        })
    }
    fn on_fill(&mut self, _: &Fill) -> Result<(), String> {
        Ok(())
    }
}

/// The same strategy, shown one close per call.
struct OneAtATime(Trader);

impl RunningStrategy for OneAtATime {
    fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
        self.0.on_bar(tick)
    }
    fn on_bars(&mut self, batch: &Batch<'_>) -> Result<BatchOutcome, String> {
        Ok(keel_model::batch::drive(&batch.first(1), |t| {
            self.0.on_bar(t)
        }))
    }
    fn on_fill(&mut self, fill: &Fill) -> Result<(), String> {
        self.0.on_fill(fill)
    }
}

#[test]
fn batches_show_and_do_exactly_what_one_close_per_call_does() {
    // More closes than are kept before the handled ones are dropped.
    let n = 2 * super::DROP_AFTER_TICKS + 300;
    let a = keel_model::synth::random_walk(1, n, 0, 60_000, 100.0, 0.004);
    // B has gaps: every 5th bar is missing.
    let b: Vec<Candle> = keel_model::synth::random_walk(2, n, 0, 60_000, 50.0, 0.004)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 5 != 3)
        .map(|(_, c)| c)
        .collect();
    let data = [series("A", a), series("B", b)];
    let cfg = BacktestConfig::default();
    let mut batched = Trader {
        n: 0,
        seen: Vec::new(),
    };
    let mut single = OneAtATime(Trader {
        n: 0,
        seen: Vec::new(),
    });
    let r1 = run(&mut batched, &data, &cfg);
    let r2 = run(&mut single, &data, &cfg);
    assert!(r1.trades.len() > 50, "{} trades", r1.trades.len());
    assert!(
        r1.trades
            .iter()
            .any(|t| t.exit_reason == ExitReason::StopLoss)
            && r1
                .trades
                .iter()
                .any(|t| t.exit_reason == ExitReason::TakeProfit)
    );
    assert!(!r1.errors.is_empty());
    assert_eq!(r1, r2);
    assert_eq!(batched.seen.len(), single.0.seen.len());
    for (x, y) in batched.seen.iter().zip(&single.0.seen) {
        assert_eq!(x, y, "at {}", x.time_ms);
    }
}

/// Claims to have handled a different number of closes than it was given.
struct Miscounts;

impl RunningStrategy for Miscounts {
    fn on_bar(&mut self, _: &Tick) -> Result<Vec<Signal>, String> {
        Ok(vec![])
    }
    fn on_bars(&mut self, batch: &Batch<'_>) -> Result<BatchOutcome, String> {
        Ok(BatchOutcome {
            consumed: if batch.tick_times[0] % 120_000 == 0 {
                0
            } else {
                batch.tick_times.len() + 1
            },
            ..BatchOutcome::default()
        })
    }
    fn on_fill(&mut self, _: &Fill) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn a_wrong_handled_count_is_an_error_at_that_close_and_the_run_goes_on() {
    let r = run(
        &mut Miscounts,
        &[series("A", flat(&[1.0, 2.0, 3.0, 4.0]))],
        &config(0.0, 0.0),
    );
    assert_eq!(r.steps, 4);
    let times: Vec<i64> = r.errors.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [60_000, 120_000, 180_000, 240_000]);
    assert_eq!(
        r.errors[1].1,
        "said it handled 0 of a batch of 3 bar closes"
    );
}

#[test]
fn one_feed_in_runs_of_any_length_runs_as_step_by_step() {
    // More closes than are kept before the handled ones are dropped.
    let n = 2 * super::DROP_AFTER_TICKS + 300;
    let a = keel_model::synth::random_walk(4, n, 0, 60_000, 100.0, 0.004);
    let cfg = BacktestConfig::default();
    // Runs of awkward lengths, empty ones and ones longer than a batch.
    let mut runs = Vec::new();
    let mut rest = &a[..];
    for n in [0, 1, 255, 0, 256, 257, 3, 700, 1, 0, 520]
        .into_iter()
        .cycle()
    {
        if rest.is_empty() {
            break;
        }
        let (run, after) = rest.split_at(n.min(rest.len()));
        runs.push(std::borrow::Cow::Borrowed(run));
        rest = after;
    }
    let in_runs = Feed {
        symbol: "A".into(),
        bar_ms: 60_000,
        runs: Box::new(runs.into_iter()),
    };
    let mut by_runs = Trader {
        n: 0,
        seen: Vec::new(),
    };
    let r1 = run_feeds(&mut by_runs, vec![in_runs], &cfg);
    // With a second, empty feed the merge goes step by step.
    let mut by_steps = Trader {
        n: 0,
        seen: Vec::new(),
    };
    let whole = series("A", a.clone());
    let empty = Feed::slice("B".into(), 60_000, &[]);
    let r2 = run_feeds(&mut by_steps, vec![whole.feed(), empty], &cfg);
    assert!(r1.trades.len() > 20, "{} trades", r1.trades.len());
    assert_eq!(r1.trades, r2.trades);
    assert_eq!(r1.equity, r2.equity);
    assert_eq!(r1.errors, r2.errors);
    assert_eq!((r1.steps, r1.bars), (n, n));
    assert_eq!(by_runs.seen, by_steps.seen);
}
