/**
 * The multiplexer over a real loopback TCP socket pair: bytes exact when
 * frames split across reads, half-close, a reader that stops holding only its
 * own stream, the close record's code and reason, and a peer overrunning its
 * window refused as a protocol error.
 */
import assert from "node:assert/strict";
import { connect, createServer, type Socket } from "node:net";
import type { AddressInfo } from "node:net";
import { Buffer } from "node:buffer";
import { CloseCode } from "../wire/protocol.ts";
import { MuxConnection, STREAM_WINDOW } from "./mux.ts";
import type { TunnelStream } from "./types.ts";

/** Two connected sockets on loopback. */
async function socketPair(): Promise<[Socket, Socket, () => Promise<void>]> {
  const server = createServer();
  const accepted = new Promise<Socket>((resolve) => server.once("connection", resolve));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const dialer = connect(port, "127.0.0.1");
  await new Promise((resolve) => dialer.once("connect", resolve));
  const acceptor = await accepted;
  return [dialer, acceptor, () => new Promise((resolve) => server.close(() => resolve()))];
}

async function muxPair() {
  const [a, b, closeServer] = await socketPair();
  const peer = { hostname: "127.0.0.1", port: 0 };
  const dialer = new MuxConnection(a, { role: "dialer", transport: "tcp", peer });
  const acceptor = new MuxConnection(b, { role: "acceptor", transport: "tcp", peer });
  return {
    dialer,
    acceptor,
    raw: a,
    [Symbol.asyncDispose]: async () => {
      dialer.close({ code: CloseCode.normal, reason: "test over" });
      await Promise.all([dialer.closed, acceptor.closed]);
      await closeServer();
    },
  };
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return await new Response(stream).bytes();
}

async function accept(conn: MuxConnection): Promise<TunnelStream> {
  const reader = conn.incomingStreams.getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  return value!;
}

Deno.test("8 MB written in odd sizes arrive exactly, then the end (FIN)", async () => {
  await using pair = await muxPair();
  const stream = (await pair.dialer.openStream())!;
  const incoming = await accept(pair.acceptor);
  const sent = new Uint8Array(8 * 1024 * 1024).map((_, i) => (i * 131 + (i >> 10)) & 0xff);
  const received = readAll(incoming.readable);
  const writer = stream.writable.getWriter();
  for (let offset = 0, size = 1; offset < sent.length; offset += size, size = (size * 7 + 13) % 100_003) {
    await writer.write(sent.subarray(offset, offset + size));
  }
  await writer.close();
  assert.deepEqual(await received, sent);
});

Deno.test("a stream whose reader stops holds only its window; others keep flowing both ways", async () => {
  await using pair = await muxPair();
  const stalled = (await pair.acceptor.openStream())!;
  const stalledIn = await accept(pair.dialer);
  const writer = stalled.writable.getWriter();
  let written = 0;
  // Never read on the other side: writes beyond the window wait.
  (async () => {
    for (const chunk = new Uint8Array(64 * 1024);; written += chunk.length) await writer.write(chunk);
  })().catch(() => {});
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.ok(written <= STREAM_WINDOW, `${written} bytes went out unread`);
  const other = (await pair.acceptor.openStream())!;
  const otherIn = await accept(pair.dialer);
  const otherWriter = other.writable.getWriter();
  await otherWriter.write(new TextEncoder().encode("still moving"));
  await otherWriter.close();
  assert.equal(new TextDecoder().decode(await readAll(otherIn.readable)), "still moving");
  await stalledIn.readable.cancel();
});

Deno.test("close tells the other end its code and reason; later opens get null", async () => {
  await using pair = await muxPair();
  pair.acceptor.close({ code: CloseCode.refused, reason: "token not accepted" });
  assert.deepEqual(await pair.dialer.closed, { code: CloseCode.refused, reason: "token not accepted" });
  assert.equal(await pair.dialer.openStream(), null);
});

Deno.test("a peer writing past the window it was given is closed as a protocol error", async () => {
  await using pair = await muxPair();
  await pair.dialer.openStream();
  await accept(pair.acceptor);
  // Two data frames for stream 1, each allowed alone, together past the window, sent raw past the credit.
  const half = STREAM_WINDOW / 2 + 1;
  const head = Buffer.alloc(12);
  head.writeUInt32BE(1, 4);
  head.writeUInt32BE(half, 8);
  const frame = Buffer.concat([head, Buffer.alloc(half)]);
  pair.raw.write(Buffer.concat([frame, frame]));
  const closed = await pair.acceptor.closed;
  assert.equal(closed.code, CloseCode.protocolError);
  assert.match(closed.reason, /overran its window/);
});

Deno.test("frames no peer of ours sends (unknown type, a huge close record, a short one) close as a protocol error", async () => {
  for (const [type, length] of [[7, 0], [3, 1 << 30], [3, 2]]) {
    await using pair = await muxPair();
    const head = Buffer.alloc(12);
    head.writeUInt8(type, 1);
    head.writeUInt32BE(length, 8);
    pair.raw.write(Buffer.concat([head, Buffer.alloc(Math.min(length, 16))]));
    const closed = await pair.acceptor.closed;
    assert.equal(closed.code, CloseCode.protocolError, `type ${type}, length ${length}`);
  }
});
