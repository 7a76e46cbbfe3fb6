/**
 * The relay's public listener: a Hono app served on `node:http` through
 * Hono's Node adapter (`@hono/node-server`).
 *
 * Not `Deno.serve`, because it puts no time limit on a request head (a
 * slow-loris visitor holds a connection forever) and slows down
 * quadratically on chunked bodies read slower than they arrive. Deno's
 * `node:http` answers a head that takes too long with 408 and reads bodies in
 * linear time.
 *
 * WebSocket handshakes reach the app as ordinary requests whose bindings
 * carry `acceptWebSocket`: called once the origin has accepted, it completes
 * the visitor's handshake (the `ws` library) and the app answers
 * `RESPONSE_ALREADY_SENT`. Any other answer, such as a refusal, is written to
 * the connection, which then closes.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { ConnectionLimits } from "../conn_limits.ts";
 * const app = new Hono();
 * app.get("/", (c) => c.text("hello\n"));
 * const limits = new ConnectionLimits({ total: 4096, perAddress: 256 });
 * const server = await servePublic(app.fetch, {
 *   hostname: "127.0.0.1",
 *   port: 8080,
 *   headerTimeoutMs: 10_000,
 *   maxHeadBytes: 48_000,
 *   admit: (address) => limits.admit(address),
 * });
 * await server.shutdown(5_000);
 * ```
 * @module
 */
import { createServer, type IncomingMessage, type Server, ServerResponse, STATUS_CODES } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { TlsOptions } from "node:tls";
import type { Duplex } from "node:stream";
import { getRequestListener, type HttpBindings } from "@hono/node-server";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { WebSocket, WebSocketServer } from "ws";
import type { HeaderPairs } from "../../shared/headers.ts";
import type { PageCode } from "./pages.ts";
import { getLogger } from "../../shared/log.ts";
import { LISTEN_BACKLOG } from "../conn_limits.ts";
import { wantsTunnel } from "../../transport/upgrade.ts";

const log = getLogger(["reverprox", "http"]);

/** Completes a visitor's WebSocket handshake with the origin's subprotocol and extra headers. */
export type AcceptWebSocket = (
  answer: { protocol?: string; headers: HeaderPairs; maxPayload: number },
) => Promise<WebSocket>;

/** What a request handler gets besides the request: Hono's `c.env`. */
export interface PublicBindings {
  incoming: IncomingMessage;
  outgoing: ServerResponse;
  /** Set on WebSocket handshakes only. */
  acceptWebSocket?: AcceptWebSocket;
}

export interface PublicServerOptions {
  hostname: string;
  port: number;
  /** Time a visitor has to send a whole request head before 408. */
  headerTimeoutMs: number;
  /** Request line plus headers before the parser itself answers 431. */
  maxHeadBytes: number;
  /** How long an idle keep-alive connection stays open (60 s by default). */
  keepAliveTimeoutMs?: number;
  /** Counts each new connection from a visitor address; a connection it refuses is closed at once. */
  admit: (address: string) => (() => void) | undefined;
  /**
   * Serve HTTPS (`node:https`) with these TLS options, `SNICallback` picking the certificate; the TLS
   * handshake gets `headerTimeoutMs` unless they set `handshakeTimeout`.
   */
  tls?: TlsOptions;
  /** Takes tunnel upgrades (`transport/upgrade.ts`): the client's TCP transport, passing this port. */
  tunnel?: (socket: Duplex, head: Buffer, incoming: IncomingMessage) => void;
}

export interface PublicServer {
  readonly port: number;
  /** Stops accepting; waits up to `drainMs` for requests in flight, then closes every connection. */
  shutdown(drainMs: number): Promise<void>;
}

type Fetch = (request: Request, bindings: PublicBindings) => Response | Promise<Response>;

