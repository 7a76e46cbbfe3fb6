/**
 * Cuts of the link between agent and relay, with neither process dying: a
 * test-owned forwarder between them black-holes the QUIC datagrams past the
 * idle timeout, then passes them again. The agent reconnects and keeps its
 * URL; with `--grace` (streams that survive the link, `lib/transport/resumable.ts`)
 * a download in progress across the cut completes intact.
 */
import assert from "node:assert/strict";
import {
  Child,
  memoryMB,
  onlineUrls,
  Processes,
  startClient,
  startOrigin,
  startRelay,
} from "./helpers/processes.ts";
import { patternSha256, patternStream, streamSha256 } from "./helpers/pattern.ts";
import { connectWebSocket } from "./helpers/websocket.ts";
import { UdpForwarder } from "./helpers/udp_forwarder.ts";
import { eventually, visit } from "./helpers/visit.ts";

/**
 * A relay, and a client (its arguments `args`; an http tunnel to a new origin when `args` starts with a
 * name) that reaches the relay through a {@link UdpForwarder}.
 */
async function behindForwarder(processes: Processes, args: string[]) {
  const relay = await startRelay(processes, { args: ["--grace=60", "--tcp-ports=23400-23499"] });
  const forwarder = await UdpForwarder.start(relay.quicPort);
  processes.defer(() => forwarder[Symbol.asyncDispose]());
  const http = args[0] !== "tcp";
  const target = http ? [String((await startOrigin(processes)).port)] : [];
  const client = await startClient(processes, { ...relay, server: forwarder.server }, [
    ...target,
    ...args,
    "--log",
  ]);
  return { client, forwarder, relay, target };
}

/**
 * Passes `stream` on, and once `at` bytes went through, cuts the link: black-holes it until the client
 * says it reconnects (past the idle timeout, three missed 1 s heartbeats, on both ends) and 2 s more.
 * `cut` settles when the link passes datagrams again.
 */
function cutAfter(stream: ReadableStream<Uint8Array>, at: number, link: UdpForwarder, client: Child) {
  let seen = 0;
  const cut = Promise.withResolvers<void>();
  const passed = stream.pipeThrough(
    new TransformStream({
      async transform(chunk, controller) {
        controller.enqueue(chunk);
        const before = seen;
        seen += chunk.length;
        if (before >= at || seen < at) return;
        link.blackHole(true);
        await client.waitFor(/reconnect/i, { timeoutMs: 20_000 }).catch(() => {});
        await new Promise((resolve) => setTimeout(resolve, 2_000));
        link.blackHole(false);
        cut.resolve();
      },
    }),
  );
  return { passed, cut: cut.promise };
}

Deno.test("a link black-holed past the idle timeout: visitors get 503 meanwhile, then the same URL answers again", async () => {
  await using processes = new Processes();
  const { client, forwarder } = await behindForwarder(processes, ["cut"]);
  const [url] = client.urls;
  await eventually(`${url}/echo`, 200);

  forwarder.blackHole(true);
  // Heartbeats every second, dropped after three missed: both ends give up on the link within seconds.
  const offline = await eventually(`${url}/echo`, 503, 20_000);
  assert.match(offline.body, /offline; its client is reconnecting/);
  forwarder.blackHole(false);

  const [again] = await onlineUrls(
    client.child,
    1,
    1 + client.child.lines.findIndex((line) => line.includes(url)),
  );
  assert.equal(again, url, "the name was held for its owner through the cut");
  await eventually(`${url}/echo`, 200, 30_000);
});

/** Bytes of the download that crosses the cut (scaled down from 500 MB for a loaded 2-core machine). */
const DOWNLOAD_BYTES = 64 * 1024 * 1024;
/** Bytes of the upload that crosses the cut (scaled down from 200 MB likewise). */
const UPLOAD_BYTES = 32 * 1024 * 1024;

