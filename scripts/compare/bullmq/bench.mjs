// The BullMQ producer of scripts/compare. One shape per run, printed as one JSON line:
//   node bench.mjs QUEUE PORT sequential N      one producer, one add at a time
//   node bench.mjs QUEUE PORT inflight N C      C adds in flight
//   node bench.mjs QUEUE PORT batch N           addBulk in chunks of 1000
//   node bench.mjs QUEUE PORT idle N RATE       one add every 1/RATE s (idle queue latency)
//   node bench.mjs QUEUE PORT true N C          /bin/true jobs, C adds in flight
//   node bench.mjs QUEUE PORT cleanup           empties the queue (after a run with KEEP_JOBS=1)
// End to end = first add (client clock) -> the last job's finishedOn. Workers run in their own
// processes (worker.mjs), started by run.sh.
import { Queue } from "bullmq";

const [queueName, port, shape, nArg, cArg] = process.argv.slice(2);
const n = Number(nArg);
const connection = { host: "127.0.0.1", port: Number(port) };
const queue = new Queue(queueName, { connection });
const now = () => performance.timeOrigin + performance.now();
const name = shape === "true" ? "true" : "noop";
const sent = new Map();

async function add(i) {
  const t = now();
  const job = await queue.add(name, { i });
  sent.set(job.id, t);
}

if (shape === "cleanup") {
  await queue.obliterate({ force: true });
  await queue.close();
  process.exit(0);
}
const t0 = now();
const cpu0 = process.cpuUsage(); // this process's CPU over the run (scripts/compare's CPU table)
if (shape === "sequential") {
  for (let i = 0; i < n; i++) await add(i);
} else if (shape === "inflight" || shape === "true") {
  const c = Number(cArg || 32);
  let next = 0;
  await Promise.all(
    Array.from({ length: c }, async () => {
      while (next < n) await add(next++);
    }),
  );
} else if (shape === "batch") {
  for (let i = 0; i < n; i += 1000) {
    const t = now();
    const jobs = await queue.addBulk(
      Array.from({ length: Math.min(1000, n - i) }, (_, k) => ({ name, data: { i: i + k } })),
    );
    for (const j of jobs) sent.set(j.id, t);
  }
} else if (shape === "idle") {
  const rate = Number(cArg || 50);
  const adds = [];
  for (let i = 0; i < n; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    adds.push(add(i));
  }
  await Promise.all(adds);
} else {
  throw new Error(`unknown shape ${shape}`);
}
const submitSecs = (now() - t0) / 1000;

// Wait (bounded: 10 minutes) until every job completed.
const deadline = Date.now() + 600_000;
for (;;) {
  const c = await queue.getJobCounts("completed", "failed");
  if (c.completed + c.failed >= n) break;
  if (Date.now() > deadline) throw new Error(`timed out: ${JSON.stringify(c)}`);
  await new Promise((r) => setTimeout(r, 5));
}
let last = 0;
const lat = [];
for (let start = 0; start < n; start += 1000) {
  const jobs = await queue.getJobs(["completed"], start, start + 999, true);
  for (const j of jobs) {
    last = Math.max(last, j.finishedOn);
    const s = sent.get(j.id);
    if (s !== undefined && typeof j.returnvalue === "number") lat.push(j.returnvalue - s);
  }
}
lat.sort((a, b) => a - b);
const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] : null);
const e2eSecs = (last - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
console.log(
  JSON.stringify({
    system: "bullmq",
    shape,
    jobs: n,
    submit_rate: n / submitSecs,
    e2e_rate: n / e2eSecs,
    start_p50_ms: pct(50),
    start_p99_ms: pct(99),
    cpu_s: (cpu.user + cpu.system) / 1e6,
  }),
);
// KEEP_JOBS=1: the queue is left as it is, for `cleanup` to empty once scripts/compare has
// taken its CPU figures (so the deletion is not counted as the run's).
if (!process.env.KEEP_JOBS) await queue.obliterate({ force: true });
await queue.close();
