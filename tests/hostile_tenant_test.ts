/**
 * A tenant whose client answers with response heads crafted to smuggle a
 * second response onto a visitor's keep-alive connection: the relay owns the
 * framing, so visitors only ever read what was really answered to them.
 */
import assert from "node:assert/strict";
import { encodeFrame, FrameReader } from "../lib/wire/codec.ts";
import type { HeaderPairs } from "../lib/shared/headers.ts";
import { Processes, startRelay } from "./helpers/processes.ts";
import { rawQuic, rawTunnel } from "./helpers/raw_quic.ts";

const encoder = new TextEncoder();
const FORGED = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged";

/** A response head plus one body piece and the end marker, as a client would write them. */
function answer(status: number, headers: HeaderPairs, body: string): Uint8Array {
  const bytes = encoder.encode(body);
  const piece = new Uint8Array(4 + bytes.length);
  new DataView(piece.buffer).setUint32(0, bytes.length);
  piece.set(bytes, 4);
  const parts = [
    encodeFrame({ type: "response", status, headers }),
    ...(bytes.length ? [piece] : []),
    new Uint8Array(4),
  ];
  return new Uint8Array(parts.flatMap((part) => [...part]));
}

/** What the hostile tenant answers, by request target. */
const ANSWERS: Record<string, Uint8Array> = {
  "/long-body": answer(200, [["content-length", "5"]], `hello${FORGED}`),
  "/te-and-cl": answer(200, [["transfer-encoding", "chunked"], ["content-length", "5"]], "hello"),
  "/cl-not-a-number": answer(200, [["content-length", "abc"]], "hello"),
  "/cl-conflict": answer(200, [["content-length", "5, 50"]], "hello"),
  "/cl-repeated": answer(200, [["content-length", "5"], ["content-length", "5"]], "hello"),
  "/no-content-with-body": answer(204, [["content-length", "40"]], FORGED),
  "/short-body": answer(200, [["content-length", "50"]], "hello"),
  "/connection-header": answer(200, [["connection", "close"], ["keep-alive", "timeout=1"]], "hello"),
  "/next": answer(200, [["content-type", "text/plain"]], "the real next answer"),
};

/** Serves every request stream of `conn` from {@link ANSWERS}. */
async function serveHostile(conn: Deno.QuicConn) {
  for await (const stream of conn.incomingBidirectionalStreams) {
    (async () => {
      const head = await new FrameReader(stream.readable).expect("request");
      const writer = stream.writable.getWriter();
      await writer.write(ANSWERS[head.target] ?? answer(404, [], "no such case"));
      await writer.close();
    })().catch(() => {});
  }
}

/** The answer to `/next`, chunked by the relay, as the last thing on the connection. */
const NEXT = /HTTP\/1\.1 200 OK[^]*the real next answer\r\n0\r\n\r\n$/;

/** Sends two pipelined requests on one connection; returns all the bytes the relay wrote back. */
async function pipelined(port: number, first: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const request = (path: string, extra = "") =>
    `GET ${path} HTTP/1.1\r\nHost: hostile.localhost\r\n${extra}\r\n`;
  // The second request closes the connection after its answer, so reading ends there.
  await conn.write(encoder.encode(request(first) + request("/next", "Connection: close\r\n")));
  const chunks: number[] = [];
  const buffer = new Uint8Array(65536);
  const reading = (async () => {
    for (let n; (n = await conn.read(buffer).catch(() => null)) !== null;) {
      chunks.push(...buffer.subarray(0, n));
    }
  })();
  await Promise.race([reading, new Promise((resolve) => setTimeout(resolve, 3_000))]);
  conn.close();
  return new TextDecoder().decode(new Uint8Array(chunks));
}

Deno.test("a tenant cannot control the framing visitors read", async (t) => {
  await using processes = new Processes();
  const relay = await startRelay(processes);
  const quic = await rawQuic(processes, relay);
  const tenant = await rawTunnel(quic, "hostile");
  serveHostile(tenant.conn);

  await t.step("a body past its Content-Length is cut there and the connection closed", async () => {
    const bytes = await pipelined(relay.httpPort, "/long-body");
    assert.match(bytes, /^HTTP\/1\.1 200 OK\r\n[^]*content-length: 5\r\n[^]*\r\n\r\nhello$/i);
  });
  for (
    const [path, problem] of [
      ["/te-and-cl", /both Transfer-Encoding and Content-Length/],
      ["/cl-not-a-number", /not a number/],
      ["/cl-conflict", /conflicting Content-Length/],
    ] as const
  ) {
    await t.step(`an impossible head (${path}) is 502, and the next request is answered truly`, async () => {
      const bytes = await pipelined(relay.httpPort, path);
      assert.match(bytes, /^HTTP\/1\.1 502 /);
      assert.match(bytes, problem);
      assert.match(bytes, NEXT);
    });
  }
  await t.step("repeated equal lengths collapse into one", async () => {
    const bytes = await pipelined(relay.httpPort, "/cl-repeated");
    assert.equal(bytes.match(/content-length: 5/gi)?.length, 1);
    assert.match(bytes, /\r\n\r\nhello/);
    assert.match(bytes, NEXT);
  });
  await t.step("a 204 carries no length and no body; the next answer follows intact", async () => {
    const bytes = await pipelined(relay.httpPort, "/no-content-with-body");
    assert.match(bytes, /^HTTP\/1\.1 204 /);
    assert.doesNotMatch(bytes, /forged|content-length: 40/i);
    assert.match(bytes, NEXT);
  });
  await t.step("a body short of its Content-Length breaks the connection", async () => {
    const bytes = await pipelined(relay.httpPort, "/short-body");
    assert.doesNotMatch(bytes, /the real next answer/);
  });
  await t.step("the tenant's Connection and Keep-Alive headers are not passed on", async () => {
    const bytes = await pipelined(relay.httpPort, "/connection-header");
    assert.doesNotMatch(bytes, /keep-alive: timeout=1/i);
    assert.match(bytes, NEXT);
  });
  await tenant.close();
  quic.close();
});
