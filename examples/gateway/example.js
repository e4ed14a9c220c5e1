// A gateway's day with the engine, run by the test command against the service:
// create a sub-account (admin), place a resting limit order and wait for its result,
// retry it with the same idempotency key (the first result, no second order),
// follow the account's events by seq, cancel the order, trade, and catch up on the
// events again from the log. Prints one JSON line; exits 1 on any surprise.
//
//   REDIS_URL=redis://127.0.0.1:6379 PREFIX=pms: node example.js
'use strict';

const assert = require('assert');
const crypto = require('crypto');
const { EngineClient } = require('./client');

async function main() {
  const userId = crypto.randomUUID();
  const client = new EngineClient({
    url: process.env.REDIS_URL || 'redis://127.0.0.1:6379',
    prefix: process.env.PREFIX || 'pms:',
    userId,
  });
  const deadline = Date.now() + 60000;
  while (!(await client.engineUp())) {
    assert(Date.now() < deadline, 'no engine heartbeat within 60 s');
    await new Promise((r) => setTimeout(r, 200));
  }

  const created = await client.send('account_create',
    { name: 'node-example', accountType: 'USER', initialBalance: 10000 }, { role: 'ADMIN' });
  assert.strictEqual(created.httpStatus, 201, JSON.stringify(created));
  const subAccountId = created.body.id;

  const events = [];
  const follower = await client.follow(0, (type, data) => {
    if (data.subAccountId === subAccountId) events.push({ type, seq: data.seq, data });
  });

  // A bid 3 % under the market: it rests.
  const price = await client.send('validate',
    { subAccountId, symbol: 'BTC/USDT:USDT', side: 'LONG', quantity: 0.001, leverage: 10 });
  assert.strictEqual(price.body.valid, true, JSON.stringify(price));
  const bid = Math.round(price.body.computedValues.price * 0.97 * 10) / 10;
  const key = crypto.randomUUID();
  const limit = { subAccountId, symbol: 'BTCUSDT', side: 'LONG', quantity: 0.001, price: bid, leverage: 10 };
  const placed = await client.send('limit', limit, { idempotencyKey: key });
  assert.strictEqual(placed.httpStatus, 201, JSON.stringify(placed));
  const orderId = placed.body.order.id;

  // The gateway timed out and retries: same key, same body → the first result.
  const retried = await client.send('limit', limit, { idempotencyKey: key });
  assert.strictEqual(retried.httpStatus, 201, JSON.stringify(retried));
  assert.strictEqual(retried.body.order.id, orderId, 'a retry places no second order');
  const reused = await client.send('limit', { ...limit, quantity: 0.002 }, { idempotencyKey: key });
  assert.strictEqual(reused.code, 'IDEMPOTENCY_KEY_REUSED', JSON.stringify(reused));

  const cancelled = await client.send('cancel_order', { subAccountId, orderId });
  assert.strictEqual(cancelled.httpStatus, 200, JSON.stringify(cancelled));

  const trade = await client.send('trade',
    { subAccountId, symbol: 'BTCUSDT', side: 'LONG', quantity: 0.001, leverage: 10 });
  assert.strictEqual(trade.httpStatus, 201, JSON.stringify(trade));

  const want = ['order_placed', 'order_cancelled', 'order_filled', 'position_updated'];
  while (!want.every((t) => events.some((e) => e.type === t))) {
    assert(Date.now() < deadline, `events so far: ${events.map((e) => e.type)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  for (let i = 1; i < events.length; i++) {
    assert(events[i].seq > events[i - 1].seq, 'seq rises');
  }
  // A gateway that reconnects catches up from a seq: the log has what followed it.
  const from = events[0].seq;
  const caughtUp = [];
  const again = await client.follow(from, (type, data) => {
    if (data.subAccountId === subAccountId) caughtUp.push(type);
  });
  assert(caughtUp.includes('order_cancelled') && caughtUp.includes('order_filled'),
    `caught up: ${caughtUp}`);
  again.close();
  follower.close();
  client.close();
  console.log(JSON.stringify({
    ok: true, subAccountId, orderId, events: events.map((e) => e.type), caughtUp: caughtUp.length,
  }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
