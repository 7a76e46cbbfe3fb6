/**
 * A visitor for tunnel URLs: `visit("http://api.localhost:8080/x")` works like
 * `fetch` but connects to 127.0.0.1 and sends the URL's host as the Host header,
 * which Deno's `fetch` can neither resolve (`*.localhost`) nor override. Built
 * on `node:http`, so bodies stream both ways, nothing is decompressed, and
 * each `Set-Cookie` stays its own header. An `https:` URL is visited over TLS
 * with the URL's host as SNI, trusting only `ca`.
 * @module
 */
import http from "node:http";
import https from "node:https";
import { Readable } from "node:stream";
import tls, { type PeerCertificate } from "node:tls";

export interface VisitInit {
  method?: string;
  headers?: Record<string, string>;
  body?: ReadableStream<Uint8Array> | Uint8Array | string;
  signal?: AbortSignal;
  /** For `https:` URLs: the only CA trusted (PEM). */
  ca?: string;
  /** Where the relay listens, when not on 127.0.0.1 (a relay in a network namespace). */
  address?: string;
}

/** Sends one request to the relay that serves `url` and returns the answer as a `Response`. */
export function visit(url: string, init: VisitInit = {}): Promise<Response> {
  const target = new URL(url);
  const secure = target.protocol === "https:";
  return new Promise((resolve, reject) => {
    const request = (secure ? https : http).request({
      hostname: init.address ?? "127.0.0.1",
      port: Number(target.port || (secure ? 443 : 80)),
      method: init.method ?? "GET",
      path: target.pathname + target.search,
      headers: { host: target.host, ...init.headers },
      agent: false,
      signal: init.signal,
      ...(secure ? { servername: target.hostname, ca: init.ca } : {}),
    }, (response) => {
      const headers = new Headers();
      const raw = response.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) headers.append(raw[i], raw[i + 1]);
      // A cancelled body destroys the socket, and node then emits "socket hang up" on both the
      // request and the response; the web stream already reports errors to whoever reads it.
      response.on("error", () => {});
      request.on("error", () => {});
      const status = response.statusCode!;
      const empty = (init.method ?? "GET") === "HEAD" || status === 204 || status === 304;
      const body = empty ? null : Readable.toWeb(response) as ReadableStream<Uint8Array>;
      if (empty) response.resume();
      resolve(new Response(body, { status, headers }));
    });
    request.on("error", reject);
    if (init.body instanceof ReadableStream) {
      Readable.fromWeb(init.body as import("node:stream/web").ReadableStream).pipe(request);
    } else {
      request.end(init.body);
    }
  });
}

/**
 * Polls `url` every 100 ms until it answers `status`, for states reached
 * asynchronously; an unreachable relay counts as not yet. Returns the answer.
 */
export async function eventually(url: string, status: number, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const answer = await visit(url).then(
      async (response) => ({ status: response.status, body: await response.text() }),
      (error) => ({ status: 0, body: String(error) }),
    );
    if (answer.status === status) return answer;
    if (Date.now() > deadline) throw new Error(`${url} still answers ${answer.status}: ${answer.body}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The certificate the relay serves for `url`'s host (SNI), checked against `ca` and the host name. */
export function peerCertificate(url: string, ca: string): Promise<PeerCertificate> {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port: Number(target.port || 443),
      servername: target.hostname,
      ca,
    }, () => {
      const certificate = socket.getPeerCertificate();
      socket.end();
      resolve(certificate);
    });
    socket.once("error", reject);
  });
}
