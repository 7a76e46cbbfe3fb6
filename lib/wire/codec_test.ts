import assert from "node:assert/strict";
import fc from "fast-check";
import { decodeFrame, encodeFrame, FrameError, FrameReader, writeBodyEnd, writeBodyPiece } from "./codec.ts";
import { ERROR_CODES, type Frame, MAX_FRAME_BYTES, PROTOCOL_VERSION } from "./protocol.ts";

const header = fc.tuple(fc.string({ maxLength: 40 }), fc.string({ maxLength: 200 }));
const frameArbitrary: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({
    type: fc.constant("hello" as const),
    version: fc.integer(),
    token: fc.option(fc.string({ maxLength: 100 }), { nil: undefined }),
    clientId: fc.option(fc.string({ minLength: 16, maxLength: 64 }), { nil: undefined }),
    tunnels: fc.array(
      fc.record({
        kind: fc.constantFrom("http" as const, "tcp" as const),
        name: fc.option(fc.string({ maxLength: 63 }), { nil: undefined }),
        remotePort: fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
      }),
      { minLength: 1, maxLength: 5 },
    ),
  }),
  fc.record({
    type: fc.constant("error" as const),
    code: fc.constantFrom(...ERROR_CODES),
    message: fc.string({ maxLength: 300 }),
  }),
  fc.record({ type: fc.constantFrom("ping" as const, "pong" as const), seq: fc.integer() }),
  fc.record({
    type: fc.constant("request" as const),
    tunnel: fc.string(),
    method: fc.string({ maxLength: 10 }),
    target: fc.string({ maxLength: 500 }),
    headers: fc.array(header, { maxLength: 20 }),
    remoteAddr: fc.string({ maxLength: 40 }),
  }),
  fc.record({
    type: fc.constant("ws-data" as const),
    binary: fc.boolean(),
    final: fc.boolean(),
    data: fc.uint8Array({ maxLength: 300 }),
  }),
  fc.record({
    type: fc.constant("ws-close" as const),
    code: fc.integer({ min: 1000, max: 4999 }),
    reason: fc.string({ maxLength: 123 }),
  }),
  fc.record({
    type: fc.constant("response" as const),
    status: fc.integer({ min: 100, max: 599 }),
    headers: fc.array(header, { maxLength: 20 }),
  }),
);

/** Drops keys whose value is undefined, as JSON does; `ws-data` keeps its bytes. */
const normalized = (frame: Frame) =>
  frame.type === "ws-data" ? { ...frame } : JSON.parse(JSON.stringify(frame));

Deno.test("every frame survives encode then decode", () => {
  fc.assert(
    fc.property(frameArbitrary, (frame) => {
      const bytes = encodeFrame(frame);
      const decoded = decodeFrame(bytes);
      assert.ok(decoded);
      assert.equal(decoded.size, bytes.length);
      assert.deepEqual(decoded.frame, normalized(frame));
    }),
    { numRuns: 2000 },
  );
});

Deno.test("random bytes decode to a frame, need-more, or FrameError; never anything else", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2000 }), (bytes) => {
      try {
        decodeFrame(bytes);
      } catch (error) {
        assert.ok(error instanceof FrameError, String(error));
      }
    }),
    { numRuns: 5000 },
  );
});

Deno.test("mutated valid frames are accepted only when still well-formed", () => {
  fc.assert(
    fc.property(
      frameArbitrary,
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
        minLength: 1,
        maxLength: 8,
      }),
      (frame, mutations) => {
        const bytes = encodeFrame(frame);
        for (const [at, value] of mutations) bytes[at % bytes.length] = value;
        try {
          const decoded = decodeFrame(bytes);
          // Whatever is accepted is a well-formed frame: it encodes back to itself.
          if (decoded) {
            assert.deepEqual(decodeFrame(encodeFrame(decoded.frame))?.frame, decoded.frame);
          }
        } catch (error) {
          assert.ok(error instanceof FrameError, String(error));
        }
      },
    ),
    { numRuns: 5000 },
  );
});

Deno.test("truncated frames ask for more bytes, and a stream ending inside one is an error", async () => {
  const bytes = encodeFrame({ type: "ping", seq: 7 });
  for (let cut = 0; cut < bytes.length; cut++) {
    assert.equal(decodeFrame(bytes.subarray(0, cut)), null);
  }
  const reader = new FrameReader(ReadableStream.from([bytes.subarray(0, bytes.length - 1)]));
  await assert.rejects(
    reader.read(),
    (error) => error instanceof FrameError && error.kind === "truncated",
  );
});

