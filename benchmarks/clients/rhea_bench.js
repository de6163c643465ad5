#!/usr/bin/env node
// Reference client: rhea (Node) doing the amqp1q benchmark's work.
//
// Push N durable messages (1 KiB data-section body by default) as fast as link credit allows
// and count them confirmed once the broker has accepted every one; then receive N with a credit
// window of --prefetch and accept each explicitly (autoaccept off). One connection serves both
// phases; each phase is timed from the moment its link is opened. The address is RabbitMQ's
// /amq/queue/QUEUE unless --address names another (Qpid's brokers and amqp1q's take the name).
// A URL without a user name logs in anonymously.
//
// Prints one JSON line: {"client", "n", "push_per_s", "consume_per_s", "push_cpu_us_per_job",
// "consume_cpu_us_per_job"}; CPU is this process's user+system time (process.cpuUsage()) for
// the phase, divided by N. Between the phases it prints `#consume` (the driver reads the
// broker's CPU time there).
//
//   node benchmarks/clients/rhea_bench.js --url amqp://guest:guest@127.0.0.1:5672 \
//       --queue bench-q --n 20000 --prefetch 100 --size 1024
'use strict';

const rhea = require('rhea');

function parseArgs(argv) {
  const args = {
    url: 'amqp://guest:guest@127.0.0.1:5672',
    host: null,
    port: null,
    queue: null,
    address: null,
    n: 20000,
    prefetch: 100,
    size: 1024,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const eq = flag.indexOf('=');
    const name = (eq >= 0 ? flag.slice(0, eq) : flag).replace(/^--/, '');
    if (!flag.startsWith('--') || !(name in args)) {
      fail(`unknown argument ${flag}`);
    }
    const value = eq >= 0 ? flag.slice(eq + 1) : argv[++i];
    if (value === undefined) fail(`${flag} needs a value`);
    args[name] = ['n', 'prefetch', 'size', 'port'].includes(name) ? Number(value) : value;
  }
  if (!args.queue) fail('--queue is required');
  return args;
}

function fail(why) {
  process.stderr.write(`rhea: ${why}\n`);
  process.exit(1);
}

function round(x, digits) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const url = new URL(args.url);
  const n = args.n;
  const address = args.address || `/amq/queue/${args.queue}`;
  const body = rhea.message.data_section(Buffer.alloc(args.size, 'x'));

  const container = rhea.create_container();
  const options = {
    host: args.host || url.hostname,
    port: args.port || Number(url.port || 5672),
    reconnect: false,
  };
  if (url.username) {
    options.username = decodeURIComponent(url.username);
    options.password = decodeURIComponent(url.password);
  }
  const connection = container.connect(options);

  let t0 = null;
  const mark = () => {
    t0 = { wall: process.hrtime.bigint(), cpu: process.cpuUsage() };
  };
  const elapsed = () => {
    const cpu = process.cpuUsage(t0.cpu);
    return {
      wall: Number(process.hrtime.bigint() - t0.wall) / 1e9,
      cpu: (cpu.user + cpu.system) / 1e6,
    };
  };

  let push = null;
  let sent = 0;
  let accepted = 0;
  let received = 0;

  function startConsume() {
    mark();
    const receiver = connection.open_receiver({
      source: { address },
      credit_window: args.prefetch,
      autoaccept: false,
    });
    receiver.on('message', (context) => {
      context.delivery.accept();
      received += 1;
      if (received === n) {
        const consume = elapsed();
        receiver.close();
        connection.close();
        const result = {
          client: 'rhea',
          n,
          push_per_s: round(n / push.wall, 1),
          consume_per_s: round(n / consume.wall, 1),
          push_cpu_us_per_job: round((push.cpu / n) * 1e6, 2),
          consume_cpu_us_per_job: round((consume.cpu / n) * 1e6, 2),
        };
        process.stdout.write(`${JSON.stringify(result)}\n`);
      }
    });
  }

  connection.once('connection_open', () => {
    mark();
    const sender = connection.open_sender({ target: { address } });
    sender.on('sendable', () => {
      while (sent < n && sender.sendable()) {
        sender.send({ body, durable: true, subject: 'bench' });
        sent += 1;
      }
    });
    sender.on('accepted', () => {
      accepted += 1;
      if (accepted === n) {
        push = elapsed();
        process.stdout.write('#consume\n');
        sender.close();
        startConsume();
      }
    });
    sender.on('rejected', (context) => fail(`broker rejected a message: ${context.delivery}`));
    sender.on('released', () => fail('broker released a message'));
  });

  const onError = (what) => (context) => {
    const err = context.error || (context.connection && context.connection.error);
    fail(`${what}: ${err ? err.message || JSON.stringify(err) : 'unknown'}`);
  };
  connection.on('connection_error', onError('connection error'));
  connection.on('sender_error', onError('sender error'));
  connection.on('receiver_error', onError('receiver error'));
  connection.on('disconnected', (context) => {
    if (received < n) onError('disconnected')(context);
  });
}

main();
