/**
 * WebSockets over one QUIC stream, both halves, each on the `ws` library.
 *
 * The tunnel carries messages, not raw bytes, so each hop speaks WebSocket
 * for itself: the visitor's handshake travels as a `request` with
 * `upgrade: "websocket"`; the client opens its own WebSocket to the origin
 * with the visitor's headers and subprotocols and answers 101 with the
 * origin's choice and handshake headers; the relay then completes the
 * visitor's handshake with them. Messages cross as `ws-data` frames (split at
 * 64 KiB, text or binary kept), closes as `ws-close` with code and reason.
 * Pings are answered on each hop, which keeps every hop alive.
 *
 * @module
 */
import WebSocket from "ws";
import { encodeFrame, FrameReader, writeBodyAbort, writeBodyEnd, writeBodyPiece } from "./codec.ts";
import { type FrameOf, MAX_WS_CHUNK_BYTES, type WsDataFrame } from "./protocol.ts";
import { endToEndHeaders, type HeaderPairs, rawHeaderPairs, validHeaderPairs } from "./headers.ts";
import { errorPage } from "./pages.ts";
import type { AcceptWebSocket } from "./public_server.ts";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import {
  openStream,
  type Origin,
  originErrorPage,
  outcomeOf,
  type RequestOutcome,
  tunnelGone,
} from "./http_bridge.ts";

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

function withoutHandshake(pairs: HeaderPairs): HeaderPairs {
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
async function relayMessages(
  socket: WebSocket,
  reader: FrameReader,
  writer: WritableStreamDefaultWriter<Uint8Array>,
): Promise<void> {
  let sending = Promise.resolve();
  socket.on("message", (data: Buffer, binary: boolean) => {
    socket.pause();
    for (const piece of pieces(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), binary)) {
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
        .catch(() => {});
      sending.then(resolve);
    });
  });
  const peerClose = await readMessages(
    reader,
    (data, binary) =>
      new Promise<void>((resolve, reject) =>
        socket.send(data, { binary }, (error) => error ? reject(error) : resolve())
      ),
  ).catch(() => ({ code: 1011, reason: "tunnel failed" }));
  // A stream that ends without a close frame means the other hop went away.
  if (socket.readyState === WebSocket.OPEN) closeWith(socket, peerClose?.code ?? 1001, peerClose?.reason);
  await socketClosed;
}

/**
 * Relay side: asks the client to open the origin's WebSocket; on 101
 * completes the visitor's handshake with `accept` and relays messages until
 * either side closes.
 */
export async function forwardWebSocket(
  conn: Deno.QuicConn,
  head: FrameOf<"request">,
  accept: AcceptWebSocket,
  options: { responseTimeoutMs: number; onSettled?: () => void },
): Promise<Response> {
  const settle = (response: Response) => (options.onSettled?.(), response);
  const stream = await openStream(conn);
  if (!stream) return settle(tunnelGone(head.tunnel));
  const writer = stream.writable.getWriter();
  const reader = new FrameReader(stream.readable);
  const abandon = async (response: Response) => {
    // A stream that ends without a close frame tells the client the visitor is gone (a reset might not).
    await writer.close().catch(() => {});
    await reader.cancel("abandoned");
    return settle(response);
  };
  let answer: FrameOf<"response" | "error">;
  try {
    await writer.write(encodeFrame(head));
    answer = await Promise.race([
      reader.expect("response", "error"),
      new Promise<never>((_, reject) => setTimeout(reject, options.responseTimeoutMs, new Error("timeout"))),
    ]);
  } catch (error) {
    const timedOut = error instanceof Error && error.message === "timeout";
    return abandon(
      timedOut
        ? errorPage(504, "origin_timeout", "The tunnel client did not answer in time.")
        : errorPage(502, "client_failed", "The tunnel client dropped the request."),
    );
  }
  if (answer.type === "error") return abandon(originErrorPage(answer));
  if (answer.status < 200 && answer.status !== 101 || !validHeaderPairs(answer.headers)) {
    return abandon(errorPage(502, "origin_error", "The origin's handshake answer is not valid HTTP."));
  }
  if (answer.status !== 101) {
    // The origin refused the upgrade with an ordinary response: pass it on as is.
    await writer.close().catch(() => {});
    return new Response(reader.body({ onEnd: options.onSettled }), {
      status: answer.status,
      headers: new Headers(answer.headers),
    });
  }

  let socket: WebSocket;
  try {
    socket = await accept({
      protocol: answer.headers.find(([name]) => name.toLowerCase() === "sec-websocket-protocol")?.[1],
      headers: withoutHandshake(answer.headers),
      maxPayload: MAX_WS_MESSAGE_BYTES,
    });
  } catch {
    // The visitor left mid-handshake; this answer goes nowhere.
    return abandon(errorPage(400, "bad_request", "The visitor left during the WebSocket handshake."));
  }
  relayMessages(socket, reader, writer).catch(() => socket.terminate());
  // A WebSocket counts against the in-flight cap only while its handshake is pending.
  return settle(RESPONSE_ALREADY_SENT);
}

/** Client side: opens the origin's WebSocket for `head` and relays messages until either side closes. */
export async function answerWebSocket(
  head: FrameOf<"request">,
  reader: FrameReader,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  options: { origin: Origin; originTimeoutMs: number },
): Promise<RequestOutcome> {
  const outcome = outcomeOf(head);
  const { origin } = options;
  const scheme = origin.protocol === "https:" ? "wss:" : "ws:";
  const host = origin.hostname.includes(":") ? `[${origin.hostname}]` : origin.hostname;
  const socket = new WebSocket(
    `${scheme}//${host}:${origin.port}${head.target}`,
    offeredProtocols(head.headers),
    {
      headers: Object.fromEntries(withoutHandshake(head.headers)),
      handshakeTimeout: options.originTimeoutMs,
      maxPayload: MAX_WS_MESSAGE_BYTES,
      followRedirects: false,
      rejectUnauthorized: false,
    },
  );

  const opened = await new Promise<"open" | FrameOf<"error"> | "refused-upgrade">((resolve) => {
    let handshake: HeaderPairs = [];
    socket.once("upgrade", (response) => handshake = rawHeaderPairs(response.rawHeaders));
    socket.once("open", async () => {
      await writer.write(encodeFrame({ type: "response", status: 101, headers: handshake })).catch(() => {});
      resolve("open");
    });
    socket.once("unexpected-response", async (_request, response) => {
      try {
        await writer.write(encodeFrame({
          type: "response",
          status: response.statusCode ?? 502,
          headers: endToEndHeaders(rawHeaderPairs(response.rawHeaders)),
        }));
        for await (const chunk of response) await writeBodyPiece(writer, chunk);
        await writeBodyEnd(writer);
        await writer.close();
      } catch {
        await writeBodyAbort(writer).catch(() => {});
      }
      resolve("refused-upgrade");
    });
    socket.once("error", (error: NodeJS.ErrnoException) => {
      const code = error.code === "ECONNREFUSED"
        ? "origin_refused"
        : /timeout/i.test(error.message)
        ? "origin_timeout"
        : "origin_error";
      resolve({ type: "error", code, message: `The origin's WebSocket failed: ${error.message}` });
    });
  });
  if (opened === "refused-upgrade") return outcome(400);
  if (opened !== "open") {
    await writer.write(encodeFrame(opened)).then(() => writer.close()).catch(() => {});
    await reader.cancel();
    return outcome(opened.code === "origin_timeout" ? 504 : 502, opened);
  }

  await relayMessages(socket, reader, writer);
  return outcome(101);
}
