// Command round trips through the bus at a steady rate, measured from the gateway's
// side (ioredis): RPUSH → result. Reports the round trip, the engine's own time in
// the handler (serverLatencyMs: the venue's ack and fill included), and their
// difference — what the contract itself costs — plus lost and duplicated commands.
//
//   node bench.js [--rate 500] [--seconds 20] [--kind trade|validate] [--accounts 20]
'use strict';

const crypto = require('crypto');
const { EngineClient } = require('./client');

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const rate = Number(arg('rate', 500));
const seconds = Number(arg('seconds', 20));
const kind = arg('kind', 'trade');
const accounts = Number(arg('accounts', 20));

const pct = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(s.length * q))] : NaN;
};

async function main() {
  const client = new EngineClient({
    url: process.env.REDIS_URL || 'redis://127.0.0.1:6379',
    prefix: process.env.PREFIX || 'pms:',
    userId: crypto.randomUUID(),
  });
  const deadline = Date.now() + 60000;
  while (!(await client.engineUp())) {
    if (Date.now() > deadline) throw new Error('no engine heartbeat');
    await new Promise((r) => setTimeout(r, 200));
  }
  const ids = [];
  for (let i = 0; i < accounts; i++) {
    const r = await client.send('account_create',
      { name: `bench-${i}`, initialBalance: 100000 }, { role: 'ADMIN' });
    ids.push(r.body.id);
  }
  await client.send('risk_rules_set',
    { global: true, maxNotionalPerTrade: 100000, maxTotalExposure: 1000000 }, { role: 'ADMIN' });
  // Warm up: one command per account.
  for (const id of ids) {
    await client.send('validate', { subAccountId: id, symbol: 'BTCUSDT', side: 'LONG', quantity: 0.001, leverage: 10 });
  }
  // Event publish (its ts, stamped by the engine) → received here.
  const eventLag = [];
  const Redis = require('ioredis');
  const sub = new Redis(process.env.REDIS_URL || 'redis://127.0.0.1:6379');
  sub.on('pmessage', (_p, channel, payload) => {
    if (channel.endsWith(':log')) return;
    const d = JSON.parse(payload);
    if (typeof d.ts === 'number') eventLag.push(Date.now() - d.ts);
  });
  await sub.psubscribe(`${process.env.PREFIX || 'pms:'}events:*`);
  const total = Math.round(rate * seconds);
  const rtt = [];
  const server = [];
  const overhead = [];
  const statuses = {};
  let lost = 0;
  const seen = new Set();
  let duplicates = 0;
  const start = Date.now();
  const inflight = [];
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const account = ids[i % ids.length];
    // Each account alternates LONG and SHORT: positions stay near flat.
    const side = Math.floor(i / ids.length) % 2 === 0 ? 'LONG' : 'SHORT';
    const body = { subAccountId: account, symbol: 'BTCUSDT', side, quantity: 0.001, leverage: 10 };
    const t0 = process.hrtime.bigint();
    inflight.push(client.send(kind, body, { timeoutMs: 30000 }).then((r) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (seen.has(r.requestId)) duplicates++;
      seen.add(r.requestId);
      const label = r.code ? `${r.httpStatus} ${r.code}` : `${r.httpStatus}`;
      statuses[label] = (statuses[label] || 0) + 1;
      rtt.push(ms);
      const s = Number(r.headers && r.headers['X-Server-Latency-Ms']);
      if (Number.isFinite(s)) {
        server.push(s);
        overhead.push(ms - s);
      }
    }, () => { lost++; }));
  }
  const sent = Date.now() - start;
  await Promise.all(inflight);
  const f = (xs) => ({ p50: +pct(xs, 0.5).toFixed(2), p95: +pct(xs, 0.95).toFixed(2), p99: +pct(xs, 0.99).toFixed(2) });
  console.log(JSON.stringify({
    kind, rate, seconds, accounts, commands: total, sentInMs: sent,
    achievedRate: +(total / (sent / 1000)).toFixed(1),
    statuses, lost, duplicates,
    roundTripMs: f(rtt), serverLatencyMs: f(server), contractOverheadMs: f(overhead),
    events: eventLag.length, eventPublishToReceiptMs: f(eventLag),
  }));
  sub.disconnect();
  client.close();
}

main().catch((e) => { console.error(e); process.exit(1); });
