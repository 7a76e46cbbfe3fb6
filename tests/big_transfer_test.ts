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

Deno.test("2 GB down and 2 GB up with equal checksums and flat memory", async (t) => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const client = await startClient(processes, relay, [String(origin.port), "bulk"]);
  const url = client.urls[0];
  const size = 2 * GB;
  const expected = patternSha256(size);

  await t.step("download", async () => {
    const stop = sampleRss([relay.child.pid, client.child.pid]);
    const started = performance.now();
    const response = await visit(`${url}/download?bytes=${size}`);
    const got = await streamSha256(response.body!);
    const seconds = (performance.now() - started) / 1000;
    const [relayMB, clientMB] = stop();
    console.log(
      `download: ${
        (size / 2 ** 20 / seconds).toFixed(0)
      } MB/s, peak RSS relay ${relayMB} MB, client ${clientMB} MB`,
    );
    assert.deepEqual(got, { sha256: expected, bytes: size });
    assert.ok(
      relayMB < RSS_LIMIT_MB && clientMB < RSS_LIMIT_MB,
      `peak RSS relay ${relayMB} MB, client ${clientMB} MB`,
    );
  });
  await t.step("upload", async () => {
    const stop = sampleRss([relay.child.pid, client.child.pid]);
    const started = performance.now();
    // Chunked, as a streamed upload of unknown size goes.
    const response = await visit(`${url}/echo`, { method: "POST", body: patternStream(size) });
    const seen = await response.json();
    const seconds = (performance.now() - started) / 1000;
    const [relayMB, clientMB] = stop();
    console.log(
      `upload: ${
        (size / 2 ** 20 / seconds).toFixed(0)
      } MB/s, peak RSS relay ${relayMB} MB, client ${clientMB} MB`,
    );
    assert.equal(seen.bytes, size);
    assert.equal(seen.sha256, expected);
    assert.ok(
      relayMB < RSS_LIMIT_MB && clientMB < RSS_LIMIT_MB,
      `peak RSS relay ${relayMB} MB, client ${clientMB} MB`,
    );
  });
});
