/**
 * The client's half of HTTP over a tunnel stream (the relay's is
 * `relay/forward_http.ts`): reads the request head and body from the stream,
 * replays them to the local origin with `node:http` (which, unlike `fetch`,
 * leaves `Content-Encoding` bodies alone), and streams the answer back.
 *
 * Bodies are never buffered: every write awaits the peer's flow control. When
 * either side breaks off, the other is told in band (an abort marker, see
 * `codec.ts`): a broken response or a destroyed origin request, never a clean
 * short body.
 *
 * @example
 * ```ts
 * import type { FrameReader } from "../wire/codec.ts";
 * import type { FrameOf } from "../wire/protocol.ts";
 * import type { Exchange } from "./exchange.ts";
 * import { originAgent, parseOrigin } from "./origin.ts";
 * declare const head: FrameOf<"request">, reader: FrameReader, writer: WritableStreamDefaultWriter<Uint8Array>;
 * declare const exchange: Exchange;
 * const origin = parseOrigin("3000");
 * await answerRequest(head, reader, writer, { origin, originTimeoutMs: 60_000, agent: originAgent(origin) }, exchange);
 * ```
 * @module
 */
import http from "node:http";
import https from "node:https";
import { once } from "node:events";
import {
  encodeBodyEnd,
  encodeBodyPiece,
  encodeFrame,
  FrameReader,
  writeBodyAbort,
  writeTogether,
} from "../wire/codec.ts";
import type { FrameOf } from "../wire/protocol.ts";
import { deadlineAfter, TimeoutError, withTimeout } from "../shared/async.ts";
import { endToEndHeaders, type HeaderPairs, rawHeaderPairs } from "../shared/headers.ts";
import { type Origin, originLabel } from "./origin.ts";
import type { Exchange } from "./exchange.ts";

export interface AnswerOptions {
  origin: Origin;
  /** How long the origin may take to send its response head. */
  originTimeoutMs: number;
  agent: http.Agent;
}

/**
 * Answers the `request` frame `head` (its body follows on `reader`) by asking the origin; tells `exchange`.
 * Resolves true when the exchange ended cleanly (whole answer sent, whole request body read), so the
 * stream, a lane, may carry the next request; false when it was ended instead.
 */
export async function answerRequest(
  head: FrameOf<"request">,
  reader: FrameReader,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  options: AnswerOptions,
  exchange: Exchange,
): Promise<boolean> {
  const { origin } = options;
  const request = (origin.protocol === "https:" ? https : http).request({
    protocol: origin.protocol,
    hostname: origin.hostname,
    port: origin.port,
    method: head.method,
    path: head.target,
    headers: toNodeHeaders(head.headers),
    agent: options.agent,
    setHost: false,
  });
  const upload = new OriginUpload(reader.body({ more: true }), request, options.originTimeoutMs, exchange);
  // A failed upload (the visitor left, the origin stalled) ends the origin's request; originResponse says why.
  upload.done.catch(() => request.destroy());
  const response = await originResponse(request, upload.done, options);
  if (!(response instanceof http.IncomingMessage)) {
    await writer.write(encodeFrame(response)).then(() => writer.close()).catch(() => {
      // The relay gave up on the stream first; nothing is left to tell it.
    });
    await reader.cancel("origin failed");
    exchange.done(response.code === "origin_timeout" ? 504 : 502, response);
    return false;
  }
  if (!await sendResponse(response, writer, exchange, { keepOpen: true })) {
    // The origin broke mid-body, or the visitor went away: stop both ends.
    request.destroy();
    await reader.cancel("response broken");
    exchange.done(undefined, { code: "origin_error", message: "the response broke off" });
    return false;
  }
  exchange.done();
  // An origin that answered before reading the whole upload: the rest is read and dropped, up to the end.
  if (await upload.finish()) return true;
  await writer.close().catch(() => {
    // The stream is gone already.
  });
  await reader.cancel("lane ended");
  return false;
}

/**
 * Streams the origin's `response`, head then body, into the tunnel stream; false when the origin broke
 * off mid-body or the relay stopped reading (the body then ends with an abort marker).
 */
export async function sendResponse(
  response: http.IncomingMessage,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  exchange: Exchange,
  /** `keepOpen`: the stream is a lane and goes on after the body; else the body ends it. */
  options: { keepOpen?: boolean } = {},
): Promise<boolean> {
  const status = response.statusCode ?? 502;
  const headers = endToEndHeaders(rawHeaderPairs(response.rawHeaders));
  exchange.response(status, headers);
  // Written with the first piece, and the end marker with the last one the parser has: a small answer
  // crosses in one write.
  let pending = [encodeFrame({ type: "response", status, headers })];
  try {
    let ended = false;
    for await (const chunk of response) {
      exchange.responseBytes(chunk);
      pending.push(encodeBodyPiece(chunk));
      ended = response.complete && response.readableLength === 0;
      if (ended) pending.push(encodeBodyEnd());
      await writeTogether(writer, pending);
      pending = [];
    }
    if (!ended) await writeTogether(writer, [...pending, encodeBodyEnd()]);
    if (!options.keepOpen) await writer.close();
    return true;
  } catch {
    // The origin broke off or the relay stopped reading: the caller reports a broken response.
    response.destroy();
    // A body that broke before its first piece still owes the visitor the origin's head.
    const head = pending.length > 0 ? writeTogether(writer, pending) : Promise.resolve();
    await head.then(() => writeBodyAbort(writer)).catch(() => {
      // The stream is gone already: the relay has seen the body end.
    });
    return false;
  }
}

