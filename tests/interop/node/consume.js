#!/usr/bin/env node
// Interop peer: receive COUNT messages with rhea (credit = COUNT), accept each, and print one
// JSON line per message: subject, body_base64, body_kind ("data" | "value" | "sequence"),
// application_properties, message_id, priority, delivery_count (null when the message has no
// header field; RabbitMQ 3.10 never sets delivery_count, even on redelivery).
// Usage: node consume.js HOST PORT USER PASS ADDRESS COUNT TIMEOUT_MS
// Exit 0 after COUNT messages; 1 on timeout or any link/session/connection error.
'use strict';
const rhea = require('rhea');

const [host, port, user, pass, address, countArg, timeoutArg = '10000'] = process.argv.slice(2);
if (!address || countArg === undefined) {
  console.error('usage: consume.js HOST PORT USER PASS ADDRESS COUNT TIMEOUT_MS');
  process.exit(2);
}
const count = Number(countArg);
let received = 0;

function done(code, why) {
  if (why) console.error(`consume.js: ${why} (received ${received} of ${count})`);
  process.exit(code);
}
const timer = setTimeout(() => done(1, `timed out after ${timeoutArg} ms`), Number(timeoutArg));

function describeBody(body) {
  // rhea decodes data and amqp-sequence sections into a Section {typecode, content, multiple}.
  if (body && typeof body === 'object' && body.constructor && body.constructor.name === 'Section') {
    const kind = body.typecode === 0x75 ? 'data' : 'sequence';
    const parts = body.multiple ? body.content : [body.content];
    const bytes = kind === 'data'
      ? Buffer.concat(parts.map((p) => Buffer.from(p)))
      : Buffer.from(JSON.stringify(parts), 'utf8');
    return { body_kind: kind, body_base64: bytes.toString('base64') };
  }
  let bytes;
  if (Buffer.isBuffer(body)) bytes = body;
  else if (typeof body === 'string') bytes = Buffer.from(body, 'utf8');
  else bytes = Buffer.from(JSON.stringify(body === undefined ? null : body), 'utf8');
  return { body_kind: 'value', body_base64: bytes.toString('base64') };
}

function toJSONable(value) {
  return JSON.parse(JSON.stringify(value === undefined ? null : value, (_k, v) =>
    typeof v === 'bigint' ? v.toString() : v));
}

const container = rhea.create_container({ id: `amqp1q-consume-${process.pid}` });
container.on('message', (context) => {
  if (received >= count) return; // over-delivery beyond our credit cannot happen; be safe anyway
  const m = context.message;
  received++;
  context.delivery.accept();
  console.log(JSON.stringify({
    subject: m.subject === undefined ? null : m.subject,
    ...describeBody(m.body),
    application_properties: toJSONable(m.application_properties),
    message_id: toJSONable(m.message_id),
    priority: m.priority === undefined ? null : m.priority,
    delivery_count: m.delivery_count === undefined ? null : m.delivery_count,
  }));
  if (received === count) {
    clearTimeout(timer);
    container.removeAllListeners('disconnected');
    context.connection.close();
    // exit once the close (and thus the accept dispositions before it) has been written
    context.connection.on('connection_close', () => done(0));
    setTimeout(() => done(0), 1000);
  }
});
for (const event of ['receiver_error', 'session_error', 'connection_error', 'protocol_error', 'error']) {
  container.on(event, (context) => {
    const err = (context && (context.error || (context.receiver && context.receiver.error) ||
      (context.session && context.session.error) || (context.connection && context.connection.error))) || context;
    done(1, `${event}: ${err && err.description ? `${err.condition}: ${err.description}` : err}`);
  });
}
container.on('disconnected', (context) => done(1, `disconnected: ${context.error || 'connection lost'}`));

const connection = container.connect({
  host, port: Number(port), username: user, password: pass, reconnect: false,
});
if (count === 0) {
  clearTimeout(timer);
  connection.on('connection_open', () => { connection.close(); done(0); });
} else {
  connection.open_receiver({ source: { address }, credit_window: 0, autoaccept: false })
    .add_credit(count);
}
