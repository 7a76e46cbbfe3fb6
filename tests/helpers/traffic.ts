/**
 * The traffic every transport must carry, as test steps: a request, 100 MB each way with equal checksums,
 * a WebSocket, server-sent events, and relay and client each below 200 MB resident at peak.
 * @module
 */
import assert from "node:assert/strict";
import { memoryMB } from "./processes.ts";
import { visit } from "./visit.ts";
import { patternSha256, patternStream, streamSha256 } from "./pattern.ts";
import { connectWebSocket } from "./websocket.ts";

const MB = 1024 * 1024;

/** Runs the steps against the tunnel at `url`; `pids` are the relay's and the client's. */
export async function checkTraffic(
  t: Deno.TestContext,
  url: string,
  pids: { relay: number; client: number },
): Promise<void> {
  await t.step("a request", async () => {
    const response = await visit(`${url}/status/201`);
    assert.equal(response.status, 201);
    await response.body?.cancel();
  });
  await t.step("100 MB down", async () => {
    const response = await visit(`${url}/download?bytes=${100 * MB}`);
    assert.deepEqual(await streamSha256(response.body!), {
      sha256: patternSha256(100 * MB),
      bytes: 100 * MB,
    });
  });
  await t.step("100 MB up", async () => {
    const response = await visit(`${url}/echo`, { method: "POST", body: patternStream(100 * MB) });
    const seen = await response.json();
    assert.deepEqual([seen.bytes, seen.sha256], [100 * MB, patternSha256(100 * MB)]);
  });
  await t.step("WebSocket", async () => {
    const ws = connectWebSocket(`${url}/ws`);
    await ws.opened;
    ws.socket.send("hello over the tunnel");
    assert.equal((await ws.next()).data.toString(), "hello over the tunnel");
    ws.socket.close();
  });
  await t.step("SSE", async () => {
    const response = await visit(`${url}/sse?count=3&interval=50`);
    assert.equal((await response.text()).match(/^id: /gm)?.length, 3);
  });
  await t.step("the relay and the client each stayed below 200 MB resident at peak", () => {
    // Idle, each sits near 80 MB: a transport that buffered a body would show it here.
    const peaks = [pids.relay, pids.client].map((pid) => memoryMB(pid).peak);
    assert.ok(peaks.every((peak) => peak < 200), `peak RSS relay ${peaks[0]} MB, client ${peaks[1]} MB`);
  });
}
