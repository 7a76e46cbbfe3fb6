/**
 * The relay's half of HTTP over a tunnel: a visitor's request becomes a
 * `request` frame plus its body on a lane (a long-lived stream, `lanes.ts`);
 * the client's `response` frame and body become the visitor's `Response`.
 *
 * The request body is held to the relay's rules while it streams (see
 * {@link BodyRules}): a cap on its size (413), a minimum pace so trickling
 * visitors cannot hold slots for ever (408), and a bound on how long the
 * tunnel may refuse to take it, as an origin that never reads does (504).
 * Nothing is buffered: every write awaits the peer's flow control. When
 * either side gives up, the other is told in band (an abort marker), and the
 * exchange settles at once so its slot is free.
 *
 * @example
 * ```ts
 * import type { FrameOf } from "../wire/protocol.ts";
 * import type { Lane } from "./lanes.ts";
 * declare const lane: Lane, head: FrameOf<"request">, request: Request;
 * let inFlight = 1;
 * const response = await forwardRequest(lane, head, request.body, {
 *   responseTimeoutMs: 120_000,
 *   body: { windowMs: 30_000, minBytesPerSecond: 64 },
 *   onSettled: () => inFlight--,
 * });
 * ```
 * @module
 */
import {
  encodeBodyEnd,
  encodeFrame,
  FrameReader,
  writeBodyAbort,
  writeBodyEnd,
  writeBodyPiece,
  writeTogether,
} from "../wire/codec.ts";
import type { FrameOf } from "../wire/protocol.ts";
import { errorPage, reconnectingMessage } from "./public/pages.ts";
import { deadlineAfter, TimeoutError, withTimeout } from "../shared/async.ts";
import { validHeaderPairs } from "../shared/headers.ts";
import { framedResponseHeaders, hasNoBody } from "./public/framing.ts";
import type { Lane } from "./lanes.ts";
import { getLogger } from "../shared/log.ts";

const log = getLogger(["reverprox", "http"]);

/** What the relay asks of a visitor's request body. */
export interface BodyRules {
  /**
   * For each window of this much time spent waiting on the visitor, the body must bring
   * `minBytesPerSecond` (at least one byte); also the longest the tunnel may take to accept a piece.
   */
  windowMs: number;
  minBytesPerSecond: number;
  /** Most bytes a body may have; `undefined` = no cap. */
  maxBytes?: number;
}

export interface ForwardOptions {
  /** How long to wait for the client's response head, counted from the end of the upload, before 504. */
  responseTimeoutMs: number;
  body: BodyRules;
  /** Runs once when the exchange is over: body sent, failed or abandoned. */
  onSettled?: () => void;
  /** Aborts when the visitor leaves; the exchange is then abandoned at once. */
  visitorGone?: AbortSignal;
}

/**
 * Sends `head` and `body` on `lane` (a long-lived stream, see `lanes.ts`); returns the origin's answer or
 * the relay's page. The lane is finished when the exchange is: freed for the next one when it ended
 * cleanly, closed otherwise.
 */
export async function forwardRequest(
  lane: Lane,
  head: FrameOf<"request">,
  body: ReadableStream<Uint8Array> | null,
  options: ForwardOptions,
): Promise<Response> {
  const upload = new Upload(lane.writer, head, body?.getReader(), options.body);
  let uploaded = false;
  upload.sent.then(() => uploaded = true, () => {
    // A failed upload is answered through `refused`, or by the client's error; the lane is not reused.
  });
  const answer = await awaitAnswer(lane.reader, upload, options);
  const page = answer instanceof Response
    ? answer
    : answer.type === "error"
    ? originErrorPage(answer)
    : undefined;
  if (page) {
    upload.abort("abandoned");
    lane.close();
    options.onSettled?.();
    return page;
  }
  return visitorResponse(head.method, answer as FrameOf<"response">, lane.reader, {
    more: true,
    onSettled: (whole) => {
      lane.finish(whole && uploaded);
      options.onSettled?.();
    },
    onCancel: (reason) => upload.abort(reason),
  });
}

