/**
 * The resumable layer over the in-process transport: streams both ways carry
 * on intact across cuts of the physical connection, a sender keeps no more
 * than its window, and a link not back within the grace period ends them.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { memoryPair } from "./memory.ts";
import { ResumableConnection } from "./resumable.ts";
import { SEND_WINDOW_BYTES } from "./resumable_stream.ts";
import type { TunnelStream } from "./types.ts";

/** Deterministic bytes: `count` chunks of 64 KiB, each filled from a counter. */
function chunks(count: number, seed: number): Uint8Array[] {
  return Array.from(
    { length: count },
    (_, i) => new Uint8Array(64 * 1024).map((_, j) => (i * 7 + j + seed) & 255),
  );
}

function sha256(parts: Uint8Array[]): string {
  const hash = createHash("sha256");
  for (const part of parts) hash.update(part);
  return hash.digest("hex");
}

async function send(stream: TunnelStream, parts: Uint8Array[]) {
  const writer = stream.writable.getWriter();
  for (const part of parts) await writer.write(part.slice());
  await writer.close();
}

/** Reads `stream` to its end; `at` runs once the bytes read reach each of its offsets (a cut, say). */
async function receive(
  stream: TunnelStream,
  at: { offsets: number[]; run: () => Promise<void> } = { offsets: [], run: async () => {} },
): Promise<{ sha: string; bytes: number }> {
  const parts: Uint8Array[] = [];
  let bytes = 0;
  for await (const part of stream.readable) {
    parts.push(part);
    bytes += part.length;
    if (bytes >= at.offsets[0]) (at.offsets.shift(), await at.run());
  }
  return { sha: sha256(parts), bytes: parts.reduce((sum, part) => sum + part.length, 0) };
}

function pair(graceMs: number) {
  let [agentSide, relaySide] = memoryPair();
  const agent = new ResumableConnection(agentSide, "agent", graceMs);
  const relay = new ResumableConnection(relaySide, "relay", graceMs);
  return {
    agent,
    relay,
    /** Drops the physical link (both ends see it fail), waits, and brings a new one up. */
    async cut(pauseMs: number) {
      relaySide.close({ code: 9, reason: "cut" });
      await new Promise((resolve) => setTimeout(resolve, pauseMs));
      [agentSide, relaySide] = memoryPair();
      relay.attach(relaySide);
      agent.attach(agentSide);
    },
  };
}

Deno.test("resumable: 32 MiB each way crosses three cuts of the link intact", async () => {
  const link = pair(10_000);
  const stream = (await link.relay.openStream())!;
  const { value: peer } = await link.agent.incomingStreams.getReader().read();
  const down = chunks(512, 1), up = chunks(512, 2);
  let cuts = 0;
  const cutAt = { offsets: [8, 16, 24].map((mib) => mib * 1024 * 1024), run: () => (cuts++, link.cut(30)) };
  const [, downAt, , upAt] = await Promise.all([
    send(stream, down),
    receive(peer!, cutAt),
    send(peer!, up),
    receive(stream),
  ]);
  assert.equal(cuts, 3);
  assert.equal(downAt.bytes, 512 * 64 * 1024);
  assert.equal(downAt.sha, sha256(down));
  assert.equal(upAt.sha, sha256(up));
  link.agent.close({ code: 0, reason: "done" });
  link.relay.close({ code: 0, reason: "done" });
});

Deno.test("resumable: a stream opened during the outage goes through once the link is back", async () => {
  const [agentSide, relaySide] = memoryPair();
  const agent = new ResumableConnection(agentSide, "agent", 10_000);
  const relay = new ResumableConnection(relaySide, "relay", 10_000);
  relaySide.close({ code: 9, reason: "cut" });
  const opened = relay.openStream();
  const [agentAgain, relayAgain] = memoryPair();
  setTimeout(() => (relay.attach(relayAgain), agent.attach(agentAgain)), 50);
  const stream = (await opened)!;
  await send(stream, chunks(4, 3));
  const { value: peer } = await agent.incomingStreams.getReader().read();
  assert.equal((await receive(peer!)).sha, sha256(chunks(4, 3)));
  agent.close({ code: 0, reason: "done" });
  relay.close({ code: 0, reason: "done" });
});

Deno.test("resumable: a sender keeps at most its window while the reader does not read", async () => {
  const link = pair(10_000);
  const stream = (await link.relay.openStream())!;
  const writer = stream.writable.getWriter();
  let written = 0;
  const writing = (async () => {
    for (const part of chunks(128, 4)) {
      await writer.write(part);
      written += part.length;
    }
  })();
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.ok(written <= SEND_WINDOW_BYTES + 64 * 1024, `${written} bytes written past a window`);
  link.agent.close({ code: 0, reason: "done" });
  link.relay.close({ code: 0, reason: "done" });
  await writing.catch(() => {
    // Reset by the close: that is how this test stops it.
  });
});

Deno.test("resumable: a link not back within the grace period ends its streams", async () => {
  const [agentSide, relaySide] = memoryPair();
  const agent = new ResumableConnection(agentSide, "agent", 200);
  const relay = new ResumableConnection(relaySide, "relay", 200);
  const stream = (await relay.openStream())!;
  relaySide.close({ code: 9, reason: "cut" });
  const reading = stream.readable.getReader().read();
  await assert.rejects(reading, /link not back within 200 ms/);
  assert.match((await relay.closed).reason, /not back/);
  assert.match((await agent.closed).reason, /not back/);
});

Deno.test("resumable: a reader that cancels stops the other side's writer, not what it sends back", async () => {
  const link = pair(10_000);
  const stream = (await link.relay.openStream())!;
  const upload = stream.writable.getWriter();
  await upload.write(chunks(1, 1)[0]);
  const { value: peer } = await link.agent.incomingStreams.getReader().read();
  // The agent's origin stopped reading the upload: it cancels, then answers in full.
  await peer!.readable.cancel();
  const answered = send(peer!, chunks(40, 2));
  await assert.rejects(async () => {
    for (const part of chunks(200, 3)) await upload.write(part);
  }, /stream ended/);
  assert.equal((await receive(stream)).sha, sha256(chunks(40, 2)));
  await answered;
  link.agent.close({ code: 0, reason: "done" });
  link.relay.close({ code: 0, reason: "done" });
});