Deno.test("the header alone rejects bad versions, unknown types and oversized lengths", () => {
  const cases: [number[], string][] = [
    [[PROTOCOL_VERSION + 1, 4, 0, 0, 0, 2], "bad_version"],
    [[PROTOCOL_VERSION, 200, 0, 0, 0, 2], "unknown_type"],
    [[PROTOCOL_VERSION, 4, 0xff, 0xff, 0xff, 0xff], "oversized"],
  ];
  for (const [header, kind] of cases) {
    assert.throws(
      () => decodeFrame(new Uint8Array(header)),
      (error) => error instanceof FrameError && error.kind === kind,
    );
  }
  assert.throws(
    () => encodeFrame({ type: "error", code: "internal", message: "x".repeat(MAX_FRAME_BYTES) }),
    (error) => error instanceof FrameError && error.kind === "oversized",
  );
});

Deno.test("a frame of one type with another type's payload is malformed", () => {
  const bytes = encodeFrame({ type: "ping", seq: 1 });
  bytes[1] = 5; // claims "pong"
  assert.throws(
    () => decodeFrame(bytes),
    (error) => error instanceof FrameError && error.kind === "malformed",
  );
});

Deno.test("FrameReader splits frames across chunk borders and hands on the body bytes", async () => {
  const head = encodeFrame({ type: "response", status: 200, headers: [["a", "b"]] });
  const body = [0, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0, 0]; // one 5-byte piece, then the end marker
  const all = new Uint8Array([...head, ...encodeFrame({ type: "ping", seq: 1 }), ...body]);
  for (const size of [1, 3, 7, all.length]) {
    const chunks = [];
    for (let i = 0; i < all.length; i += size) chunks.push(all.slice(i, i + size));
    const reader = new FrameReader(ReadableStream.from(chunks));
    assert.equal((await reader.expect("response")).status, 200);
    assert.equal((await reader.expect("ping")).seq, 1);
    const bytes = new Uint8Array(await new Response(reader.body()).arrayBuffer());
    assert.deepEqual([...bytes], [1, 2, 3, 4, 5]);
  }
});

/** The bytes `writeBodyPiece`/`writeBodyEnd` put on a stream for `pieces`, and whether the end marker follows. */
async function encodedBody(pieces: Uint8Array[], whole: boolean): Promise<Uint8Array> {
  const written: Uint8Array[] = [];
  const writer = new WritableStream<Uint8Array>({ write: (chunk) => void written.push(chunk) }).getWriter();
  for (const piece of pieces) await writeBodyPiece(writer, piece);
  if (whole) await writeBodyEnd(writer);
  return new Uint8Array(written.flatMap((chunk) => [...chunk]));
}

function splitAt(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((cut) => cut % (bytes.length + 1)))].sort((a, b) => a - b);
  return [0, ...points].map((start, i) => bytes.slice(start, [...points, bytes.length][i]));
}

Deno.test("a body crosses whole however the stream splits it, and a cut anywhere is an error", async () => {
  const pieces = fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 });
  const cuts = fc.array(fc.nat(), { maxLength: 6 });
  await fc.assert(
    fc.asyncProperty(pieces, cuts, async (pieces, cuts) => {
      const head = encodeFrame({ type: "response", status: 200, headers: [] });
      const body = await encodedBody(pieces, true);
      const reader = new FrameReader(ReadableStream.from(splitAt(new Uint8Array([...head, ...body]), cuts)));
      await reader.expect("response");
      const read = new Uint8Array(await new Response(reader.body()).arrayBuffer());
      assert.deepEqual([...read], pieces.flatMap((piece) => [...piece]));
    }),
    { numRuns: 300 },
  );
  await fc.assert(
    fc.asyncProperty(pieces, fc.nat(), async (pieces, cut) => {
      // Everything short of the whole body, end marker included, is what a reset looks like here.
      const body = await encodedBody(pieces, true);
      const cutBody = body.slice(0, cut % body.length);
      const reader = new FrameReader(ReadableStream.from([cutBody]));
      await assert.rejects(
        new Response(reader.body()).arrayBuffer(),
        (error) => error instanceof FrameError && error.kind === "truncated",
      );
    }),
    { numRuns: 300 },
  );
});
