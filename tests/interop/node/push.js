#!/usr/bin/env node
// Interop peer: send COUNT messages with rhea and wait until the broker settles each one.
// Usage: node push.js HOST PORT USER PASS ADDRESS COUNT [BODY] [SUBJECT] [TIMEOUT_MS]
// Each message: body = one AMQP data section holding BODY (UTF-8; default "hello"), subject =
// SUBJECT (the job name; default "interop.job"), message_id = "push-<i>", durable, and
// application_properties {"x-test": "value", "x-index": i}.
// Prints one JSON summary line; exit 0 only if every message was accepted.
'use strict';
const rhea = require('rhea');

const [host, port, user, pass, address, countArg, body = 'hello', subject = 'interop.job', timeoutArg = '30000'] =
  process.argv.slice(2);
if (!address || countArg === undefined) {
  console.error('usage: push.js HOST PORT USER PASS ADDRESS COUNT [BODY] [SUBJECT] [TIMEOUT_MS]');
  process.exit(2);
}
const count = Number(countArg);
const summary = { address, sent: 0, accepted: 0, rejected: 0, released: 0, errors: [] };

function finish(code) {
  console.log(JSON.stringify(summary));
  process.exit(code);
}

const timer = setTimeout(() => {
  summary.errors.push(`timed out after ${timeoutArg} ms`);
  finish(1);
}, Number(timeoutArg));

const container = rhea.create_container({ id: `amqp1q-push-${process.pid}` });
function settled() {
  if (summary.accepted + summary.rejected + summary.released < count) return;
  clearTimeout(timer);
  container.removeAllListeners('disconnected');
  connection.close();
  finish(summary.accepted === count ? 0 : 1);
}

container.on('sendable', (context) => {
  while (summary.sent < count && context.sender.sendable()) {
    const i = summary.sent++;
    context.sender.send({
      message_id: `push-${i}`,
      subject,
      durable: true,
      application_properties: { 'x-test': 'value', 'x-index': i },
      body: rhea.message.data_section(Buffer.from(body, 'utf8')),
    });
  }
});
container.on('accepted', () => { summary.accepted++; settled(); });
container.on('rejected', (context) => {
  summary.rejected++;
  summary.errors.push({ rejected: context.delivery.remote_state && context.delivery.remote_state.error });
  settled();
});
// rhea reports a modified outcome as 'released' (treat_modified_as_released defaults to true)
container.on('released', () => { summary.released++; settled(); });
for (const event of ['sender_error', 'session_error', 'connection_error', 'protocol_error', 'error']) {
  container.on(event, (context) => {
    const err = (context && (context.error || (context.sender && context.sender.error) ||
      (context.session && context.session.error) || (context.connection && context.connection.error))) || context;
    summary.errors.push({ [event]: String(err && err.description ? `${err.condition}: ${err.description}` : err) });
    clearTimeout(timer);
    finish(1);
  });
}
container.on('disconnected', (context) => {
  summary.errors.push({ disconnected: String(context.error || 'connection lost') });
  clearTimeout(timer);
  finish(1);
});

const connection = container.connect({
  host, port: Number(port), username: user, password: pass, reconnect: false,
});
if (count === 0) {
  connection.on('connection_open', () => settled());
} else {
  connection.open_sender({ target: { address } });
}
