/**
 * A hostile or broken client speaking raw QUIC to a live relay: each bad
 * input gets a typed refusal, and the relay keeps serving everyone else.
 */
import assert from "node:assert/strict";
import { encodeFrame, FrameReader } from "../lib/wire/codec.ts";
import { type Frame, PROTOCOL_VERSION } from "../lib/wire/protocol.ts";
import {
  Processes,
  refusedClient,
  spawnClient,
  startClient,
  startOrigin,
  startRelay,
} from "./helpers/processes.ts";
import { rawQuic, rawTunnel } from "./helpers/raw_quic.ts";
import { visit } from "./helpers/visit.ts";
import WebSocket from "ws";

/** Opens QUIC to the relay, writes `bytes` on the control stream, returns what came back. */
async function speak(quic: Awaited<ReturnType<typeof rawQuic>>, bytes: Uint8Array) {
  const conn = await quic.connect();
  const closed = conn.closed.catch((error) => ({ closeCode: -1, reason: String(error) }));
  const stream = await conn.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  await writer.write(bytes);
  const frame = await new FrameReader(stream.readable).read().catch(() => null);
  conn.close({ closeCode: 0, reason: "done" });
  const info = await closed;
  return { frame, info };
}

const hello = (overrides: Partial<Frame & { type: "hello" }> = {}) =>
  encodeFrame({
    type: "hello",
    version: PROTOCOL_VERSION,
    clientId: "x".repeat(32),
    tunnels: [{ kind: "http", name: "ok" }],
    ...overrides,
  });

Deno.test("the relay refuses malformed and unexpected control frames with typed errors, and keeps serving", async (t) => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const good = await startClient(processes, relay, [String(origin.port), "steady"]);
  const quic = await rawQuic(processes, relay);

  const cases: [string, Uint8Array, string, RegExp][] = [
    ["garbage bytes", new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"), "bad_frame", /version/],
    [
      "an unknown frame type",
      new Uint8Array([PROTOCOL_VERSION, 99, 0, 0, 0, 2, 123, 125]),
      "bad_frame",
      /unknown frame type/,
    ],
    [
      "an oversized length",
      new Uint8Array([PROTOCOL_VERSION, 1, 0x7f, 0xff, 0xff, 0xff]),
      "bad_frame",
      /over the/,
    ],
    [
      "a ping instead of hello",
      encodeFrame({ type: "ping", seq: 1 }),
      "bad_frame",
      /expected hello/,
    ],
    [
      "a wrong protocol version",
      hello({ version: 99 }),
      "bad_version",
      new RegExp(`relay speaks protocol ${PROTOCOL_VERSION}`),
    ],
    [
      "a name with a dot",
      hello({ tunnels: [{ kind: "http", name: "a.b" }] }),
      "name_invalid",
      /not a DNS label/,
    ],
    [
      "a unicode name",
      hello({ tunnels: [{ kind: "http", name: "ünï" }] }),
      "name_invalid",
      /not a DNS label/,
    ],
    [
      "a name asked twice",
      hello({ tunnels: [{ kind: "http", name: "ok" }, { kind: "http", name: "ok" }] }),
      "name_invalid",
      /twice/,
    ],
    [
      "someone else's name",
      hello({ tunnels: [{ kind: "http", name: "steady" }] }),
      "name_taken",
      /in use/,
    ],
  ];
  for (const [label, bytes, code, message] of cases) {
    await t.step(label, async () => {
      const { frame, info } = await speak(quic, bytes);
      assert.equal(frame?.type, "error", JSON.stringify(info));
      assert.equal(frame.type === "error" && frame.code, code);
      assert.match(frame.type === "error" ? frame.message : "", message);
    });
  }
  assert.equal((await visit(`${good.urls[0]}/`)).status, 200);
  assert.equal(good.child.lines.filter((line) => line.includes("reconnecting")).length, 0);
  quic.close();
});

Deno.test("a client answering with a head that is not valid HTTP gets the visitor a 502, and the relay lives on", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes);
  const quic = await rawQuic(processes, relay);
  const { conn, url, close } = await rawTunnel(quic, "evil");
  // Found by `deno task fuzz`: these heads passed `new Response()` but made Deno.serve's writer panic,
  // when the relay served visitors with it.
  const answers: Frame[] = [
    { type: "response", status: 200, headers: [["x-evil", "a\u0001b"]] },
    { type: "response", status: 100, headers: [] },
    { type: "response", status: 200, headers: [["bad name", "x"]] },
  ];
  (async () => {
    for await (const stream of conn.incomingBidirectionalStreams) {
      const writer = stream.writable.getWriter();
      await writer.write(encodeFrame(answers.shift()!));
      await writer.close();
    }
  })().catch(() => {});
  for (let i = 0; i < 3; i++) {
    const response = await visit(`${url}/`);
    assert.equal(response.status, 502);
    assert.equal(response.headers.get("x-reverprox-error"), "origin_error");
    await response.body?.cancel();
  }
  assert.equal((await visit(`http://localhost:${relay.httpPort}/`)).status, 200);
  await close();
  quic.close();
});