/** The client's answer, or the relay's page when it did not come: timeout, refused upload, visitor gone. */
async function awaitAnswer(
  reader: FrameReader,
  upload: Upload,
  options: ForwardOptions,
): Promise<FrameOf<"response" | "error"> | Response> {
  const deadline = deadlineAfter(upload.sent, options.responseTimeoutMs);
  const visitorLeft = new Promise<Response>((resolve) => {
    // Nobody reads this page; what matters is that the client stops and the slot is free.
    const page = () => resolve(errorPage(502, "client_failed", "The visitor left before the answer."));
    if (options.visitorGone?.aborted) page();
    options.visitorGone?.addEventListener("abort", page, { once: true });
  });
  try {
    return await Promise.race([
      reader.expect("response", "error"),
      deadline.expired.then(() =>
        errorPage(504, "origin_timeout", "The tunnel client did not answer in time.")
      ),
      upload.refused,
      visitorLeft,
    ]);
  } catch (error) {
    log.debug("the tunnel client dropped a request: {error}", { error: String(error) });
    return errorPage(502, "client_failed", "The tunnel client dropped the request.");
  } finally {
    deadline.cancel();
  }
}

/**
 * The visitor's response for the client's `answer` to a request with `method`, framed by the relay; 502
 * for a head it cannot write. `onSettled` runs once the body is over; `onCancel` when the visitor leaves.
 */
export async function visitorResponse(
  method: string,
  answer: FrameOf<"response">,
  reader: FrameReader,
  hooks: { onSettled?: (whole: boolean) => void; onCancel?: (reason: unknown) => void; more?: boolean },
): Promise<Response> {
  const framing = answer.status >= 200 && validHeaderPairs(answer.headers)
    ? framedResponseHeaders(answer.status, answer.headers)
    : { problem: "the origin's response head is not valid HTTP" };
  if ("problem" in framing) {
    hooks.onCancel?.("bad answer");
    await reader.cancel("bad answer");
    hooks.onSettled?.(false);
    return errorPage(502, "origin_error", `The tunnel's response cannot be passed on: ${framing.problem}.`);
  }
  const headers = new Headers(framing.headers);
  const body = reader.body({ onCancel: hooks.onCancel, onEnd: hooks.onSettled, more: hooks.more });
  if (hasNoBody(method, answer.status)) {
    // Its body is read to the end marker (a lane goes on after it); one that has bytes is not reused.
    const empty = await body.getReader().read().then(({ done }) => done, () => false);
    if (!empty) hooks.onSettled?.(false);
    return new Response(null, { status: answer.status, headers });
  }
  return new Response(body, { status: answer.status, headers });
}

/** The page for a tunnel whose client vanished between lookup and forwarding. */
export function tunnelGone(tunnel: string): Response {
  return errorPage(503, "tunnel_offline", `The tunnel ${tunnel} just went offline.`);
}

/** The page for a tunnel whose client's link is down and did not come back in time. */
export function tunnelReconnecting(tunnel: string): Response {
  return errorPage(503, "tunnel_offline", reconnectingMessage(tunnel));
}

/** The visitor's page for a client's `error` answer. */
export function originErrorPage(frame: FrameOf<"error">): Response {
  switch (frame.code) {
    case "origin_refused":
      return errorPage(502, "origin_refused", frame.message);
    case "origin_timeout":
      return errorPage(504, "origin_timeout", frame.message);
    default:
      return errorPage(502, "origin_error", frame.message);
  }
}

/** A visitor's body refused by the relay's rules; `page` is the answer. */
class UploadRefused extends Error {
  constructor(readonly page: Response) {
    super(`upload refused with ${page.status}`);
  }
}

