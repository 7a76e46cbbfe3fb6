/**
 * HTTP over one QUIC stream, both halves.
 *
 * - {@link forwardRequest} (relay): a visitor's request becomes a `request`
 *   frame plus streamed body on a new stream; the client's `response` frame and
 *   body become the visitor's `Response`.
 * - {@link answerRequest} (client): reads that stream, replays the request to
 *   the local origin with `node:http` (which, unlike `fetch`, leaves
 *   `Content-Encoding` bodies alone), and streams the answer back.
 *
 * Bodies are never buffered: every write awaits the peer's flow control. An
 * abort on either side resets the stream, and the other side turns that into a
 * broken response or a destroyed origin request, never a clean short body.
 *
 * @module
 */
import http from "node:http";
import https from "node:https";
import { once } from "node:events";
import { encodeFrame, FrameReader, writeBodyAbort, writeBodyEnd, writeBodyPiece } from "./codec.ts";
import type { FrameOf } from "./protocol.ts";
import { errorPage } from "./pages.ts";
import { deadlineAfter, TimeoutError, withTimeout } from "./async.ts";
import { endToEndHeaders, type HeaderPairs, rawHeaderPairs, validHeaderPairs } from "./headers.ts";

/** Final responses that carry no body (RFC 9110 §6.4.1); 1xx heads never get this far. */
export function hasNoBody(method: string, status: number): boolean {
  return method === "HEAD" || status === 204 || status === 304;
}

export interface ForwardOptions {
  /** How long to wait for the client's response head before answering 504. */
  responseTimeoutMs: number;
  /** Longest pause allowed between pieces of the request body before 408. */
  bodyIdleTimeoutMs: number;
  /** Runs once when the exchange is over: body sent, failed or abandoned. */
  onSettled?: () => void;
  /** Aborts when the visitor leaves; the exchange is then abandoned at once. */
  visitorGone?: AbortSignal;
}

/** Relay side: sends `head` and `body` over a new stream on `conn`, returns the origin's answer. */
export async function forwardRequest(
  conn: Deno.QuicConn,
  head: FrameOf<"request">,
  body: ReadableStream<Uint8Array> | null,
  options: ForwardOptions,
): Promise<Response> {
  const settled = (response: Response) => (options.onSettled?.(), response);
  const stream = await openStream(conn);
  if (!stream) return settled(tunnelGone(head.tunnel));
  const writer = stream.writable.getWriter();
  const bodyReader = body?.getReader();
  let uploadAborted = false;
  /** Stops the upload and tells the client, in band, that the body is cut short. */
  const abortUpload = (reason: unknown) => {
    if (uploadAborted) return;
    uploadAborted = true;
    bodyReader?.cancel(reason).catch(() => {});
    writeBodyAbort(writer).catch(() => {});
  };
  const uploaded = (async () => {
    await writer.write(encodeFrame(head));
    if (bodyReader) {
      while (!uploadAborted) {
        // A visitor who stops sending mid-body (slow loris) gets a 408 instead of holding a slot forever.
        const { value, done } = await withTimeout(
          bodyReader.read(),
          options.bodyIdleTimeoutMs,
          "request body",
        )
          .catch((error) => {
            bodyReader.cancel(error).catch(() => {});
            throw error;
          });
        if (done) break;
        if (!uploadAborted) await writeBodyPiece(writer, value);
      }
    }
    if (uploadAborted) return;
    await writeBodyEnd(writer);
    await writer.close();
  })();
  uploaded.catch(abortUpload);
  const bodyStalled = uploaded.then(() => new Promise<never>(() => {}), (error) => {
    if (error instanceof TimeoutError) return "body timeout" as const;
    return new Promise<never>(() => {});
  });

  const reader = new FrameReader(stream.readable);
  const fail = async (response: Response) => {
    abortUpload("abandoned");
    await reader.cancel("abandoned");
    return settled(response);
  };
  const deadline = deadlineAfter(uploaded, options.responseTimeoutMs);
  const visitorLeft = new Promise<"visitor left">((resolve) => {
    if (options.visitorGone?.aborted) resolve("visitor left");
    options.visitorGone?.addEventListener("abort", () => resolve("visitor left"), { once: true });
  });
  let answer: FrameOf<"response" | "error"> | "timeout" | "body timeout" | "visitor left";
  try {
    answer = await Promise.race([
      reader.expect("response", "error"),
      deadline.expired,
      bodyStalled,
      visitorLeft,
    ]);
  } catch {
    return fail(errorPage(502, "client_failed", "The tunnel client dropped the request."));
  } finally {
    deadline.cancel();
  }
  if (answer === "visitor left") {
    // Nobody reads this page; what matters is that the client stops and the slot is free.
    return fail(errorPage(502, "client_failed", "The visitor left before the answer."));
  }
  if (answer === "body timeout") {
    const seconds = options.bodyIdleTimeoutMs / 1000;
    return fail(errorPage(408, "request_timeout", `The request body stalled for ${seconds} s.`));
  }
  if (answer === "timeout") {
    return fail(errorPage(504, "origin_timeout", "The tunnel client did not answer in time."));
  }
  if (answer.type === "error") return fail(originErrorPage(answer));
  // Checked here: some heads that `Response` accepts are not valid HTTP and cannot be written.
  if (answer.status < 200 || !validHeaderPairs(answer.headers)) {
    return fail(errorPage(502, "origin_error", "The origin's response head is not valid HTTP."));
  }
  const headers = new Headers(answer.headers);
  if (hasNoBody(head.method, answer.status)) {
    await reader.cancel("no body");
    return settled(new Response(null, { status: answer.status, headers }));
  }
  const responseBody = reader.body({ onCancel: abortUpload, onEnd: options.onSettled });
  return new Response(responseBody, { status: answer.status, headers });
}

