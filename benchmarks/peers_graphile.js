// graphile-worker's half of benchmarks/peers.py (our benchmark code, not the peer's).
// Worker:   node peers_graphile.js worker  <url>  — prints "@@ start <i> <t>" at task start
// Enqueuer: node peers_graphile.js enqueue <url>  — reads <i> lines, addJob, prints "@@ enq <i> <t0>"
// t is CLOCK_MONOTONIC in seconds (libuv's hrtime), comparable with Python's
// time.clock_gettime(CLOCK_MONOTONIC) in the other processes.
"use strict";
const readline = require("readline");
const { run, makeWorkerUtils } = require("graphile-worker");

const now = () => Number(process.hrtime.bigint()) / 1e9;
const out = (line) => process.stdout.write(`@@ ${line}\n`);

async function worker(url) {
  const { Logger } = require("graphile-worker");
  const runner = await run({
    connectionString: url,
    concurrency: 1,
    pollInterval: 600000, // only a NOTIFY wakes it, as for every system in the run
    noHandleSignals: false,
    // Errors only: its default logger writes lines per job, time the other systems don't spend.
    logger: new Logger(() => (level, message) => { if (level === "error") console.error(message); }),
    taskList: {
      noop: async (payload) => {
        const t = now();
        out(`start ${payload.i} ${t}`);
      },
    },
  });
  out("ready");
  await runner.promise;
}

async function enqueue(url) {
  const utils = await makeWorkerUtils({ connectionString: url });
  await utils.migrate();
  out("ready");
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const i = line.trim();
    if (!i) continue;
    const t0 = now();
    await utils.addJob("noop", { i });
    out(`enq ${i} ${t0}`);
  }
  await utils.release();
}

const [role, url] = process.argv.slice(2);
(role === "worker" ? worker(url) : enqueue(url)).catch((err) => {
  console.error(err);
  process.exit(1);
});
