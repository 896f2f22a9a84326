// Keel's dashboard: reads API v1 with the control token, follows the
// event stream (/v1/events) and redraws what an event changes. Plain
// DOM and SVG, no library: it is served by the binary and loads nothing
// from elsewhere. Text from the ledger is always set as text, never as
// markup.
'use strict';

const TOKEN_KEY = 'keel-control-token';
const SVG = 'http://www.w3.org/2000/svg';
const ACTIVITY_MAX = 200;

let token = localStorage.getItem(TOKEN_KEY);
let lastEvent = 0;
let socket = null;
let reconnect = null;
const due = new Map();

const $ = (id) => document.getElementById(id);

// ---- formatting ----------------------------------------------------------

function num(x, digits = 2) {
  if (x === null || x === undefined || Number.isNaN(Number(x))) return '—';
  return Number(x).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function price(x) {
  if (x === null || x === undefined) return '—';
  const v = Number(x);
  const digits = Math.abs(v) >= 1000 ? 2 : Math.abs(v) >= 1 ? 4 : 8;
  return num(v, digits);
}

function pct(x) {
  return x === null || x === undefined ? '—' : `${num(x, 2)}%`;
}

function when(ms) {
  if (!ms) return '—';
  return new Date(ms).toISOString().replace('T', ' ').slice(0, 19);
}

function signed(td, x) {
  td.classList.add(Number(x) >= 0 ? 'up' : 'down');
}

function cell(row, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fill(table, rows, render, empty) {
  const body = $(table).tBodies[0];
  body.replaceChildren();
  for (const r of rows) render(body.insertRow(), r);
  if (!rows.length) {
    const td = cell(body.insertRow(), empty, 'empty');
    td.colSpan = $(table).tHead.rows[0].cells.length;
  }
}

function notice(text, bad) {
  const n = $('notice');
  n.textContent = text;
  n.className = bad ? 'error' : '';
}

// ---- the API -------------------------------------------------------------

async function api(path, method = 'GET', body = undefined) {
  const response = await fetch(path, {
    method,
    body,
    headers: { Authorization: `Bearer ${token}` },
    cache: 'no-store',
  });
  const text = await response.text();
  if (response.status === 401) {
    signOut('The token was refused: enter the token of the run now serving.');
    throw new Error('unauthorised');
  }
  if (!response.ok) throw new Error(text.trim() || `${response.status}`);
  return JSON.parse(text).data;
}

// ---- charts --------------------------------------------------------------

function svgEl(name, attrs, parent) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

// Equity over time with its drawdown beneath: dated axes, gridlines.
function chart(svg, points) {
  svg.replaceChildren();
  const W = 560, H = 220, L = 64, R = 8, T = 8, B = 22, GAP = 14;
  const EQ = 130, DD = H - T - B - EQ - GAP;
  svgEl('rect', { x: 0, y: 0, width: W, height: H, class: 'plot-bg' }, svg);
  if (points.length < 2) {
    const t = svgEl('text', { x: W / 2, y: H / 2, class: 'axis', 'text-anchor': 'middle' }, svg);
    t.textContent = 'waiting for bars';
    return;
  }
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  let lo = Infinity, hi = -Infinity, peak = -Infinity, deepest = 0;
  const dd = points.map(([t, e]) => {
    lo = Math.min(lo, e); hi = Math.max(hi, e);
    peak = Math.max(peak, e);
    const d = peak > 0 ? (peak - e) / peak * 100 : 0;
    deepest = Math.max(deepest, d);
    return [t, d];
  });
  if (hi === lo) { hi += 1; lo -= 1; }
  const pad = (hi - lo) * 0.05; hi += pad; lo -= pad;
  const ddMax = Math.max(deepest * 1.1, 0.1);
  const x = (t) => L + (W - L - R) * (t1 === t0 ? 0 : (t - t0) / (t1 - t0));
  const y = (e) => T + EQ * (1 - (e - lo) / (hi - lo));
  const yd = (d) => T + EQ + GAP + DD * (d / ddMax);
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    svgEl('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }, svg);
    const label = svgEl('text', { x: L - 4, y: y(v) + 3, class: 'axis', 'text-anchor': 'end' }, svg);
    label.textContent = num(v, v >= 1000 ? 0 : 2);
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + (t1 - t0) * i / 4;
    svgEl('line', { x1: x(t), x2: x(t), y1: T, y2: H - B, class: 'grid' }, svg);
    const label = svgEl('text', { x: x(t), y: H - 6, class: 'axis', 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle' }, svg);
    label.textContent = when(t).slice(5, 16);
  }
  const line = points.map(([t, e], i) => `${i ? 'L' : 'M'}${x(t).toFixed(1)},${y(e).toFixed(1)}`).join('');
  svgEl('path', { d: line, class: 'equity' }, svg);
  const area = `M${x(t0)},${yd(0)}` + dd.map(([t, d]) => `L${x(t).toFixed(1)},${yd(d).toFixed(1)}`).join('') + `L${x(t1)},${yd(0)}Z`;
  svgEl('path', { d: area, class: 'drawdown' }, svg);
  svgEl('line', { x1: L, x2: W - R, y1: yd(0), y2: yd(0), class: 'grid' }, svg);
  const ddLabel = svgEl('text', { x: L - 4, y: yd(ddMax) , class: 'axis', 'text-anchor': 'end' }, svg);
  ddLabel.textContent = `-${num(ddMax, 1)}%`;
  const ddName = svgEl('text', { x: L + 4, y: yd(0) + 11, class: 'axis' }, svg);
  ddName.textContent = 'drawdown';
}

// ---- sections ------------------------------------------------------------

async function loadSystem() {
  const s = await api('/v1/system');
  $('mode').textContent = (s.mode || '').toUpperCase() || '—';
  $('mode').className = `badge ${s.mode === 'live' ? 'live' : ''}`;
  $('state').textContent = s.killed ? 'KILLED' : s.state;
  $('state').className = `badge state-${String(s.state).toLowerCase()}`;
  $('run').textContent = s.run_id;
  $('feed').textContent = s.feed;
  $('bars').textContent = s.bars;
  $('last-bar').textContent = when(s.last_bar_ms);
  document.body.dataset.state = s.state;
  document.body.dataset.killed = String(s.killed);
}

async function loadBooks() {
  const p = await api('/v1/portfolio');
  $('total-equity').textContent = num(p.total.equity);
  const books = $('books');
  for (const b of p.books) {
    let card = books.querySelector(`[data-slot="${CSS.escape(b.slot)}"]`);
    if (!card) {
      card = document.createElement('article');
      card.className = 'book';
      card.dataset.slot = b.slot;
      card.innerHTML = '<h3></h3><p class="strategy"></p><dl class="figures"></dl>';
      svgEl('svg', { viewBox: '0 0 560 220', class: 'chart', role: 'img' }, card);
      books.appendChild(card);
    }
    card.querySelector('h3').textContent = b.slot;
    card.querySelector('.strategy').textContent = `${b.strategy} · ${b.symbols.join(', ')}`;
    const ret = b.start_cash ? (b.equity - b.start_cash) / b.start_cash * 100 : 0;
    const figures = [
      ['Equity', num(b.equity)], ['Return', pct(ret)], ['Cash', num(b.cash)],
      ['Realised', num(b.realized)], ['Fees', num(b.fees)], ['Drawdown', pct(b.drawdown_pct)],
      ['Positions', String(b.positions)],
    ];
    const dl = card.querySelector('.figures');
    dl.replaceChildren();
    for (const [k, v] of figures) {
      const div = document.createElement('div');
      const dt = document.createElement('dt'); dt.textContent = k;
      const dd = document.createElement('dd'); dd.textContent = v;
      if (k === 'Return') signed(dd, ret);
      div.append(dt, dd); dl.appendChild(div);
    }
  }
}

async function loadEquity() {
  const series = await api('/v1/equity');
  for (const s of series.books) {
    const card = $('books').querySelector(`[data-slot="${CSS.escape(s.slot)}"]`);
    if (card) chart(card.querySelector('svg'), s.points);
  }
}

async function loadPositions() {
  const books = await api('/v1/positions');
  const rows = books.flatMap((b) => b.positions.map((p) => ({ slot: b.slot, ...p })));
  fill('positions', rows, (row, p) => {
    cell(row, p.slot); cell(row, p.symbol); cell(row, p.tag || '—'); cell(row, p.side);
    cell(row, num(p.quantity, 6), 'n'); cell(row, price(p.entry), 'n'); cell(row, price(p.mark), 'n');
    signed(cell(row, num(p.unrealized), 'n'), p.unrealized);
    cell(row, price(p.stop_loss), 'n'); cell(row, price(p.take_profit), 'n');
  }, 'no open positions');
}

async function loadTrades() {
  const trades = await api('/v1/trades');
  const recent = trades.slice().sort((a, b) => b.closed_ms - a.closed_ms).slice(0, 20);
  fill('trades', recent, (row, t) => {
    cell(row, when(t.closed_ms)); cell(row, t.slot); cell(row, t.symbol); cell(row, t.side);
    cell(row, price(t.entry), 'n'); cell(row, price(t.exit), 'n');
    signed(cell(row, num(t.pnl), 'n'), t.pnl);
    cell(row, t.exit_reason);
  }, 'no closed trades yet');
}

async function loadCandidates() {
  const candidates = await api('/v1/candidates');
  let active = null;
  const rows = [];
  for (const c of candidates) {
    const gates = Array.isArray(c.gates) ? c.gates : [];
    const backtest = gates.filter((g) => g.gate === 'backtest').pop();
    const figures = backtest && backtest.figures ? backtest.figures : {};
    if (!active && figures.active) active = figures.active;
    rows.push({ c, gates, mine: figures.candidate || {} });
  }
  const body = [];
  if (active) body.push({ active: true, mine: active });
  body.push(...rows);
  fill('candidates', body, (row, r) => {
    if (r.active) {
      row.className = 'active';
      cell(row, '★'); cell(row, 'active strategy'); cell(row, 'promoted'); cell(row, 'its figures on the same data');
    } else {
      cell(row, String(r.c.id)); cell(row, `${r.c.name} ${r.c.version}`); cell(row, r.c.state);
      cell(row, r.gates.map((g) => `${g.gate} ${g.verdict}`).join(', ') || '—');
    }
    signed(cell(row, pct(r.mine.total_return_pct), 'n'), r.mine.total_return_pct || 0);
    cell(row, num(r.mine.sharpe), 'n'); cell(row, pct(r.mine.max_drawdown_pct), 'n');
    cell(row, r.mine.trades === undefined ? '—' : String(r.mine.trades), 'n');
  }, 'no candidates');
}

async function loadEvolution() {
  const nights = await api('/v1/evolution');
  fill('evolution', nights.slice(0, 10), (row, n) => {
    cell(row, String(n.id)); cell(row, when(n.started_ms)); cell(row, n.status);
    cell(row, n.decision || '—').title = n.note || '';
    cell(row, String(n.tokens || 0), 'n'); cell(row, num(n.usd || 0, 4), 'n');
  }, 'no nights yet');
}

// ---- the activity stream -------------------------------------------------

function describe(e) {
  const d = e.data || {};
  switch (e.kind) {
    case 'bar': return `bar closed ${when(d.close_ms)}: ` + (d.bars || []).map((b) => `${b.symbol} ${price(b.close)}`).join(', ');
    case 'signal': return `${d.book}: ${d.action} ${d.symbol} ${d.size} — ${d.decision}${d.reject_reason ? ` (${d.reject_reason})` : ''}`;
    case 'order': return `order ${d.id}: ${d.state}${d.symbol ? ` ${d.action} ${d.symbol}` : ''}${d.reason ? ` (${d.reason})` : ''}`;
    case 'fill': return `${d.book}: ${d.action} ${d.quantity} ${d.symbol} at ${price(d.price)} (fee ${d.fee}, ${d.source})`;
    case 'risk': return `risk ${d.kind}: ${d.detail}`;
    case 'halt': return `HALT: ${d.reason}`;
    case 'state': return `state ${d.state} by ${d.actor}: ${d.reason}`;
    case 'candidate': return `candidate ${d.id} ${d.state}${d.name ? ` (${d.name} ${d.version})` : ''}${d.reason ? `: ${d.reason}` : ''}`;
    case 'evolution': return d.step ? `night ${d.night} step ${d.step}: ${d.kind} by ${d.actor} ${d.ok ? 'ok' : 'failed'}` : `night ${d.night} ${d.status}${d.decision ? `: ${d.decision}` : ''}`;
    case 'audit': return `${d.actor}: ${d.action} — ${d.detail}`;
    default: return JSON.stringify(d);
  }
}

function show(e, newest) {
  const li = document.createElement('li');
  li.className = `kind-${e.kind}`;
  li.dataset.kind = e.kind;
  li.dataset.id = e.id;
  const time = document.createElement('time');
  time.textContent = when(e.time_ms).slice(11);
  const kind = document.createElement('span');
  kind.className = 'kind';
  kind.textContent = e.kind;
  const text = document.createElement('span');
  text.textContent = describe(e);
  li.append(time, kind, text);
  const list = $('activity');
  if (newest) list.prepend(li); else list.appendChild(li);
  while (list.children.length > ACTIVITY_MAX) list.lastChild.remove();
}

const REFRESH = {
  bar: [loadSystem, loadBooks, loadPositions],
  fill: [loadBooks, loadPositions, loadTrades],
  halt: [loadSystem, loadBooks, loadPositions],
  state: [loadSystem],
  candidate: [loadCandidates],
  evolution: [loadEvolution],
};

// Coalesces refreshes: at most one of each section in flight or queued.
function refresh(load, delay = 150) {
  if (due.has(load)) return;
  due.set(load, setTimeout(async () => {
    try { await load(); } catch (err) { if (err.message !== 'unauthorised') notice(err.message, true); }
    due.delete(load);
  }, delay));
}

function connect() {
  clearTimeout(reconnect);
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  socket = new WebSocket(`${scheme}://${location.host}/v1/events?since=${lastEvent}`, ['keel', `bearer.${token}`]);
  socket.onopen = () => { $('stream').textContent = 'stream: live'; $('stream').className = 'badge on'; };
  socket.onmessage = (message) => {
    const e = JSON.parse(message.data);
    if (e.id <= lastEvent) return;
    lastEvent = e.id;
    show(e, true);
    for (const load of REFRESH[e.kind] || []) refresh(load);
    if (e.kind === 'bar') refresh(loadEquity, 1000);
  };
  socket.onclose = () => {
    $('stream').textContent = 'stream: reconnecting';
    $('stream').className = 'badge off';
    if (token) reconnect = setTimeout(connect, 2000);
  };
}

// ---- commands ------------------------------------------------------------

async function command(name, reason) {
  try {
    const reply = await api(`/v1/${name}`, 'POST', reason);
    if (reply.reply === 'killed') {
      notice(`Killed in ${num(reply.latency_us / 1000, 1)} ms: ${reply.positions_closed} positions closed, ${reply.orders_cancelled} orders cancelled.`);
    } else {
      notice(`The account is ${reply.state}.`);
    }
  } catch (err) {
    if (err.message !== 'unauthorised') notice(`${name}: ${err.message}`, true);
  }
  await loadSystem().catch(() => {});
}

// ---- start ---------------------------------------------------------------

function signOut(why) {
  token = null;
  localStorage.removeItem(TOKEN_KEY);
  if (socket) { socket.onclose = null; socket.close(); socket = null; }
  $('app').hidden = true;
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = why || '';
  $('token').focus();
}

async function start() {
  $('sign-in').hidden = true;
  $('app').hidden = false;
  try {
    await loadSystem();
  } catch (err) {
    if (err.message !== 'unauthorised') signOut(`The run does not answer: ${err.message}`);
    return;
  }
  const activity = await api('/v1/activity').catch(() => []);
  $('activity').replaceChildren();
  for (const e of activity) show(e, false);
  lastEvent = activity.length ? activity[0].id : 0;
  connect();
  await Promise.allSettled([loadBooks().then(loadEquity), loadPositions(), loadTrades(), loadCandidates(), loadEvolution()]);
  document.body.dataset.ready = 'true';
}

document.addEventListener('DOMContentLoaded', () => {
  $('sign-in-form').addEventListener('submit', (event) => {
    event.preventDefault();
    token = $('token').value.trim();
    localStorage.setItem(TOKEN_KEY, token);
    $('token').value = '';
    start();
  });
  $('sign-out').addEventListener('click', () => signOut());
  $('pause').addEventListener('click', () => command('pause', 'operator pause from the dashboard'));
  $('resume').addEventListener('click', () => command('resume', 'operator resume from the dashboard'));
  $('kill').addEventListener('click', () => $('kill-dialog').showModal());
  $('kill-dialog').addEventListener('close', () => {
    if ($('kill-dialog').returnValue === 'kill') command('kill', $('kill-reason').value || 'operator kill from the dashboard');
  });
  if (token) start(); else signOut();
});
