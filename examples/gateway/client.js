// The gateway's side of the contract (docs/trading/gateway.md), with ioredis:
// send a command (RPUSH pms:cmd:{type}, then BLPOP pms:result:{requestId} on a
// connection of its own), and follow the account events by seq — live on
// pms:events:*, caught up from the capped stream pms:events:log.
'use strict';

const crypto = require('crypto');
const Redis = require('ioredis');

class EngineClient {
  constructor({ url = 'redis://127.0.0.1:6379', prefix = 'pms:', userId, role = 'USER' } = {}) {
    this.url = url;
    this.prefix = prefix;
    this.userId = userId;
    this.role = role;
    this.redis = new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 3 });
    // BLPOP blocks its connection: results are waited for on a pool of their own.
    this.waiters = [];
  }

  async engineUp() {
    return (await this.redis.exists(`${this.prefix}engine:heartbeat`)) === 1;
  }

  waiter() {
    return this.waiters.pop() || new Redis(this.url, { maxRetriesPerRequest: 3 });
  }

  // Sends `body` as command `type`; resolves to the result envelope. A timeout
  // means the outcome is unknown (never "failed"): retry with the same
  // idempotencyKey to learn it.
  async send(type, body, { idempotencyKey, timeoutMs = 15000, role } = {}) {
    const requestId = crypto.randomUUID();
    const ts = Date.now();
    const envelope = {
      v: 1, type, requestId, userId: this.userId, role: role || this.role, source: 'http',
      ts, deadlineTs: ts + timeoutMs, ...body,
    };
    if (idempotencyKey) envelope.idempotencyKey = idempotencyKey;
    const w = this.waiter();
    try {
      await this.redis.rpush(`${this.prefix}cmd:${type}`, JSON.stringify(envelope));
      const got = await w.blpop(`${this.prefix}result:${requestId}`, Math.ceil(timeoutMs / 1000) + 1);
      if (!got) {
        const e = new Error(`Trading engine timeout — outcome unknown (${requestId})`);
        e.code = 'ENGINE_TIMEOUT';
        throw e;
      }
      return JSON.parse(got[1]);
    } finally {
      this.waiters.push(w);
    }
  }

  // Calls onEvent(type, data) for every account event with seq > fromSeq: first
  // those in the log, then live ones, each once and in seq order.
  async follow(fromSeq, onEvent) {
    const sub = new Redis(this.url);
    let last = fromSeq;
    const deliver = (channel, payload) => {
      const data = JSON.parse(payload);
      if (typeof data.seq !== 'number' || data.seq <= last) return;
      last = data.seq;
      onEvent(channel.slice(`${this.prefix}events:`.length), data);
    };
    const buffered = [];
    let live = false;
    sub.on('pmessage', (_pattern, channel, payload) => {
      if (channel === `${this.prefix}events:log`) return;
      if (live) deliver(channel, payload); else buffered.push([channel, payload]);
    });
    await sub.psubscribe(`${this.prefix}events:*`);
    const log = await this.redis.xrange(`${this.prefix}events:log`, '-', '+');
    for (const [, fields] of log) {
      const f = {};
      for (let i = 0; i < fields.length; i += 2) f[fields[i]] = fields[i + 1];
      deliver(f.channel, f.data);
    }
    for (const [c, p] of buffered) deliver(c, p);
    live = true;
    return { close: () => sub.disconnect(), lastSeq: () => last };
  }

  close() {
    this.redis.disconnect();
    for (const w of this.waiters) w.disconnect();
  }
}

module.exports = { EngineClient };