/**
 * Pumps the request head and body into a tunnel stream under {@link BodyRules}. `sent` settles when the
 * body is through (or failed); `refused` resolves with the page for a body the rules stopped.
 */
class Upload {
  readonly sent: Promise<void>;
  readonly refused: Promise<Response>;
  #aborted = false;

  constructor(
    private readonly writer: WritableStreamDefaultWriter<Uint8Array>,
    head: FrameOf<"request">,
    private readonly body: ReadableStreamDefaultReader<Uint8Array> | undefined,
    private readonly rules: BodyRules,
  ) {
    this.sent = this.#send(head);
    this.sent.catch((error) => this.abort(error));
    this.refused = this.sent.then(
      () => new Promise<never>(() => {}),
      (error) => error instanceof UploadRefused ? error.page : new Promise<never>(() => {}),
    );
  }

  /** Stops the upload and tells the client, in band, that the body is cut short. */
  abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    // The visitor's body is left unread, not cancelled: cancelling would drop the connection before a
    // refusal page could be written on it (refusal pages say `connection: close` instead).
    if (!(reason instanceof UploadRefused)) {
      this.body?.cancel(reason).catch(() => {
        // The visitor's body failed already: nothing is left to stop.
      });
    }
    writeBodyAbort(this.writer).catch(() => {
      // The stream is gone already; the client has nothing left to be told.
    });
  }

  async #send(head: FrameOf<"request">) {
    // The stream stays open after the body: it is a lane, and the next exchange may follow.
    if (!this.body) return await writeTogether(this.writer, [encodeFrame(head), encodeBodyEnd()]);
    await this.writer.write(encodeFrame(head));
    await this.#pumpBody(this.body);
    if (this.#aborted) return;
    await writeBodyEnd(this.writer);
  }

  async #pumpBody(body: ReadableStreamDefaultReader<Uint8Array>) {
    const { windowMs, minBytesPerSecond, maxBytes } = this.rules;
    const minBytes = Math.max(1, Math.floor(minBytesPerSecond * windowMs / 1000));
    let waited = 0, inWindow = 0, total = 0;
    let pending = body.read();
    while (!this.#aborted) {
      const started = performance.now();
      const result = await withTimeout(pending, windowMs - waited).catch((error) => {
        if (error instanceof TimeoutError) return undefined;
        throw error;
      });
      waited += performance.now() - started;
      const bytes = result?.value?.length ?? 0;
      if (waited >= windowMs) {
        if (inWindow + bytes < minBytes) throw refusal(408, "request_timeout", slowBody(minBytes, windowMs));
        [waited, inWindow] = [0, 0];
      }
      if (!result) continue;
      if (result.done) return;
      inWindow += bytes;
      total += bytes;
      if (maxBytes !== undefined && total > maxBytes) {
        throw refusal(413, "body_too_large", `The request body is over ${maxBytes} bytes.`);
      }
      await this.#write(result.value);
      pending = body.read();
    }
  }

  /** Writes one piece; a tunnel that takes none of it for a window means the origin stopped reading. */
  async #write(piece: Uint8Array) {
    await withTimeout(writeBodyPiece(this.writer, piece), this.rules.windowMs).catch((error) => {
      if (!(error instanceof TimeoutError)) throw error;
      const seconds = this.rules.windowMs / 1000;
      throw refusal(504, "origin_timeout", `The origin stopped reading the request body for ${seconds} s.`);
    });
  }
}

function slowBody(minBytes: number, windowMs: number): string {
  return minBytes === 1
    ? `The request body stalled for ${windowMs / 1000} s.`
    : `The request body brought under ${minBytes} bytes in ${windowMs / 1000} s.`;
}

/** A refusal page for a body the visitor is still sending: the connection closes after it. */
function refusal(
  status: number,
  code: "request_timeout" | "body_too_large" | "origin_timeout",
  message: string,
) {
  const page = errorPage(status, code, message);
  page.headers.set("connection", "close");
  return new UploadRefused(page);
}
