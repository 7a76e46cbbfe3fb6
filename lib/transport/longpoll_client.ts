/**
 * The client's half of the long-polling carrier: the last resort where only
 * plain HTTP requests reach the relay (a proxy that buffers or cuts
 * long-lived connections). {@link dialLongPoll} signs in (`POST /auth`),
 * opens a virtual connection (`POST /register`) and returns it as a node
 * `Duplex`, so the same TLS and multiplexer as the TCP transport run over it.
 *
 * Under the stream, a few requests are always out: up to {@link IDLE_POLLS}
 * empty polls wait at the relay for packets coming down, and the rest carry
 * packets up as soon as there are some (the relay answers those at once), so
 * neither direction waits on the other's round trips. Every packet stays in
 * the outbox until the relay acknowledges it and goes out again when the
 * request carrying it fails, so a cut poll loses nothing; numbers drop
 * duplicates. Protocol and format: `longpoll_wire.ts`, `../relay/longpoll.ts`.
 *
 * Requests use `node:http`/`node:https` with a keep-alive agent; through the
 * proxy `proxy_env.ts` reads from the environment: with absolute-form
 * targets for an `http:` relay URL, through `CONNECT` tunnels (then TLS, kept
 * alive as any connection) for an `https:` one.
 *
 * @example
 * ```ts
 * const carrier = await dialLongPoll({ url: "http://relay.example.com:8080", token: "s3cret" });
 * carrier.write("hello");
 * carrier.on("data", (chunk) => console.log(chunk));
 * ```
 * @module
 */
import * as http from "node:http";
import * as https from "node:https";
import type { Duplex } from "node:stream";
import {
  BATCH_MAX_BYTES,
  decodeBatch,
  encodeBatch,
  type Packet,
  PacketDuplex,
  parseAck,
} from "./longpoll_wire.ts";
import { proxyFor } from "./proxy_env.ts";
import { proxyRoute } from "./proxy.ts";
import { outerTls, type ProxyRoute, throughProxy } from "./upgrade.ts";
import { delay } from "../shared/async.ts";
import { hostPort } from "../shared/host_port.ts";

/** Empty polls kept waiting at the relay for packets coming down. */
export const IDLE_POLLS = 2;
/** Requests out at once by default: the idle polls and those carrying packets up. */
const DEFAULT_REQUESTS = 4;
/** Longest a request may take beyond the relay's poll wait before it counts as cut. */
const REQUEST_SLACK_MS = 10_000;
/** How long requests may keep failing before the carrier gives up and errors. */
const GIVE_UP_AFTER_MS = 30_000;
/** How often loops with nothing to do look for packets due to be sent again. */
const TICK_MS = 500;

export interface LongPollDialOptions {
  /** The relay's base URL: its public HTTP(S) port with its bare domain, or its info port. */
  url: string;
  /** The client's relay token, as in `hello`; none for an open relay. */
  token?: string;
  /** The proxy to go through; undefined = from the environment, null = direct. */
  proxy?: URL | null;
  /** Requests out at once (at least {@link IDLE_POLLS} + 1). */
  requests?: number;
  /** CA certificates trusted for an `https:` URL, beside the system's. */
  ca?: string[];
}

/** The relay turned the sign-in or the registration down: `status` says why (401, 403, 429, 503). */
export class LongPollRefused extends Error {
  override name = "LongPollRefused";
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** What a carrier did, for tests and benchmarks. */
export interface LongPollStats {
  requests: number;
  failures: number;
  inFlight: number;
  peakInFlight: number;
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Uint8Array;
}

/**
 * An `https.Agent` whose connections go through an HTTP `CONNECT` proxy, then TLS to the relay as to any
 * website (or `ca`); kept alive like any other.
 */
class ConnectAgent extends https.Agent {
  constructor(private readonly proxy: ProxyRoute, options: https.AgentOptions) {
    super(options);
  }

  override createConnection(
    options: { host?: string; port?: number; servername?: string; ca?: string[] },
    callback: (error: Error | null, socket?: Duplex) => void,
  ): undefined {
    const host = options.host ?? "localhost";
    const authority = hostPort(host, options.port ?? 443);
    throughProxy(this.proxy, authority)
      .then((socket) => outerTls(socket, options.servername ?? host, authority, options.ca))
      .then((secured) => callback(null, secured), (error) => callback(error));
    return undefined;
  }
}

/** Where requests go: straight to the relay, to a proxy with absolute-form targets, or through CONNECT. */
class Route {
  readonly #agent: http.Agent;
  /** A proxy that takes absolute-form targets (an `http:` relay URL). */
  readonly #proxy: URL | undefined;