/** Serves `fetch` on a new listener; resolves once it is bound. */
export function servePublic(fetch: Fetch, options: PublicServerOptions): Promise<PublicServer> {
  const upgrades = new WeakMap<IncomingMessage, AcceptWebSocket>();
  const websockets = new Set<WebSocket>();
  const listener = requestListener(fetch, upgrades);
  const server = createListener(options, listener);
  admitConnections(server, options.admit);
  // Deno's node:https reports a failed or timed-out TLS handshake as a client error too, on a socket
  // that cannot carry an HTTP answer.
  const secured = new WeakSet<Duplex>();
  server.on("secureConnection", (socket: Duplex) => secured.add(socket));
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) => {
    if (options.tls && !secured.has(socket)) return socket.destroy();
    answerClientError(error, socket, options);
  });
  server.on("upgrade", (incoming: IncomingMessage, socket: Socket, head: Buffer) => {
    if (options.tunnel && wantsTunnel(incoming)) return options.tunnel(socket, head, incoming);
    const accept = offerUpgrade(incoming, socket, head, websockets);
    if (accept) upgrades.set(incoming, accept.accept);
    listener(incoming, accept?.outgoing ?? refusalResponse(incoming, socket));
  });
  return listen(server, options, websockets);
}

/** A node:http server, or node:https with `options.tls`: the same HTTP options and protections either way. */
function createListener(options: PublicServerOptions, listener: ReturnType<typeof requestListener>): Server {
  const http = {
    headersTimeout: options.headerTimeoutMs,
    // Bodies have their own idle timeout (408); a whole-request deadline would cut long uploads.
    requestTimeout: 0,
    connectionsCheckingInterval: Math.min(1000, Math.max(100, options.headerTimeoutMs / 4)),
    maxHeaderSize: options.maxHeadBytes,
    keepAliveTimeout: options.keepAliveTimeoutMs ?? 60_000,
    shouldUpgradeCallback: (incoming: IncomingMessage) =>
      incoming.headers.upgrade?.toLowerCase() === "websocket" || (!!options.tunnel && wantsTunnel(incoming)),
  };
  if (!options.tls) return createServer(http, listener);
  return createHttpsServer({ ...http, handshakeTimeout: options.headerTimeoutMs, ...options.tls }, listener);
}

/**
 * The node:http listener for `fetch`. The adapter turns node:http requests into Web Requests;
 * responses are written by `respond`, which streams without the adapter's wait for a second chunk and
 * breaks the connection when a body fails instead of appending an error text to it.
 */
function requestListener(fetch: Fetch, upgrades: WeakMap<IncomingMessage, AcceptWebSocket>) {
  return getRequestListener(
    async (request, env) => {
      // This server speaks HTTP/1.1 only, so the bindings are always node:http's.
      const { incoming, outgoing } = env as HttpBindings;
      try {
        const response = await fetch(request, {
          incoming,
          outgoing,
          acceptWebSocket: upgrades.get(incoming),
        });
        if (response === RESPONSE_ALREADY_SENT) return RESPONSE_ALREADY_SENT;
        if (response.headers.get("connection") === "close" && !incoming.complete) {
          lingerOnClose(incoming.socket);
        }
        await respond(response, outgoing);
      } catch (error) {
        // One request must never take the relay down.
        log.error("answering {url} failed: {error}", { url: incoming.url, error: String(error) });
        outgoing.destroy();
      }
      return RESPONSE_ALREADY_SENT;
    },
    { overrideGlobalObjects: false },
  );
}