Deno.test("a client closing a WebSocket with a code ws will not send gets the visitor 1011, and the relay lives on", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes);
  const quic = await rawQuic(processes, relay);
  const { conn, url, close } = await rawTunnel(quic, "evil");
  (async () => {
    for await (const stream of conn.incomingBidirectionalStreams) {
      await new FrameReader(stream.readable).expect("request");
      const writer = stream.writable.getWriter();
      await writer.write(encodeFrame({ type: "response", status: 101, headers: [] }));
      // In the schema's range, but not a code a WebSocket may send.
      await writer.write(encodeFrame({ type: "ws-close", code: 2000, reason: "odd" }));
    }
  })().catch(() => {});
  const target = new URL(url);
  const socket = new WebSocket(`ws://127.0.0.1:${target.port}/`, { headers: { host: target.host } });
  const code = await new Promise<number>((resolve) => socket.once("close", (code: number) => resolve(code)));
  assert.equal(code, 1011);
  assert.equal((await visit(`http://localhost:${relay.httpPort}/`)).status, 200);
  await close();
  quic.close();
});

Deno.test("a connection that never says hello is closed after --hello-timeout; a client gets one stream", async (t) => {
  await using processes = new Processes();
  const relay = await startRelay(processes, { args: ["--hello-timeout=1"] });
  const quic = await rawQuic(processes, relay);
  await t.step("silent: closed with a reason", async () => {
    const conn = await quic.connect();
    const started = performance.now();
    const info = await conn.closed.catch((error) => ({ closeCode: -1, reason: String(error) }));
    assert.match(info.reason, /no hello in time/);
    assert.ok(performance.now() - started < 5_000);
  });
  await t.step("a client holding a tunnel cannot open streams beyond its control stream", async () => {
    const { conn, close } = await rawTunnel(quic, "one-stream");
    await assert.rejects(conn.createBidirectionalStream({ waitUntilAvailable: false }));
    await close();
  });
  assert.equal((await visit(`http://localhost:${relay.httpPort}/`)).status, 200);
  quic.close();
});

Deno.test("a client of the previous protocol is told to upgrade, in its own framing, not left hanging", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes);
  const quic = await rawQuic(processes, relay, "reverprox/2");
  const conn = await quic.connect();
  const stream = await conn.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  // A version-2 hello: version byte 2, type 1 (hello).
  const hello = new TextEncoder().encode(
    JSON.stringify({ type: "hello", version: 2, tunnels: [{ kind: "http", name: "old" }] }),
  );
  await writer.write(new Uint8Array([2, 1, 0, 0, hello.length >> 8, hello.length & 0xff, ...hello]));
  const answer = new Uint8Array(await new Response(stream.readable).arrayBuffer());
  assert.deepEqual([...answer.subarray(0, 2)], [2, 3], "a version-2 error frame");
  const error = JSON.parse(new TextDecoder().decode(answer.subarray(6)));
  assert.equal(error.code, "bad_version");
  assert.match(error.message, /relay speaks protocol 3, your reverprox reverprox\/2; upgrade reverprox/);
  const closed = await conn.closed.catch((error) => ({ closeCode: -1, reason: String(error) }));
  assert.match(closed.reason, /bad_version/);
  quic.close();
});

Deno.test("a client whose relay speaks an older protocol says which to upgrade, before any handshake", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes);
  const info = await (await fetch(`http://127.0.0.1:${relay.quicPort}/.well-known/reverprox.json`)).json();
  const oldRelay = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => Response.json({ ...info, protocol: 2 }),
  );
  try {
    await refusedClient(
      processes,
      { ...relay, server: `quic://127.0.0.1:${oldRelay.addr.port}` },
      ["9", "x"],
      /speaks protocol 2, this reverprox 3: upgrade the relay/,
    );
  } finally {
    await oldRelay.shutdown();
  }
});

Deno.test("past --max-clients-per-ip new QUIC connections are refused until one closes", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { args: ["--max-clients-per-ip=2"] });
  const first = await startClient(processes, relay, [String(origin.port), "one"]);
  await startClient(processes, relay, [String(origin.port), "two"], { label: "two" });
  const { child: third } = await spawnClient(processes, relay, [String(origin.port), "three"], {
    label: "three",
  });
  await third.waitFor(/relay closed the connection: too many connections from 127\.0\.0\.1/);
  assert.ok(!third.lines.some((line) => line.startsWith("reverprox: online")));
  await first.child.stop();
  await third.waitFor(/^reverprox: online/, { timeoutMs: 40_000 });
});
