/**
 * 2 GB each way through one tunnel, with the relay's and the client's memory
 * sampled throughout: backpressure must hold it flat (no body is buffered).
 */
import assert from "node:assert/strict";
import { memoryMB, Processes, startClient, startOrigin, startRelay } from "./helpers/processes.ts";
import { visit } from "./helpers/visit.ts";
import { patternSha256, patternStream, streamSha256 } from "./helpers/pattern.ts";

const GB = 1024 * 1024 * 1024;
/** Resident memory a relay or client may reach while moving 2 GB (idle, each sits near 80 MB). */
const RSS_LIMIT_MB = 200;

/** Samples VmRSS of `pids` every 100 ms until stopped; returns the peak per pid in MB. */
function sampleRss(pids: number[]) {
  const peak = new Map(pids.map((pid) => [pid, 0]));
  const timer = setInterval(() => {
    for (const pid of pids) {
      const { now } = memoryMB(pid);
      if (Number.isFinite(now)) peak.set(pid, Math.max(peak.get(pid)!, now));
    }
  }, 100);
  return () => {
    clearInterval(timer);
    return pids.map((pid) => Math.round(peak.get(pid)!));
  };
}

/** Moves `bytes` with `transfer` while sampling `pids`; logs the speed and fails past RSS_LIMIT_MB. */
async function measured(label: string, bytes: number, pids: number[], transfer: () => Promise<void>) {
  const stop = sampleRss(pids);
  const started = performance.now();
  await transfer();
  const seconds = (performance.now() - started) / 1000;
  const [relayMB, clientMB] = stop();
  const peaks = `peak RSS relay ${relayMB} MB, client ${clientMB} MB`;
  console.log(`${label}: ${(bytes / 2 ** 20 / seconds).toFixed(0)} MB/s, ${peaks}`);
  assert.ok(relayMB < RSS_LIMIT_MB && clientMB < RSS_LIMIT_MB, peaks);
}

Deno.test("2 GB down and 2 GB up with equal checksums and flat memory", async (t) => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const client = await startClient(processes, relay, [String(origin.port), "bulk"]);
  const url = client.urls[0];
  const size = 2 * GB;
  const expected = patternSha256(size);
  const pids = [relay.child.pid, client.child.pid];

  await t.step("download", async () => {
    await measured("download", size, pids, async () => {
      const response = await visit(`${url}/download?bytes=${size}`);
      assert.deepEqual(await streamSha256(response.body!), { sha256: expected, bytes: size });
    });
  });
  await t.step("upload", async () => {
    await measured("upload", size, pids, async () => {
      // Chunked, as a streamed upload of unknown size goes.
      const response = await visit(`${url}/echo`, { method: "POST", body: patternStream(size) });
      const seen = await response.json();
      assert.equal(seen.bytes, size);
      assert.equal(seen.sha256, expected);
    });
  });
});
