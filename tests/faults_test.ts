/**
 * Faults mid-transfer: the client, the origin or the relay killed with
 * SIGKILL while a visitor downloads. The visitor must see a broken transfer
 * (never a clean short body), and the system must come back by itself.
 */
import assert from "node:assert/strict";
import {
  Child,
  onlineUrls,
  Processes,
  restartRelay,
  startClient,
  startOrigin,
  startRelay,
} from "./helpers/processes.ts";
import { eventually, visit } from "./helpers/visit.ts";
import { streamSha256 } from "./helpers/pattern.ts";

const BIG = 1024 * 1024 * 1024;

/** Starts a 1 GB download, reads a little of it, and returns its (still running) completion. */
async function downloadInProgress(url: string) {
  const response = await visit(`${url}/download?bytes=${BIG}`);
  assert.equal(response.status, 200);
  const reader = response.body!.getReader();
  let received = 0;
  while (received < 1024 * 1024) received += (await reader.read()).value!.length;
  const rest = new ReadableStream({
    pull: async (c) => {
      const { value, done } = await reader.read();
      if (done) c.close();
      else c.enqueue(value);
    },
  });
  return streamSha256(rest).then((result) => ({ ...result, bytes: result.bytes + received }));
}

/** An origin, a relay and a client for tunnel `name`, with a 1 GB download under way through it. */
async function downloading(processes: Processes, name: string) {
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const client = await startClient(processes, relay, [String(origin.port), name]);
  return { origin, relay, client, transfer: downloadInProgress(client.urls[0]) };
}

/** Polls until `url` answers 200; returns how long that took. */
async function recovery(url: string): Promise<number> {
  const started = performance.now();
  await eventually(`${url}/`, 200, 20_000);
  return performance.now() - started;
}

Deno.test("client killed mid-download: the visitor's transfer breaks, the restarted client serves again", async () => {
  await using processes = new Processes();
  const { origin, relay, client, transfer } = await downloading(processes, "victim");
  client.child.kill("SIGKILL");
  await assert.rejects(transfer, "the visitor sees an error, not a clean end");
  const offline = await visit(`${client.urls[0]}/`);
  assert.ok([502, 503].includes(offline.status), `status ${offline.status}`);
  await offline.body?.cancel();
  await startClient(processes, relay, [String(origin.port), "victim"], { configDir: client.configDir });
  console.log(`client restart: serving again after ${(await recovery(client.urls[0])).toFixed(0)} ms`);
});

Deno.test("origin killed mid-download: the transfer breaks, visitors get 502, then it recovers on restart", async () => {
  await using processes = new Processes();
  const { origin, client, transfer } = await downloading(processes, "fragile");
  origin.child.kill("SIGKILL");
  await assert.rejects(transfer);
  const down = await visit(`${client.urls[0]}/`);
  assert.equal(down.status, 502);
  await down.body?.cancel();
  await startOrigin(processes, origin.port);
  console.log(`origin restart: serving again after ${(await recovery(client.urls[0])).toFixed(0)} ms`);
});

Deno.test("relay killed mid-download: the transfer breaks; after a restart the client comes back by itself", async () => {
  await using processes = new Processes();
  const { relay, client, transfer } = await downloading(processes, "phoenix");
  const before = client.child.lines.length;
  relay.child.kill("SIGKILL");
  await assert.rejects(transfer);
  const started = performance.now();
  await restartRelay(processes, relay);
  const [url] = await onlineUrls(client.child, 1, before);
  assert.equal(url, client.urls[0]);
  await recovery(url);
  console.log(`relay restart: client back after ${(performance.now() - started).toFixed(0)} ms`);
});

Deno.test("a relay whose TCP port answers but whose UDP port is silent gets a 'UDP is probably blocked' message", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes);
  // A real relay's info document served from a port with no QUIC behind it.
  const info = await (await fetch(`http://127.0.0.1:${relay.quicPort}/.well-known/reverprox.json`)).json();
  const tcpOnly = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => Response.json(info),
  );
  try {
    const started = performance.now();
    const client = processes.add(
      Child.script("client", "client.ts", [
        "3000",
        "udp",
        `--server=quic://127.0.0.1:${tcpOnly.addr.port}`,
      ], { REVERPROX_CONFIG_DIR: await processes.tempDir() }),
    );
    await client.waitFor(/UDP is probably blocked between here and the relay/);
    assert.ok(performance.now() - started < 10_000);
  } finally {
    await tcpOnly.shutdown();
  }
});