Deno.test("with --grace, a download in progress crosses a cut past the idle timeout intact", async () => {
  await using processes = new Processes();
  const { client, forwarder } = await behindForwarder(processes, ["resume", "--grace=60"]);
  const [url] = client.urls;
  const response = await visit(`${url}/download?bytes=${DOWNLOAD_BYTES}`);
  assert.equal(response.status, 200);
  const { passed, cut } = cutAfter(response.body!, 8 * 1024 * 1024, forwarder, client.child);
  const { sha256, bytes } = await streamSha256(passed);
  await cut;
  assert.equal(bytes, DOWNLOAD_BYTES);
  assert.equal(sha256, patternSha256(DOWNLOAD_BYTES));
});

Deno.test("with --grace, an upload and a WebSocket cross a cut intact, in order; memory stays flat", async () => {
  await using processes = new Processes();
  const { client, forwarder, relay } = await behindForwarder(processes, ["resume-up", "--grace=60"]);
  const [url] = client.urls;
  const rss = () => ({ relay: memoryMB(relay.child.pid).now, agent: memoryMB(client.child.pid).now });
  const before = rss();
  const ws = connectWebSocket(`${url.replace("http", "ws")}/ws`);
  await ws.opened;
  const echoes: string[] = [];
  ws.socket.on("message", (data: Buffer) => echoes.push(data.toString()));
  ws.socket.send("before");

  const { passed, cut } = cutAfter(patternStream(UPLOAD_BYTES), 8 * 1024 * 1024, forwarder, client.child);
  const uploaded = visit(`${url}/echo`, { method: "POST", body: passed });
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  ws.socket.send("during");
  const answer = await (await uploaded).json();
  await cut;
  assert.equal(answer.bytes, UPLOAD_BYTES);
  assert.equal(answer.sha256, patternSha256(UPLOAD_BYTES));

  ws.socket.send("after");
  const deadline = Date.now() + 15_000;
  while (echoes.length < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  assert.deepEqual(echoes, ["before", "during", "after"], "one unbroken socket, messages in order");
  const after = rss();
  console.log(`RSS MB before ${JSON.stringify(before)} after ${JSON.stringify(after)}`);
  assert.ok(after.relay - before.relay < 100 && after.agent - before.agent < 100, "memory stays flat");
  ws.socket.close(1000, "done");
  await ws.closed;
});

Deno.test("with --grace, a TCP tunnel session carries on across a cut on the same connection", async () => {
  await using processes = new Processes();
  const echo = processes.add(Child.script("tcp-echo", "tests/fixtures/tcp_echo.ts", []));
  const echoPort = (await echo.waitFor(/^ready port=(\d+)/))[1];
  const { client, forwarder } = await behindForwarder(processes, ["tcp", echoPort, "--grace=60"]);
  const port = Number(new URL(client.urls[0]).port);
  // The echo origin answers once the visitor half-closes: both halves cross the cut on one connection.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const encoder = new TextEncoder();
  await conn.write(encoder.encode("before the cut\n"));
  forwarder.blackHole(true);
  await client.child.waitFor(/reconnect/i, { timeoutMs: 20_000 });
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  forwarder.blackHole(false);
  await conn.write(encoder.encode("after the cut\n"));
  await conn.closeWrite();
  const echoed = await new Response(conn.readable).text();
  assert.equal(echoed, "before the cut\nafter the cut\n");
});

Deno.test("with --grace, a SIGKILLed agent that starts again ends its old visitor streams at once", async () => {
  await using processes = new Processes();
  const { client, relay, target } = await behindForwarder(processes, ["killed", "--grace=60"]);
  const [url] = client.urls;
  const response = await visit(`${url}/download?bytes=${DOWNLOAD_BYTES}`);
  const reader = response.body!.getReader();
  await reader.read();
  client.child.kill("SIGKILL");
  await client.child.status;
  // Its restart (same install: same client id, no resume token) takes the names back: the old session ends.
  const started = Date.now();
  await startClient(processes, relay, [...target, "killed", "--grace=60", "--log"], {
    configDir: client.configDir,
    label: "restarted",
  });
  await assert.rejects(async () => {
    while (!(await reader.read()).done);
  });
  assert.ok(
    Date.now() - started < 20_000,
    "ended within seconds of the restart, not at the end of the grace",
  );
});
