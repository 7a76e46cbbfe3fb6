/**
 * WebSocket messages over a tunnel stream: what both hops share. Each hop
 * speaks WebSocket for itself on the `ws` library (the relay to the visitor,
 * the client to the origin; see `relay/forward_websocket.ts` and
 * `agent/answer_websocket.ts`); between them, messages cross as `ws-data`
 * frames (split at 64 KiB, text or binary kept) and closes as `ws-close` with
 * code and reason. Pings are answered on each hop, which keeps every hop alive.
 *
 * @module
 */
import WebSocket from "ws";
import { encodeFrame, type FrameReader } from "../wire/codec.ts";
import { type FrameOf, MAX_WS_CHUNK_BYTES, type WsDataFrame } from "../wire/protocol.ts";
import { endToEndHeaders, type HeaderPairs } from "../shared/headers.ts";

/** Largest message either side may send through the tunnel (close 1009 past it). */
export const MAX_WS_MESSAGE_BYTES = 64 * 1024 * 1024;

/** Handshake headers each hop makes for itself; never copied across. */
const HANDSHAKE_OWN = new Set([
  "sec-websocket-key",
  "sec-websocket-accept",
  "sec-websocket-version",
  "sec-websocket-extensions",
  "sec-websocket-protocol",
]);

/** The headers one hop passes to the next: end-to-end ones, less those each hop makes for itself. */
export function withoutHandshake(pairs: HeaderPairs): HeaderPairs {
  return endToEndHeaders(pairs).filter(([name]) => !HANDSHAKE_OWN.has(name.toLowerCase()));
}

/** The subprotocols a visitor offered, in order. */
export function offeredProtocols(pairs: HeaderPairs): string[] {
  return pairs
    .filter(([name]) => name.toLowerCase() === "sec-websocket-protocol")
    .flatMap(([, value]) => value.split(","))
    .map((protocol) => protocol.trim())
    .filter(Boolean);
}

/** Closes `socket` with `code` and `reason`, or bare when the code only describes what happened (1005/1006/1015). */
function closeWith(socket: WebSocket, code: number, reason = "") {
  if (code === 1005 || code === 1006 || code === 1015) return socket.close();
  try {
    socket.close(code, reason);
  } catch {
    // A code or reason ws will not send (say 2000, or a reason over 123 bytes) came from the other hop.
    socket.close(1011, "invalid close from the other side");
  }
}

/** Splits one message into `ws-data` frames. */
function* pieces(data: Uint8Array, binary: boolean): Generator<WsDataFrame> {
  let offset = 0;
  do {
    const end = Math.min(data.length, offset + MAX_WS_CHUNK_BYTES);
    yield { type: "ws-data", binary, final: end === data.length, data: data.subarray(offset, end) };
    offset = end;
  } while (offset < data.length);
}

/** Reads `ws-data`/`ws-close` frames and hands on whole messages; returns the close (or none on stream end). */
async function readMessages(
  reader: FrameReader,
  onMessage: (data: Uint8Array, binary: boolean) => Promise<void> | void,
): Promise<FrameOf<"ws-close"> | null> {
  let parts: Uint8Array[] = [];
  let size = 0;
  while (true) {
    const frame = await reader.read();
    if (!frame) return null;
    if (frame.type === "ws-close") return frame;
    if (frame.type !== "ws-data") throw new Error(`unexpected ${frame.type} on a WebSocket stream`);
    size += frame.data.length;
    if (size > MAX_WS_MESSAGE_BYTES) return { type: "ws-close", code: 1009, reason: "message too big" };
    parts.push(frame.data);
    if (!frame.final) continue;
    const message = parts.length === 1 ? parts[0] : join(parts, size);
    parts = [];
    size = 0;
    await onMessage(message, frame.binary);
  }
}

function join(parts: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * Relays messages between `socket` and the tunnel stream until both have
 * closed. A message is read from the socket only once the previous one is in
 * the stream, so a slow peer slows the sender instead of filling memory.
 */
export async function relayMessages(
  socket: WebSocket,
  reader: FrameReader,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  /** Sees each whole message: `fromSocket` true for the socket's, false for the stream's. */
  onMessage?: (data: Uint8Array, binary: boolean, fromSocket: boolean) => void,
): Promise<void> {
  let sending = Promise.resolve();
  socket.on("message", (data: Buffer, binary: boolean) => {
    socket.pause();
    const message = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    onMessage?.(message, binary, true);
    for (const piece of pieces(message, binary)) {
      sending = sending.then(() => writer.write(encodeFrame(piece)));
    }
    sending = sending.then(() => socket.resume(), () => socket.terminate());
  });
  const socketClosed = new Promise<void>((resolve) => {
    socket.once("close", (code: number, reason: Buffer) => {
      const close = {
        type: "ws-close",
        code: code === 1005 ? 1000 : code,
        reason: reason.toString(),
      } as const;
      sending = sending
        .then(() => writer.write(encodeFrame(close)))
        .then(() => writer.close())
        .catch(() => {
          // The stream is gone: the other hop sees it end, which it takes for a close.
        });
      sending.then(resolve);
    });
  });
  // A stream that breaks or carries junk closes the socket with 1011, if it is still open.
  const peerClose = await readMessages(
    reader,
    (data, binary) => {
      onMessage?.(data, binary, false);
      return new Promise<void>((resolve, reject) =>
        socket.send(data, { binary }, (error) => error ? reject(error) : resolve())
      );
    },
  ).catch(() => ({ code: 1011, reason: "tunnel failed" }));
  // A stream that ends without a close frame means the other hop went away.
  if (socket.readyState === WebSocket.OPEN) closeWith(socket, peerClose?.code ?? 1001, peerClose?.reason);
  await socketClosed;
}
