#!/usr/bin/env node
// Interop peer: request and reply. Send COUNT requests with rhea, each with reply_to, and wait
// for every reply. Usage: node call.js HOST PORT USER PASS ADDRESS REPLY_ADDRESS COUNT [TIMEOUT_MS]
// REPLY_ADDRESS "dynamic" asks the broker for a dynamic node (a receiver with dynamic: true) and
// uses the address it gives; anything else is a queue address to receive replies from.
// Each request: subject "add", message_id "call-<i>", content_type application/json, body one
// data section {"a": i, "b": 1}. Prints one JSON summary line: the address replies came to, and
// each reply's correlation_id -> body text; exit 0 only if COUNT replies came, each to its own.
'use strict';
const rhea = require('rhea');

const [host, port, user, pass, address, replyArg, countArg, timeoutArg = '30000'] = process.argv.slice(2);
if (!address || !replyArg || countArg === undefined) {
  console.error('usage: call.js HOST PORT USER PASS ADDRESS REPLY_ADDRESS COUNT [TIMEOUT_MS]');
  process.exit(2);
}
const count = Number(countArg);
const summary = { reply_to: null, sent: 0, replies: {}, content_types: {}, errors: [] };

function finish(code) {
  console.log(JSON.stringify(summary));
  process.exit(code);
}

const timer = setTimeout(() => {
  summary.errors.push(`timed out after ${timeoutArg} ms`);
  finish(1);
}, Number(timeoutArg));

const container = rhea.create_container({ id: `amqp1q-call-${process.pid}` });
const connection = container.connect({
  host, port: Number(port), username: user, password: pass, reconnect: false,
});
let sender = null;

function sendAll() {
  while (summary.sent < count && sender.sendable()) {
    const i = summary.sent++;
    sender.send({
      message_id: `call-${i}`,
      subject: 'add',
      reply_to: summary.reply_to,
      content_type: 'application/json',
      durable: true,
      body: rhea.message.data_section(Buffer.from(JSON.stringify({ a: i, b: 1 }), 'utf8')),
    });
  }
}

container.on('receiver_open', (context) => {
  summary.reply_to = context.receiver.source.address;
  sender = connection.open_sender({ target: { address } });
});
container.on('sendable', () => { if (sender) sendAll(); });
container.on('message', (context) => {
  const message = context.message;
  const body = message.body && message.body.content ? message.body.content : message.body;
  summary.replies[String(message.correlation_id)] = Buffer.isBuffer(body) ? body.toString('utf8') : String(body);
  summary.content_types[String(message.correlation_id)] = message.content_type;
  if (Object.keys(summary.replies).length >= count) {
    clearTimeout(timer);
    container.removeAllListeners('disconnected');
    connection.close();
    finish(0);
  }
});
for (const event of ['sender_error', 'receiver_error', 'session_error', 'connection_error', 'protocol_error', 'error']) {
  container.on(event, (context) => {
    const err = (context && (context.error || (context.sender && context.sender.error) ||
      (context.receiver && context.receiver.error) ||
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

if (replyArg === 'dynamic') {
  connection.open_receiver({ source: { dynamic: true } });
} else {
  connection.open_receiver({ source: { address: replyArg } });
}