/** A new stream to the client, or null when its connection is gone. */
export async function openStream(conn: Deno.QuicConn): Promise<Deno.QuicBidirectionalStream | null> {
  try {
    return await conn.createBidirectionalStream({ waitUntilAvailable: true });
  } catch {
    return null;
  }
}

/** The page for a tunnel whose client vanished between lookup and forwarding. */
export function tunnelGone(tunnel: string): Response {
  return errorPage(503, "tunnel_offline", `The tunnel ${tunnel} just went offline.`);
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

/** Where the client sends requests: the developer's local server. */
export interface Origin {
  protocol: "http:" | "https:";
  hostname: string;
  port: number;
}

/** Starts the clock on `head`; call the result with the final status to get its outcome. */
export function outcomeOf(head: FrameOf<"request">) {
  const started = performance.now();
  return (status: number, error?: FrameOf<"error">): RequestOutcome => ({
    method: head.method,
    target: head.target,
    status,
    durationMs: performance.now() - started,
    error,
  });
}

/** What happened to one request, for the client's one-line request log. */
export interface RequestOutcome {
  method: string;
  target: string;
  status: number;
  durationMs: number;
  error?: FrameOf<"error">;
}

export interface AnswerOptions {
  origin: Origin;
  /** How long the origin may take to send its response head. */
  originTimeoutMs: number;
  agent: http.Agent;
}

/** A keep-alive agent for talking to one origin, shared by all its requests. */
export function originAgent(origin: Origin): http.Agent {
  return origin.protocol === "https:"
    // The origin is the developer's own server; dev certificates are usually self-signed.
    ? new https.Agent({ keepAlive: true, rejectUnauthorized: false })
    : new http.Agent({ keepAlive: true });
}

/** Client side: answers the `request` frame `head` read from `stream` by asking the origin. */
export async function answerRequest(
  head: FrameOf<"request">,
  reader: FrameReader,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  options: AnswerOptions,
): Promise<RequestOutcome> {
  const outcome = outcomeOf(head);
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
  const upload = pipeToNode(reader.body(), request);
  upload.catch(() => request.destroy());

  // The origin's time to answer counts from the end of the upload.
  const deadline = deadlineAfter(upload, options.originTimeoutMs);
  const response = await new Promise<http.IncomingMessage | FrameOf<"error">>((resolve) => {
    deadline.expired.then(() => {
      resolve(
        errorFrame("origin_timeout", `The origin did not answer within ${options.originTimeoutMs} ms.`),
      );
      request.destroy();
    });
    request.once("response", resolve);
    request.once("error", (error: NodeJS.ErrnoException) => {
      resolve(
        error.code === "ECONNREFUSED"
          ? errorFrame(
            "origin_refused",
            `Nothing answers at ${originLabel(origin)} (connection refused).`,
          )
          : errorFrame("origin_error", `The origin failed: ${error.message}`),
      );
    });
  }).finally(() => deadline.cancel());

  if (!(response instanceof http.IncomingMessage)) {
    await writer.write(encodeFrame(response)).then(() => writer.close()).catch(() => {});
    await reader.cancel("origin failed");
    return outcome(response.code === "origin_timeout" ? 504 : 502, response);
  }
  const status = response.statusCode ?? 502;
  try {
    await writer.write(
      encodeFrame({
        type: "response",
        status,
        headers: endToEndHeaders(rawHeaderPairs(response.rawHeaders)),
      }),
    );
    for await (const chunk of response) await writeBodyPiece(writer, chunk);
    await writeBodyEnd(writer);
    await writer.close();
  } catch (error) {
    // The origin broke mid-body, or the visitor went away: stop both ends.
    response.destroy();
    request.destroy();
    await writeBodyAbort(writer).catch(() => {});
    await reader.cancel(error);
  }
  return outcome(status);
}

function errorFrame(code: FrameOf<"error">["code"], message: string): FrameOf<"error"> {
  return { type: "error", code, message };
}

/** `host:port` of the origin, as users typed it. */
export function originLabel(origin: Origin): string {
  return `${origin.hostname}:${origin.port}`;
}

async function pipeToNode(body: ReadableStream<Uint8Array>, request: http.ClientRequest) {
  for await (const chunk of body) {
    if (!request.write(chunk)) await once(request, "drain");
  }
  request.end();
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
