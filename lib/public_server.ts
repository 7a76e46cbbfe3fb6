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
 * const server = await servePublic(app.fetch, { hostname: "127.0.0.1", port: 8080, headerTimeoutMs: 10_000, maxHeadBytes: 48_000 });
 * await server.shutdown(5_000);
 * ```
 * @module
 */
import { createServer, type IncomingMessage, ServerResponse, STATUS_CODES } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import { getRequestListener, type HttpBindings } from "@hono/node-server";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { WebSocket, WebSocketServer } from "ws";
import type { HeaderPairs } from "./headers.ts";
import type { PageCode } from "./pages.ts";
import { getLogger } from "./log.ts";

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
}

export interface PublicServer {
  readonly port: number;
  /** Stops accepting; waits up to `drainMs` for requests in flight, then closes every connection. */
  shutdown(drainMs: number): Promise<void>;
}

/** Serves `fetch` on a new listener; resolves once it is bound. */
export function servePublic(
  fetch: (request: Request, bindings: PublicBindings) => Response | Promise<Response>,
  options: PublicServerOptions,
): Promise<PublicServer> {
  const upgrades = new WeakMap<IncomingMessage, AcceptWebSocket>();
  const websockets = new Set<WebSocket>();
  // The adapter turns node:http requests into Web Requests; responses are written by `respond`,
  // which streams without the adapter's wait for a second chunk and breaks the connection when a
  // body fails instead of appending an error text to it.
  const listener = getRequestListener(
    async (request, env) => {
      // This server speaks HTTP/1.1 only, so the bindings are always node:http's.
      const { incoming, outgoing } = env as HttpBindings;
      try {
        const response = await fetch(request, {
          incoming,
          outgoing,
          acceptWebSocket: upgrades.get(incoming),
        });
        if (response !== RESPONSE_ALREADY_SENT) await respond(response, outgoing);
      } catch (error) {
        // One request must never take the relay down.
        log.error("answering {url} failed: {error}", { url: incoming.url, error: String(error) });
        outgoing.destroy();
      }
      return RESPONSE_ALREADY_SENT;
    },
    { overrideGlobalObjects: false },
  );
  const server = createServer({
    headersTimeout: options.headerTimeoutMs,
    // Bodies have their own idle timeout (408); a whole-request deadline would cut long uploads.
    requestTimeout: 0,
    connectionsCheckingInterval: Math.min(1000, Math.max(100, options.headerTimeoutMs / 4)),
    maxHeaderSize: options.maxHeadBytes,
    keepAliveTimeout: 60_000,
    shouldUpgradeCallback: (incoming) => incoming.headers.upgrade?.toLowerCase() === "websocket",
  }, listener);

  server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) => {
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
  });

  server.on("upgrade", (incoming: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on("error", () => {});
    const outgoing = new ServerResponse(incoming);
    outgoing.assignSocket(socket);
    outgoing.shouldKeepAlive = false;
    outgoing.on("finish", () => socket.destroySoon());
    if (validHandshake(incoming)) {
      upgrades.set(incoming, async (answer) => {
        const websocket = await acceptWebSocket(incoming, socket, head, outgoing, answer);
        websockets.add(websocket);
        websocket.once("close", () => websockets.delete(websocket));
        return websocket;
      });
    }
    listener(incoming, outgoing);
  });

  return new Promise((resolve, reject) => {
    const failed = (error: NodeJS.ErrnoException) =>
      reject(error.code === "EADDRINUSE" ? new Deno.errors.AddrInUse(error.message) : error);
    server.once("error", failed);
    server.listen(options.port, options.hostname, () => {
      server.off("error", failed);
      resolve({
        port: (server.address() as AddressInfo).port,
        shutdown: (drainMs) => shutdown(server, websockets, drainMs),
      });
    });
  });
}

/** Writes `response` to `outgoing`, streaming its body with backpressure; a failing body breaks the connection. */
async function respond(response: Response, outgoing: ServerResponse): Promise<void> {
  // Flat name/value pairs; Headers yields each Set-Cookie on its own.
  const head: string[] = [];
  response.headers.forEach((value, name) => head.push(name, value));
  if (outgoing.destroyed) return void response.body?.cancel("visitor left").catch(() => {});
  outgoing.writeHead(response.status, head);
  if (!response.body) return void outgoing.end();
  const reader = response.body.getReader();
  let left = false;
  const leave = () => {
    left = true;
    reader.cancel("visitor left").catch(() => {});
  };
  // One listener for the whole body: racing a promise per chunk would keep every chunk alive.
  outgoing.once("close", leave);
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done || left) break;
      if (!outgoing.write(value)) await drained(outgoing);
    }
    if (!left) outgoing.end();
  } catch (error) {
    outgoing.destroy(error instanceof Error ? error : new Error(String(error)));
  } finally {
    outgoing.off("close", leave);
  }
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
  server: ReturnType<typeof createServer>,
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