  constructor(readonly base: URL, proxy: URL | undefined, private ca: string[] | undefined) {
    const options = { keepAlive: true, maxSockets: 16 };
    const secure = base.protocol === "https:";
    this.#proxy = secure ? undefined : proxy;
    this.#agent = !secure
      ? new http.Agent(options)
      : proxy
      ? new ConnectAgent(proxyRoute(proxy), options)
      : new https.Agent(options);
  }

  request(
    method: string,
    path: string,
    body: Uint8Array,
    headers: Record<string, string>,
    timeoutMs: number,
  ) {
    const target = new URL(path, this.base);
    const via = this.#proxy ?? target;
    const send = target.protocol === "https:" ? https.request : http.request;
    return new Promise<Answer>((resolve, reject) => {
      const request = send({
        agent: this.#agent,
        method,
        hostname: via.hostname.replace(/^\[|\]$/g, ""),
        port: via.port || (via.protocol === "https:" ? 443 : 80),
        path: this.#proxy ? target.href : target.pathname,
        headers: { ...headers, host: target.host, "content-length": String(body.length) },
        ca: this.ca,
        timeout: timeoutMs,
      }, (response) => {
        const chunks: Uint8Array[] = [];
        response.on("data", (chunk: Uint8Array) => chunks.push(chunk));
        response.on("error", reject);
        response.on("end", () => {
          const answer = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
          chunks.reduce((at, chunk) => (answer.set(chunk, at), at + chunk.length), 0);
          resolve({ status: response.statusCode ?? 0, headers: response.headers, body: answer });
        });
        response.on("aborted", () => reject(new Error("the answer was cut")));
      });
      request.on("timeout", () => request.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      request.on("error", reject);
      request.end(body);
    });
  }

  close() {
    this.#agent.destroy();
  }
}

/** A virtual connection to the relay as a byte stream; see the module doc. */
export class LongPollCarrier extends PacketDuplex {
  readonly stats: LongPollStats = { requests: 0, failures: 0, inFlight: 0, peakInFlight: 0 };
  #idlePolls = 0;
  #uploads = 0;
  readonly #maxUploads: number;
  #wakers = new Set<() => void>();
  #failingSince: number | undefined;
  #failuresInARow = 0;
  /** A request failed: the next one asks the relay to resend (the failed answer may have carried packets). */
  #answerLost = false;
  /** Numbers each request, so the relay sees one node:http sent twice (`longpoll_wire.ts`). */
  #pollNumber = 0;