/**
 * The origin's response to `request`, or the error frame that says why there is none. The origin's time
 * to answer counts from the end of the upload.
 *
 * Errors are listened to for the request's whole life, not once: node:http reports some after the first
 * (junk after a whole response) and, under Deno, twice for one request (below); an `error` event with no
 * listener would end the client process.
 */
function originResponse(
  request: http.ClientRequest,
  upload: Promise<void>,
  options: AnswerOptions,
): Promise<http.IncomingMessage | FrameOf<"error">> {
  const deadline = deadlineAfter(upload, options.originTimeoutMs);
  return new Promise<http.IncomingMessage | FrameOf<"error">>((resolve) => {
    deadline.expired.then(() => {
      resolve(
        errorFrame("origin_timeout", `The origin did not answer within ${options.originTimeoutMs} ms.`),
      );
      request.destroy();
    });
    upload.catch((error) => {
      if (!(error instanceof TimeoutError)) return;
      const seconds = options.originTimeoutMs / 1000;
      resolve(errorFrame("origin_timeout", `The origin stopped reading the request body for ${seconds} s.`));
    });
    request.once("response", resolve);
    request.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code?.startsWith("HPE_")) {
        // Deno's node:http sends a request again on a new connection when a reused keep-alive socket
        // closes before a response: meant for sockets the origin closed while idle, it also fires after
        // the origin answered with bytes the parser refused, so the origin would get the request twice
        // (a POST done twice) and we a second error. The origin did answer: this is no stale socket.
        request.reusedSocket = false;
      }
      resolve(originFailure(error, options.origin));
    });
  }).finally(() => deadline.cancel());
}

/** The error frame for a request to `origin` that failed with `error`. */
function originFailure(error: NodeJS.ErrnoException, origin: Origin): FrameOf<"error"> {
  if (error.code === "ECONNREFUSED") {
    return errorFrame("origin_refused", `Nothing answers at ${originLabel(origin)} (connection refused).`);
  }
  return malformedAnswer(error) ?? errorFrame("origin_error", `The origin failed: ${error.message}`);
}

/** The error frame for an origin answer node:http's parser refused (codes `HPE_*`); undefined for other errors. */
export function malformedAnswer(error: NodeJS.ErrnoException): FrameOf<"error"> | undefined {
  if (!error.code?.startsWith("HPE_")) return undefined;
  // llhttp's reasons read well on their own ("Duplicate Content-Length", "Header overflow").
  const reason = error.message.replace(/^Parse Error: /, "");
  return errorFrame("origin_error", `The origin's answer is not valid HTTP: ${reason}.`);
}

function errorFrame(code: FrameOf<"error">["code"], message: string): FrameOf<"error"> {
  return { type: "error", code, message };
}

/** Streams `body` into the origin's request; an origin that takes nothing for `stallMs` fails it. */
/** The visitor's body streamed into the origin's request; an origin that takes nothing for `stallMs` fails it. */
class OriginUpload {
  readonly done: Promise<void>;
  /** Set once the answer is out: what is left of the body is read to its end and dropped. */
  #dropping = false;

  constructor(
    body: ReadableStream<Uint8Array>,
    private readonly request: http.ClientRequest,
    private readonly stallMs: number,
    private readonly exchange: Exchange,
  ) {
    this.done = this.#pipe(body);
  }

  /** Once the answer is out: whether the body was read to its end marker (the lane may go on). */
  finish(): Promise<boolean> {
    this.#dropping = true;
    return this.done.then(() => true, () => false);
  }

  async #pipe(body: ReadableStream<Uint8Array>) {
    for await (const chunk of body) {
      this.exchange.requestBytes(chunk);
      if (this.#dropping) continue;
      if (!this.request.write(chunk)) {
        await withTimeout(once(this.request, "drain"), this.stallMs, "origin upload");
      }
    }
    if (!this.#dropping) this.request.end();
  }
}

function toNodeHeaders(pairs: HeaderPairs): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of pairs) {
    const key = name.toLowerCase();
    const existing = headers[key];
    if (existing === undefined) headers[key] = value;
    else if (Array.isArray(existing)) existing.push(value);
    else headers[key] = [existing, value];
  }
  return headers;
}
