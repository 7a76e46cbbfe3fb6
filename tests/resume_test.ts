/**
 * Cuts of the link between agent and relay, with neither process dying: a
 * test-owned forwarder between them (`helpers/link_forwarder.ts`) black-holes
 * it past the idle timeout, then passes it again, on QUIC and on the TCP
 * transport. The agent reconnects and keeps its URL, and its open streams
 * (`lib/transport/resumable.ts`, on by default: `--grace 60`) carry on intact.
 */
import assert from "node:assert/strict";
import type { Buffer } from "node:buffer";
import {
  Child,
  memoryMB,
  onlineUrls,
  Processes,
  type RelayHandle,
  startClient,
  startOrigin,
  startRelay,
} from "./helpers/processes.ts";
import { patternSha256, patternStream, streamSha256 } from "./helpers/pattern.ts";
import { connectWebSocket } from "./helpers/websocket.ts";
import { LinkForwarder } from "./helpers/link_forwarder.ts";
import { eventually, visit } from "./helpers/visit.ts";

const MB = 1024 * 1024;
/** How long the link stays black-holed: well past the idle timeout (three missed 1 s heartbeats). */
const BLACK_HOLE_MS = 20_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A relay whose clients reach it through a {@link LinkForwarder}. */
async function relayBehindForwarder(processes: Processes) {
  const relay = await startRelay(processes, { args: ["--grace=60", "--tcp-ports=23400-23499"] });
  const forwarder = await LinkForwarder.start(relay.quicPort);
  processes.defer(() => forwarder[Symbol.asyncDispose]());
  return { relay, forwarder, via: { ...relay, server: forwarder.server } satisfies RelayHandle };
}

/** A client of the relay behind `via` for `args` (with `--log`), its http tunnel to a new origin. */
async function httpClient(processes: Processes, via: RelayHandle, args: string[]) {
  const origin = await startOrigin(processes);
  return await startClient(processes, via, [String(origin.port), ...args, "--log"]);
}

/** Passes `stream` on; `reached` settles once `at` bytes went through; `seen()` counts them. */
function tap(stream: ReadableStream<Uint8Array>, at: number) {
  let seen = 0;
  const reached = Promise.withResolvers<void>();
  const passed = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        controller.enqueue(chunk);
        seen += chunk.length;
        if (seen >= at) reached.resolve();
      },
    }),
  );
  return { passed, reached: reached.promise, seen: () => seen };
}

/** Resident memory of each process now and then, until `stop`: the most each reached. */
function sampleMemory(pids: Record<string, number>) {
  const peak: Record<string, number> = {};
  const before: Record<string, number> = {};
  for (const [name, pid] of Object.entries(pids)) before[name] = peak[name] = memoryMB(pid).now;
  const timer = setInterval(() => {
    for (const [name, pid] of Object.entries(pids)) peak[name] = Math.max(peak[name], memoryMB(pid).now);
  }, 250);
  return { before, peak, stop: () => clearInterval(timer) };
}

Deno.test("a link black-holed past the idle timeout: new requests wait 10 s for it, then 503; then the same URL answers again", async () => {
  await using processes = new Processes();
  const { forwarder, via } = await relayBehindForwarder(processes);
  const client = await httpClient(processes, via, ["cut"]);
  const [url] = client.urls;
  await eventually(`${url}/echo`, 200);

  const from = client.child.lines.length;
  forwarder.blackHole(true);
  // Heartbeats every second, dropped after three missed: both ends give up on the link within seconds.
  // (A request sent before that is in flight on the link, and waits for it to resume.)
  await client.child.waitFor(/reconnect/i, { from, timeoutMs: 20_000 });
  const began = Date.now();
  const offline = await eventually(`${url}/echo`, 503, 30_000);
  assert.match(offline.body, /offline; its client is reconnecting/);
  const waited = Date.now() - began;
  assert.ok(waited >= 9_000 && waited < 20_000, `a new request waited ${waited} ms for the link, then 503`);
  forwarder.blackHole(false);

  const [again] = await onlineUrls(
    client.child,
    1,
    1 + client.child.lines.findIndex((line) => line.includes(url)),
  );
  assert.equal(again, url, "the name was held for its owner through the cut");
  await eventually(`${url}/echo`, 200, 30_000);
});

