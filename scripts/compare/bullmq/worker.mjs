// A BullMQ worker process of scripts/compare: concurrency WORKER_CONCURRENCY (8), no-op jobs
// (`noop`) or one /bin/true process per job (`true`). The job's start time (wall clock, sub-ms)
// is its return value, so the producer can compute submit-to-start with the same clock.
import { Worker } from "bullmq";
import { spawnSync } from "node:child_process";

const [queueName, port] = process.argv.slice(2);
const concurrency = Number(process.env.WORKER_CONCURRENCY || 8);
const now = () => performance.timeOrigin + performance.now();

const worker = new Worker(
  queueName,
  async (job) => {
    const started = now();
    if (job.name === "true") spawnSync("/bin/true");
    return started;
  },
  { connection: { host: "127.0.0.1", port: Number(port) }, concurrency },
);
worker.on("error", (e) => console.error("worker error", e));
process.on("SIGTERM", async () => {
  await worker.close();
  process.exit(0);
});
