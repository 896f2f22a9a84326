use super::*;
use keel_model::batch::BarColumns;
use keel_model::{RiskLimits, Size};

use crate::risk::MinOrders;

fn market() -> Market {
    market_with(1.0)
}

fn market_with(max_position_fraction: f64) -> Market {
    let mut m = Market::new(
        vec!["A".into(), "B".into()],
        RiskLimits {
            max_position_fraction,
            max_open_positions: 10,
            max_trade_fraction: 1.0,
            min_order_quote: 0.0,
        },
        &MinOrders::default(),
        FillModel {
            fee_bps: 10.0,
            slippage_bps: 0.0,
            max_volume_share: None,
            lot_size: 1e-8,
        },
        None,
    );
    m.last_close = vec![100.0, 50.0];
    m
}

fn id(seq: usize) -> ClientOrderId {
    ClientOrderId(format!("o{seq}"))
}

fn fill(order: &Order, price: f64, quantity: f64) -> Execution {
    Execution {
        id: order.id.clone(),
        time_ms: 60_000,
        outcome: Outcome::Filled {
            price,
            quantity,
            fee: exact(price * quantity * 0.001),
            capped: false,
        },
    }
}

fn order(decision: &Decision) -> Order {
    match decision {
        Decision::Accepted(Some(o)) => o.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn decisions_are_data_by_state_and_holding() {
    let m = market();
    let open = Signal::open_long("A", Size::Quote(500.0));
    let close = Signal::close("A");
    struct Case {
        name: &'static str,
        state: TradingState,
        signal: Signal,
        held: bool,
        want: &'static str,
    }
    let cases = [
        Case {
            name: "active opens",
            state: TradingState::Active,
            signal: open.clone(),
            held: false,
            want: "order",
        },
        Case {
            name: "reduce-only refuses an open",
            state: TradingState::ReduceOnly,
            signal: open.clone(),
            held: false,
            want: "trading is reduce-only: no new exposure",
        },
        Case {
            name: "reduce-only closes",
            state: TradingState::ReduceOnly,
            signal: close.clone(),
            held: true,
            want: "order",
        },
        Case {
            name: "halted still takes a close: a halt never keeps a loss open",
            state: TradingState::Halted,
            signal: close.clone(),
            held: true,
            want: "order",
        },
        Case {
            name: "halted refuses an open",
            state: TradingState::Halted,
            signal: open.clone(),
            held: false,
            want: "trading is halted",
        },
        Case {
            name: "a close of nothing held sends nothing",
            state: TradingState::Active,
            signal: close.clone(),
            held: false,
            want: "nothing",
        },
        Case {
            name: "an unknown symbol cannot open",
            state: TradingState::Active,
            signal: Signal::open_long("Z", Size::Base(1.0)),
            held: false,
            want: "refused",
        },
    ];
    for case in cases {
        let mut book = Book::new(1000.0);
        if case.held {
            let o = order(
                &book.decide(&m, 0, std::slice::from_ref(&open), TradingState::Active, id)[0],
            );
            book.settle(fill(&o, 100.0, 5.0));
        }
        let decisions = book.decide(&m, 1, std::slice::from_ref(&case.signal), case.state, id);
        let got = match &decisions[0] {
            Decision::Accepted(Some(_)) => "order".to_owned(),
            Decision::Accepted(None) => "nothing".to_owned(),
            Decision::Rejected(why) if case.want == "refused" => {
                assert!(why.contains(" Z "), "{}: {why}", case.name);
                "refused".to_owned()
            }
            Decision::Rejected(why) => why.clone(),
        };
        assert_eq!(got, case.want, "{}", case.name);
        let refused = matches!(decisions[0], Decision::Rejected(_));
        assert_eq!(book.rejected.len(), usize::from(refused), "{}", case.name);
    }
}

#[test]
fn pending_orders_count_against_the_next_signals_and_fills_settle_them() {
    let m = market_with(0.6);
    let mut book = Book::new(1000.0);
    let buy = Signal::open_long("A", Size::Quote(400.0));
    let first = book.decide(&m, 0, std::slice::from_ref(&buy), TradingState::Active, id);
    // 400 waiting + 400 more is over 60% of 1000.
    let second = book.decide(&m, 0, std::slice::from_ref(&buy), TradingState::Active, id);
    assert!(matches!(second[0], Decision::Rejected(_)), "{second:?}");
    let o = order(&first[0]);
    assert_eq!(
        (o.buy, o.max_quantity, o.reference_price),
        (true, None, 100.0)
    );
    book.settle(fill(&o, 101.0, 3.96));
    assert!(book.pending.is_empty());
    assert_eq!(book.open[0].pos.size, 3.96);
    assert_eq!(book.fills.len(), 1);
    // A report on an order settled already changes nothing.
    book.settle(fill(&o, 101.0, 3.96));
    assert_eq!(book.open[0].pos.size, 3.96);
    assert_eq!(book.fills.len(), 1);
    // A close is sized at what is held and sells.
    let close = order(&book.decide(&m, 1, &[Signal::close("A")], TradingState::Active, id)[0]);
    assert_eq!((close.buy, close.max_quantity), (false, Some(3.96)));
}

#[test]
fn signals_of_one_close_count_against_what_is_held_and_each_other() {
    let m = market_with(0.6);
    let mut held = Book::new(1000.0);
    let buy = Signal::open_long("A", Size::Quote(300.0));
    let o = order(&held.decide(&m, 0, [&buy], TradingState::Active, id)[0]);
    held.settle(fill(&o, 100.0, 3.0));
    // Equity 999.7, so 599.82 a symbol: 300 held + 200 fits, 200 more does
    // not; B has its own limit. The close of nothing comes first, so the
    // exposure is not looked at before an opening signal.
    let signals = [
        Signal::close("B"),
        Signal::open_long("A", Size::Quote(200.0)).reason("second"),
        Signal::open_long("A", Size::Quote(200.0)).reason("third"),
        Signal::open_long("B", Size::Quote(500.0)),
    ];
    let kinds = |decisions: &[Decision]| -> Vec<&'static str> {
        decisions
            .iter()
            .map(|d| match d {
                Decision::Accepted(None) => "nothing",
                Decision::Accepted(Some(_)) => "order",
                Decision::Rejected(_) => "refused",
            })
            .collect()
    };
    let mut borrowed = held.clone();
    let lent = borrowed.decide(&m, 1, &signals, TradingState::Active, id);
    let mut owned = held.clone();
    let given = owned.decide(&m, 1, signals.clone(), TradingState::Active, id);
    for (book, decisions) in [(&borrowed, &lent), (&owned, &given)] {
        assert_eq!(kinds(decisions), ["nothing", "order", "refused", "order"]);
        assert_eq!(book.rejected.len(), 1);
        assert_eq!(book.rejected[0].signal, signals[2], "kept whole");
        let pending: Vec<_> = book.pending.iter().map(|o| &*o.signal).collect();
        assert_eq!(pending, [&signals[1], &signals[3]]);
    }
    assert_eq!(lent, given);
}

#[test]
fn an_order_filled_in_parts_is_booked_part_by_part_until_the_venue_ends_it() {
    let m = market();
    let mut book = Book::new(1000.0);
    let buy = Signal::open_long("A", Size::Base(3.0)).stop_loss(90.0);
    let o = order(&book.decide(&m, 0, &[buy], TradingState::Active, id)[0]);
    let part = |price: f64, quantity: f64, trade: &str| Execution {
        id: o.id.clone(),
        time_ms: 60_000,
        outcome: Outcome::Part {
            price,
            quantity,
            fee: 0.1,
            trade: trade.into(),
        },
    };
    book.settle(part(100.0, 1.0, "T1"));
    book.settle(part(103.0, 2.0, "T2"));
    assert_eq!(
        book.pending.len(),
        1,
        "still in flight until the venue ends it"
    );
    let held = &book.open[0];
    assert_eq!((held.pos.size, held.pos.price_entry), (3.0, 102.0));
    assert_eq!(held.stop_loss, Some(90.0));
    let trades: Vec<_> = book.fills.iter().map(|b| b.trade.clone()).collect();
    assert_eq!(trades, [Some("T1".into()), Some("T2".into())]);
    assert!((book.cash - (1000.0 - 100.0 - 206.0 - 0.2)).abs() < 1e-9);
    book.settle(Execution {
        id: o.id.clone(),
        time_ms: 60_000,
        outcome: Outcome::Ended("closed".into()),
    });
    assert!(book.pending.is_empty());
    assert_eq!(book.fills.len(), 2, "ending books nothing");

    // A close filled in parts has less left to close after each.
    let close = order(&book.decide(&m, 1, &[Signal::close("A")], TradingState::Active, id)[0]);
    let part = |quantity: f64, trade: &str| Execution {
        id: close.id.clone(),
        time_ms: 120_000,
        outcome: Outcome::Part {
            price: 104.0,
            quantity,
            fee: 0.0,
            trade: trade.into(),
        },
    };
    book.settle(part(1.0, "T3"));
    assert_eq!(book.pending[0].max_quantity, Some(2.0));
    assert_eq!(book.open[0].pos.size, 2.0);
    book.settle(part(2.0, "T4"));
    assert!(book.open.is_empty());
    assert_eq!(book.trades.len(), 2, "two parts, two closed trades");
}

#[test]
fn stops_inside_the_bar_exit_at_exchange_precision_and_close_all_flattens() {
    let m = market();
    let mut book = Book::new(1000.0);
    let long = Signal::open_long("A", Size::Base(2.0)).stop_loss(95.0);
    let o = order(&book.decide(&m, 0, &[long], TradingState::Active, id)[0]);
    book.settle(fill(&o, 100.0, 2.0));
    let short = Signal::open_short("B", Size::Base(4.0));
    let o = order(&book.decide(&m, 0, &[short], TradingState::Active, id)[0]);
    book.settle(fill(&o, 50.0, 4.0));
    let mut bars = BarColumns::default();
    let candle = |open: f64, low: f64| keel_model::Candle {
        time_ms: 120_000,
        open,
        high: open + 1.0,
        low,
        close: open,
        volume: 10.0,
    };
    bars.push(0, &candle(96.0, 94.0));
    bars.push(1, &candle(49.0, 48.0));
    for b in 0..2 {
        book.exits(&m.fills, bars.slice(0, 2).get(b));
    }
    assert_eq!(book.open.len(), 1, "A's stop at 95 was inside its bar");
    let stopped = book.trades.last().expect("trade");
    assert_eq!(
        (stopped.price_exit, stopped.exit_reason),
        (95.0, ExitReason::StopLoss)
    );
    assert_eq!(exact(stopped.fees), stopped.fees);
    let equity = book.mark(bars.slice(0, 2));
    assert!((equity - book.equity()).abs() < 1e-9);
    assert_eq!(book.close_all(&m, 180_000, FillSource::Kill), 1);
    assert!(book.open.is_empty());
    let last = book.fills.last().expect("fill");
    assert_eq!(
        (last.source.clone(), last.fill.action),
        (FillSource::Kill, Action::Close)
    );
}