/** The download and upload that cross the cut, as the issue asks. */
const DOWNLOAD_BYTES = 500 * MB;
const UPLOAD_BYTES = 200 * MB;

for (const transport of ["quic", "tcp"]) {
  Deno.test(`${transport}: a 500 MB download, a 200 MB upload, a WebSocket and a TCP session cross a 20 s black hole intact; memory stays flat`, async (t) => {
    await using processes = new Processes();
    const { relay, forwarder, via } = await relayBehindForwarder(processes);
    const client = await httpClient(processes, via, ["resume", `--transport=${transport}`]);
    const echo = processes.add(Child.script("tcp-echo", "tests/fixtures/tcp_echo.ts", []));
    const echoPort = (await echo.waitFor(/^ready port=(\d+)/))[1];
    const tcpClient = await startClient(processes, via, [
      "tcp",
      echoPort,
      `--transport=${transport}`,
      "--log",
    ], {
      label: "tcp-client",
    });
    await client.child.waitFor(new RegExp(`online .* over ${transport}`));
    const [url] = client.urls;
    const memory = sampleMemory({ relay: relay.child.pid, agent: client.child.pid });

    // Everything in flight at once: a download, an upload, a WebSocket and a TCP session.
    const download = await visit(`${url}/download?bytes=${DOWNLOAD_BYTES}`);
    assert.equal(download.status, 200);
    const down = tap(download.body!, 64 * MB);
    const downloaded = streamSha256(down.passed);
    const up = tap(patternStream(UPLOAD_BYTES), 32 * MB);
    const uploaded = visit(`${url}/echo`, { method: "POST", body: up.passed })
      .then((answer) => answer.json())
      .then(({ bytes, sha256 }) => ({ bytes, sha256 }));
    const ws = connectWebSocket(`${url.replace("http", "ws")}/ws`);
    await ws.opened;
    const echoes: string[] = [];
    ws.socket.on("message", (data: Buffer) => echoes.push(data.toString()));
    const sent: string[] = [];
    const talk = setInterval(() => (sent.push(`message ${sent.length}`), ws.socket.send(sent.at(-1)!)), 200);
    const session = await Deno.connect({
      hostname: "127.0.0.1",
      port: Number(new URL(tcpClient.urls[0]).port),
    });
    const encoder = new TextEncoder();
    await session.write(encoder.encode("before the cut\n"));

    await t.step(
      `the link is black-holed for ${BLACK_HOLE_MS / 1000} s once the transfers are under way`,
      async () => {
        await Promise.all([down.reached, up.reached]);
        const from = client.child.lines.length;
        forwarder.blackHole(true);
        const atCut = { down: down.seen(), up: up.seen() };
        console.log(`${transport}: cut at ${atCut.down / MB | 0} MB down, ${atCut.up / MB | 0} MB up`);
        assert.ok(atCut.down < DOWNLOAD_BYTES && atCut.up < UPLOAD_BYTES, "both were under way at the cut");
        await session.write(encoder.encode("during the cut\n"));
        // Past the idle timeout: the agent gives the link up and tries again while it is still dark.
        await client.child.waitFor(/reconnect/i, { from, timeoutMs: BLACK_HOLE_MS });
        await sleep(BLACK_HOLE_MS - 3_000);
        forwarder.blackHole(false);
        await client.child.waitFor(new RegExp(`online .* over ${transport}`), { from, timeoutMs: 30_000 });
      },
    );
    await t.step("the download completes with the right checksum", async () => {
      assert.deepEqual(await downloaded, { sha256: patternSha256(DOWNLOAD_BYTES), bytes: DOWNLOAD_BYTES });
    });
    await t.step("the upload reaches the origin whole", async () => {
      assert.deepEqual(await uploaded, { bytes: UPLOAD_BYTES, sha256: patternSha256(UPLOAD_BYTES) });
    });
    await t.step("the WebSocket is one unbroken socket, its messages in order", async () => {
      clearInterval(talk);
      const deadline = Date.now() + 15_000;
      while (echoes.length < sent.length && Date.now() < deadline) await sleep(50);
      assert.deepEqual(echoes, sent);
      assert.ok(sent.length > BLACK_HOLE_MS / 200, `${sent.length} messages, many sent during the cut`);
      ws.socket.close(1000, "done");
      await ws.closed;
    });
    await t.step("the TCP session carries on on the same connection", async () => {
      await session.write(encoder.encode("after the cut\n"));
      await session.closeWrite();
      assert.equal(
        await new Response(session.readable).text(),
        "before the cut\nduring the cut\nafter the cut\n",
      );
    });
    await t.step("relay and agent memory stay flat", () => {
      memory.stop();
      console.log(
        `${transport}: RSS MB before ${JSON.stringify(memory.before)}, peak ${JSON.stringify(memory.peak)}`,
      );
      for (const name of ["relay", "agent"]) {
        assert.ok(memory.peak[name] - memory.before[name] < 150, `${name} grew past 150 MB`);
      }
    });
  });
}

