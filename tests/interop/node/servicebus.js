#!/usr/bin/env node
// Interop peer: @azure/service-bus (the JavaScript SDK) against a Service Bus endpoint.
// Usage: node servicebus.js COMMAND CONNECTION_STRING QUEUE [JSON]
// The connection string comes from the environment variable AMQP1Q_SB when CONNECTION_STRING
// is "-" (a key on a command line is visible to every user of the machine).
// Commands (JSON holds the arguments; each prints one JSON line and exits 0, or prints
// {"error": ...} and exits 1):
//   send      {messages: [MESSAGE...], maxSizeInBytes?}  -> {sent, batches}
//             createMessageBatch + tryAddMessage, sendMessages(batch) whenever one is full.
//   send-one  {message: MESSAGE}                         -> {sent: 1}  (sendMessages(message))
//   send-empty-batch {}                                  -> {error} (Service Bus refuses it)
//   receive   {count, settle: [HOW...], subQueue?, waitMs?}  -> {messages: [RECEIVED...]}
//             peek-lock; message i is settled by settle[i % settle.length]: "complete",
//             "abandon", "deadletter" (reason "js-reason", description "js-description"),
//             "renew" (renewMessageLock, then complete), "none".
//   schedule  {messages: [MESSAGE...], delayMs, cancel: [INDEX...]}
//             -> {sequenceNumbers, cancelled}  (scheduleMessages, cancelScheduledMessages)
// MESSAGE: {body, messageId?, subject?, contentType?, applicationProperties?}; a body
// {"$base64": "..."} is sent as raw bytes.
'use strict';
const { ServiceBusClient } = require('@azure/service-bus');

const [command, connectionArg, queue, argsJson = '{}'] = process.argv.slice(2);
if (!command || !connectionArg || !queue) {
  console.error('usage: servicebus.js COMMAND CONNECTION_STRING QUEUE [JSON]');
  process.exit(2);
}
const connectionString = connectionArg === '-' ? process.env.AMQP1Q_SB : connectionArg;
const args = JSON.parse(argsJson);

function toMessage(m) {
  const out = { ...m };
  if (m.body && typeof m.body === 'object' && m.body.$base64 !== undefined) {
    out.body = Buffer.from(m.body.$base64, 'base64');
  }
  return out;
}

function num(value) {
  if (value === undefined || value === null) return null;
  return typeof value.toNumber === 'function' ? value.toNumber() : Number(value);
}

function fromBody(body) {
  if (Buffer.isBuffer(body)) return { $base64: body.toString('base64') };
  return body === undefined ? null : body;
}

function received(m, extra) {
  return {
    body: fromBody(m.body),
    messageId: m.messageId === undefined ? null : String(m.messageId),
    subject: m.subject === undefined ? null : m.subject,
    contentType: m.contentType === undefined ? null : m.contentType,
    applicationProperties: m.applicationProperties || {},
    deliveryCount: m.deliveryCount,
    sequenceNumber: num(m.sequenceNumber),
    lockToken: m.lockToken === undefined ? null : m.lockToken,
    enqueuedTimeUtc: m.enqueuedTimeUtc ? m.enqueuedTimeUtc.getTime() : null,
    lockedUntilUtc: m.lockedUntilUtc ? m.lockedUntilUtc.getTime() : null,
    deadLetterReason: m.deadLetterReason === undefined ? null : m.deadLetterReason,
    deadLetterErrorDescription:
      m.deadLetterErrorDescription === undefined ? null : m.deadLetterErrorDescription,
    ...extra,
  };
}

async function send(client) {
  const sender = client.createSender(queue);
  const options = args.maxSizeInBytes ? { maxSizeInBytes: args.maxSizeInBytes } : {};
  let batch = await sender.createMessageBatch(options);
  let sent = 0;
  let batches = 0;
  for (const m of args.messages) {
    const message = toMessage(m);
    if (batch.tryAddMessage(message)) continue;
    if (batch.count === 0) throw new Error(`message ${sent} does not fit in an empty batch`);
    await sender.sendMessages(batch);
    sent += batch.count;
    batches += 1;
    batch = await sender.createMessageBatch(options);
    if (!batch.tryAddMessage(message)) throw new Error(`message ${sent} does not fit in a batch`);
  }
  if (batch.count > 0) {
    await sender.sendMessages(batch);
    sent += batch.count;
    batches += 1;
  }
  await sender.close();
  return { sent, batches };
}

async function sendOne(client) {
  const sender = client.createSender(queue);
  await sender.sendMessages(toMessage(args.message));
  await sender.close();
  return { sent: 1 };
}

async function sendEmptyBatch(client) {
  const sender = client.createSender(queue);
  const batch = await sender.createMessageBatch();
  await sender.sendMessages(batch);
  await sender.close();
  return { sent: 0 };
}

async function receive(client) {
  const options = { receiveMode: 'peekLock' };
  if (args.subQueue) options.subQueue = args.subQueue;
  const receiver = client.createReceiver(queue, options);
  const deadline = Date.now() + (args.waitMs || 10000);
  const settle = args.settle || ['complete'];
  const out = [];
  while (out.length < args.count && Date.now() < deadline) {
    const messages = await receiver.receiveMessages(args.count - out.length, {
      maxWaitTimeInMs: Math.max(200, deadline - Date.now()),
    });
    for (const m of messages) {
      const how = settle[out.length % settle.length];
      const extra = { settled: how };
      if (how === 'complete') {
        await receiver.completeMessage(m);
      } else if (how === 'abandon') {
        await receiver.abandonMessage(m);
      } else if (how === 'deadletter') {
        await receiver.deadLetterMessage(m, {
          deadLetterReason: 'js-reason',
          deadLetterErrorDescription: 'js-description',
        });
      } else if (how === 'renew') {
        extra.lockedUntilBeforeRenew = m.lockedUntilUtc.getTime();
        await new Promise((resolve) => setTimeout(resolve, 50));
        const until = await receiver.renewMessageLock(m);
        extra.renewedUntil = until.getTime();
        extra.lockedUntilAfterRenew = m.lockedUntilUtc.getTime();
        await receiver.completeMessage(m);
      } else if (how !== 'none') {
        throw new Error(`unknown settlement ${how}`);
      }
      out.push(received(m, extra));
    }
  }
  await receiver.close();
  return { messages: out };
}

async function schedule(client) {
  const sender = client.createSender(queue);
  const when = new Date(Date.now() + args.delayMs);
  const numbers = await sender.scheduleMessages(args.messages.map(toMessage), when);
  const cancelled = (args.cancel || []).map((i) => numbers[i]);
  if (cancelled.length) await sender.cancelScheduledMessages(cancelled);
  await sender.close();
  return {
    sequenceNumbers: numbers.map(num),
    cancelled: cancelled.map(num),
    scheduledFor: when.getTime(),
  };
}

const commands = {
  send,
  'send-one': sendOne,
  'send-empty-batch': sendEmptyBatch,
  receive,
  schedule,
};

(async () => {
  const run = commands[command];
  if (!run) {
    console.error(`unknown command ${command}`);
    process.exit(2);
  }
  const client = new ServiceBusClient(connectionString, {
    retryOptions: { maxRetries: 0, timeoutInMs: 20000 },
  });
  let code = 0;
  try {
    console.log(JSON.stringify(await run(client)));
  } catch (err) {
    console.log(JSON.stringify({ error: { name: err.name, code: err.code, message: String(err.message) } }));
    code = 1;
  }
  await client.close();
  process.exit(code);
})();