  constructor(
    private route: Route,
    private connectionToken: string,
    private pollWaitMs: number,
    requests: number,
  ) {
    super(() => this.#wake());
    this.#maxUploads = Math.max(1, requests - IDLE_POLLS);
    for (let i = 0; i < IDLE_POLLS + this.#maxUploads; i++) this.#loop();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#wake();
    const headers = { authorization: `Bearer ${this.connectionToken}` };
    this.route.request("DELETE", "/", new Uint8Array(0), headers, 5_000)
      .catch(() => {
        // The relay frees a connection nobody polls after its idle timeout anyway.
      })
      .finally(() => this.route.close());
    super._destroy(error, callback);
  }

  async #loop() {
    while (!this.destroyed && !this.#done()) {
      await this.whenWanted();
      if (this.destroyed) return;
      // Uploads never take the idle polls' places: those carry the acknowledgements that let the
      // relay's reader (and so the uploads it holds back) move on.
      if (this.#uploads < this.#maxUploads && this.outbox.due(Date.now()) > 0) await this.#exchange(true);
      else if (this.#idlePolls < IDLE_POLLS) await this.#exchange(false);
      else await this.#nextEvent();
    }
    if (this.#done()) this.destroy();
  }

  /** Both directions ended and everything acknowledged: nothing left to carry. */
  #done(): boolean {
    return this.writableFinished && this.readableEnded && this.outbox.size === 0;
  }

  /** One request: packets up (an upload) or none (a poll), packets down. */
  async #exchange(upload: boolean) {
    const packets = upload ? this.outbox.take(BATCH_MAX_BYTES, Date.now()) : [];
    if (upload) this.#uploads++;
    else this.#idlePolls++;
    this.stats.requests++;
    this.stats.peakInFlight = Math.max(this.stats.peakInFlight, ++this.stats.inFlight);
    try {
      await this.#send(packets);
      this.#failingSince = undefined;
      this.#failuresInARow = 0;
    } catch (error) {
      this.outbox.giveBack(packets);
      this.#answerLost = true;
      this.#failed(error);
      // Backs off by failures in a row, not in all: a few cuts long ago must not slow every later retry.
      if (!this.destroyed) await delay(Math.min(1000, 50 * 2 ** Math.min(this.#failuresInARow, 5)));
    } finally {
      this.stats.inFlight--;
      if (upload) this.#uploads--;
      else this.#idlePolls--;
      this.#wake();
    }
  }

  async #send(packets: Packet[]) {
    const resend: Record<string, string> = this.#answerLost ? { resend: "1" } : {};
    this.#answerLost = false;
    const answer = await this.route.request("POST", "/", encodeBatch(packets), {
      authorization: `Bearer ${this.connectionToken}`,
      ack: String(this.inbox.expected),
      "content-type": "application/octet-stream",
      poll: String(this.#pollNumber++),
      ...resend,
    }, this.pollWaitMs + REQUEST_SLACK_MS);
    if (answer.status === 401) {
      return void this.destroy(new Error("the relay closed the long-polling connection (401)"));
    }
    if (answer.status !== 200) throw new Error(`the relay answered a poll with ${answer.status}`);
    this.outbox.ack(parseAck(answer.headers.ack as string | undefined));
    this.deliver(decodeBatch(answer.body));
  }

  #failed(error: unknown) {
    this.stats.failures++;
    this.#failuresInARow++;
    this.#failingSince ??= Date.now();
    if (Date.now() - this.#failingSince > GIVE_UP_AFTER_MS) {
      this.destroy(new Error(`long-polling failed for ${GIVE_UP_AFTER_MS} ms: ${error}`));
    }
  }

  #wake() {
    for (const wake of this.#wakers) wake();
  }

  /** Resolves on new packets to send, a request ending, or a tick (packets may be due again). */
  async #nextEvent() {
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => wake = resolve);
    this.#wakers.add(wake);
    await Promise.race([woken, delay(TICK_MS)]);
    this.#wakers.delete(wake);
  }
}

/**
 * Signs in to the relay at `options.url`, opens a virtual connection and returns it as a byte stream.
 * Rejects with the relay's words on 401 (bad token), 403 (token not permitted) or a cap (429, 503).
 */
export async function dialLongPoll(options: LongPollDialOptions): Promise<LongPollCarrier> {
  const base = new URL(options.url);
  const proxy = options.proxy === undefined ? proxyFor(base) : options.proxy ?? undefined;
  const route = new Route(base, proxy, options.ca);
  try {
    const json = { "content-type": "application/json" };
    const auth = await expectJson(
      await route.request(
        "POST",
        "/auth",
        new TextEncoder().encode(JSON.stringify({ token: options.token })),
        json,
        10_000,
      ),
      "/auth",
    );
    const registered = await expectJson(
      await route.request(
        "POST",
        "/register",
        new Uint8Array(0),
        { authorization: `Bearer ${stringField(auth, "token", "/auth")}` },
        10_000,
      ),
      "/register",
    );
    const pollWaitMs = Number(registered.pollWaitMs);
    if (!(pollWaitMs > 0)) throw new Error("/register: not a relay's answer (no pollWaitMs)");
    return new LongPollCarrier(
      route,
      stringField(registered, "token", "/register"),
      pollWaitMs,
      options.requests ?? DEFAULT_REQUESTS,
    );
  } catch (error) {
    route.close();
    throw error;
  }
}

/** `answer[name]` as a non-empty string; anything else is no relay speaking (another server on the port). */
function stringField(answer: Record<string, unknown>, name: string, what: string): string {
  const value = answer[name];
  if (typeof value !== "string" || value === "") {
    throw new Error(`${what}: not a relay's answer (no ${name})`);
  }
  return value;
}

async function expectJson(answer: Answer, what: string): Promise<Record<string, unknown>> {
  const text = new TextDecoder().decode(answer.body);
  if (answer.status !== 200) {
    throw new LongPollRefused(answer.status, `${what}: ${text.trim() || answer.status}`);
  }
  return await JSON.parse(text);
}