/** Answers what node:http's parser refused (slow head 408, head too large 431, not HTTP 400), then closes. */
function answerClientError(error: NodeJS.ErrnoException, socket: Duplex, options: PublicServerOptions) {
  if (error.code === "ECONNRESET" || !socket.writable) return socket.destroy();
  const [status, code, message]: [number, PageCode, string] = error.code === "ERR_HTTP_REQUEST_TIMEOUT"
    ? [408, "request_timeout", `The request head did not arrive within ${options.headerTimeoutMs} ms.`]
    : error.code === "HPE_HEADER_OVERFLOW"
    ? [431, "headers_too_large", `The request head is over ${options.maxHeadBytes} bytes.`]
    : [
      400,
      "bad_request",
      `The request is not valid HTTP/1.1 (${error.code ?? error.message}); ` +
      "check the request line and headers, and percent-encode non-ASCII bytes in the target.",
    ];
  log.info("{status} for {visitor}: {message}", {
    status,
    visitor: (socket as Socket).remoteAddress,
    message,
  });
  // No request was parsed, so there is no response object to write with: the page is written whole.
  const body = `${status} ${code.replaceAll("_", " ")}\n${message}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: text/plain; charset=utf-8\r\n` +
      `x-reverprox-error: ${code}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** A response on an upgrade's socket, for a handshake answered with an ordinary page; the socket closes after. */
function refusalResponse(incoming: IncomingMessage, socket: Socket): ServerResponse {
  socket.on("error", () => {
    // The visitor hung up mid-refusal; the socket is destroyed either way.
  });
  const outgoing = new ServerResponse(incoming);
  outgoing.assignSocket(socket);
  outgoing.shouldKeepAlive = false;
  outgoing.on("finish", () => socket.destroySoon());
  return outgoing;
}

/**
 * For a valid WebSocket handshake: the response to refuse it with, and `accept` to complete it once
 * the origin has accepted. Undefined for an invalid one, which the app refuses.
 */
function offerUpgrade(incoming: IncomingMessage, socket: Socket, head: Buffer, websockets: Set<WebSocket>) {
  if (!validHandshake(incoming)) return undefined;
  const outgoing = refusalResponse(incoming, socket);
  const accept: AcceptWebSocket = async (answer) => {
    const websocket = await acceptWebSocket(incoming, socket, head, outgoing, answer);
    websockets.add(websocket);
    websocket.once("close", () => websockets.delete(websocket));
    return websocket;
  };
  return { outgoing, accept };
}

function listen(
  server: Server,
  options: PublicServerOptions,
  websockets: Set<WebSocket>,
): Promise<PublicServer> {
  return new Promise((resolve, reject) => {
    const failed = (error: NodeJS.ErrnoException) =>
      reject(error.code === "EADDRINUSE" ? new Deno.errors.AddrInUse(error.message) : error);
    server.once("error", failed);
    server.listen({ port: options.port, host: options.hostname, backlog: LISTEN_BACKLOG }, () => {
      server.off("error", failed);
      resolve({
        port: (server.address() as AddressInfo).port,
        shutdown: (drainMs) => shutdown(server, websockets, drainMs),
      });
    });
  });
}

/** Longest a connection closed on an unfinished upload keeps reading (and dropping) what still arrives. */
const LINGER_MS = 2_000;
const LINGER_BYTES = 4 * 1024 * 1024;

/**
 * Makes the close after a refusal of an unfinished upload (413, 408) a lingering one: the answer goes
 * out, then the relay keeps reading and dropping the upload for a moment before it closes. Closing a
 * socket that still has unread bytes makes the kernel send a reset, which can destroy the answer
 * before the visitor reads it (nginx's `lingering_close`, for the same reason).
 */
function lingerOnClose(socket: Socket) {
  socket.destroySoon = () => {
    socket.end();
    let dropped = 0;
    const timer = setTimeout(() => socket.destroy(), LINGER_MS);
    socket.on("data", (chunk: Buffer) => {
      dropped += chunk.length;
      if (dropped > LINGER_BYTES) socket.destroy();
    });
    socket.once("end", () => socket.destroy());
    socket.once("close", () => clearTimeout(timer));
    socket.resume();
  };
}

/** Closes connections `admit` refuses before node:http reads a byte from them. */
function admitConnections(server: Server, admit: (address: string) => (() => void) | undefined) {
  server.prependListener("connection", (socket: Socket) => {
    const release = admit(socket.remoteAddress ?? "");
    if (release) socket.once("close", release);
    else socket.destroy();
  });
}

/**
 * Writes `response` to `outgoing`, streaming its body with backpressure; a failing body breaks the
 * connection. A body that does not match its own Content-Length closes the connection too: bytes past
 * it would be read by the visitor as the start of the next response.
 */
async function respond(response: Response, outgoing: ServerResponse): Promise<void> {
  // Flat name/value pairs; Headers yields each Set-Cookie on its own.
  const head: string[] = [];
  response.headers.forEach((value, name) => head.push(name, value));
  // Cancelling a body fails only when it failed already; either way nobody is left to read it.
  if (outgoing.destroyed) return void response.body?.cancel("visitor left").catch(() => {});
  outgoing.writeHead(response.status, head);
  if (!response.body) return void outgoing.end();
  const declared = response.headers.has("content-length")
    ? Number(response.headers.get("content-length"))
    : Infinity;
  const reader = response.body.getReader();
  let left = false;
  const leave = () => {
    left = true;
    reader.cancel("visitor left").catch(() => {}); // As above.
  };
  // One listener for the whole body: racing a promise per chunk would keep every chunk alive.
  outgoing.once("close", leave);
  let written = 0;
  let overflowed = false;
  try {
    while (written < declared) {
      const { done, value } = await reader.read();
      if (done || left) break;
      overflowed = written + value.length > declared;
      const allowed = overflowed ? value.subarray(0, declared - written) : value;
      written += allowed.length;
      if (!outgoing.write(allowed)) await drained(outgoing);
    }
    if (left) return;
    if (written < declared && declared !== Infinity) {
      throw new Error("the body ended short of its Content-Length");
    }
    if (written === declared && (overflowed || !(await endsHere(reader)))) {
      // What was declared is sent whole; the connection must not carry the rest as a next response.
      log.warn("a response body ran past its Content-Length; closing the visitor's connection");
      reader.cancel("body past its Content-Length").catch(() => {}); // As above.
      outgoing.end();
      // Flushes what was written, then hangs up: no later response is written on this connection.
      return void outgoing.socket?.end();
    }
    outgoing.end();
  } catch (error) {
    outgoing.destroy(error instanceof Error ? error : new Error(String(error)));
  } finally {
    outgoing.off("close", leave);
  }
}

/** Whether `reader`'s body has nothing after what was read. */
async function endsHere(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<boolean> {
  const { done } = await reader.read();
  return done;
}

/** Resolves once `outgoing` can take more, or is gone. */
function drained(outgoing: ServerResponse): Promise<void> {
  if (outgoing.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      outgoing.off("drain", done);
      outgoing.off("close", done);
      resolve();
    };
    outgoing.on("drain", done);
    outgoing.on("close", done);
  });
}

/** The key and version checks `ws` makes, done before the origin is asked so a bad handshake costs it nothing. */
function validHandshake(incoming: IncomingMessage): boolean {
  const key = incoming.headers["sec-websocket-key"];
  return incoming.method === "GET" && incoming.headers["sec-websocket-version"] === "13" &&
    typeof key === "string" && /^[+/0-9A-Za-z]{22}==$/.test(key.trim());
}

function acceptWebSocket(
  incoming: IncomingMessage,
  socket: Socket,
  head: Buffer,
  outgoing: ServerResponse,
  answer: { protocol?: string; headers: HeaderPairs; maxPayload: number },
): Promise<WebSocket> {
  outgoing.detachSocket(socket);
  const server = new WebSocketServer({
    noServer: true,
    maxPayload: answer.maxPayload,
    handleProtocols: () => answer.protocol ?? false,
  });
  server.on("headers", (lines: string[]) => {
    for (const [name, value] of answer.headers) lines.push(`${name}: ${value}`);
  });
  return new Promise((resolve, reject) => {
    // ws destroys the socket instead of calling back when the visitor is already gone.
    const gone = () => reject(new Error("the visitor left during the handshake"));
    socket.once("close", gone);
    server.handleUpgrade(incoming, socket, head, (websocket) => {
      socket.off("close", gone);
      resolve(websocket);
    });
  });
}

async function shutdown(
  server: Server,
  websockets: Set<WebSocket>,
  drainMs: number,
): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  for (const websocket of websockets) websocket.close(1001, "relay shutting down");
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([closed, new Promise((resolve) => timer = setTimeout(resolve, drainMs))]);
  clearTimeout(timer);
  server.closeAllConnections();
  for (const websocket of websockets) websocket.terminate();
  await closed;
}