Deno.test("a SIGKILLed agent that starts again ends its old visitor streams at once", async () => {
  await using processes = new Processes();
  const { relay, via } = await relayBehindForwarder(processes);
  const origin = await startOrigin(processes);
  const client = await startClient(processes, via, [String(origin.port), "killed", "--log"]);
  const [url] = client.urls;
  const response = await visit(`${url}/download?bytes=${DOWNLOAD_BYTES}`);
  const reader = response.body!.getReader();
  await reader.read();
  client.child.kill("SIGKILL");
  await client.child.status;
  // Its restart (same install: same client id, no resume token) takes the names back: the old session ends.
  const started = Date.now();
  await startClient(processes, relay, [String(origin.port), "killed", "--log"], {
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

Deno.test("tunnels added, removed and paused while the link is down are settled once the session resumes", async () => {
  await using processes = new Processes();
  const { relay, forwarder, via } = await relayBehindForwarder(processes);
  const origin = await startOrigin(processes);
  const client = await startClient(processes, via, [String(origin.port), "keep", "--log"]);
  const [, api] = await client.child.waitFor(/control API and inspector at http:\/\/(\S+)/);
  const env = {
    REVERPROX_CONFIG_DIR: client.configDir,
    REVERPROX_STATE_DIR: client.configDir,
    REVERPROX_SERVER: via.server,
    REVERPROX_FINGERPRINT: relay.fingerprint,
  };
  const cli = async (...args: string[]) => {
    const child = Child.script("cli", "client.ts", [...args, `--api-addr=${api}`], env);
    const { code } = await child.done();
    assert.equal(code, 0, child.output());
  };
  const urlOf = (name: string) => client.urls[0].replace("//keep.", `//${name}.`);
  await cli(String(origin.port), "gone", "--detach");
  await cli(String(origin.port), "paused", "--detach");
  await eventually(`${urlOf("gone")}/echo`, 200);

  const from = client.child.lines.length;
  forwarder.blackHole(true);
  await client.child.waitFor(/reconnect/i, { from, timeoutMs: 20_000 });
  await cli(String(origin.port), "late", "--detach");
  await cli("rm", "gone");
  await cli("suspend", "paused");
  forwarder.blackHole(false);
  await client.child.waitFor(/online .* over quic/, { from, timeoutMs: 30_000 });

  await eventually(`${urlOf("late")}/echo`, 200, 15_000);
  await eventually(`${urlOf("gone")}/echo`, 404, 15_000);
  const paused = await eventually(`${urlOf("paused")}/echo`, 503, 15_000);
  assert.match(paused.body, /paused by its owner/);
  assert.equal((await visit(`${urlOf("keep")}/echo`)).status, 200, "the first tunnel went on");
});
