/**
 * The relay's half of the long-polling carrier: for networks where only
 * plain HTTP requests pass, a byte stream simulated with requests, handed to
 * `onCarrier` as a node `Duplex` (the same TLS and multiplexer as the TCP
 * transport then run over it). Served on the bare domain of the public port
 * and on the info port:
 *
 * - `POST /auth`, JSON `{"token": "..."}` (the client's relay token, none on
 *   an open relay) → 200 `{"token": bearer, "expiresInMs"}`; 401 bad token;
 *   403 a token that may hold no tunnels.
 * - `POST /register`, `Authorization: Bearer <auth bearer>` → 200
 *   `{"id", "token", "pollWaitMs"}`: a new virtual connection; 401 bad or
 *   expired bearer; 429/503 too many connections from the address / in all.
 * - `POST /`, `Authorization: Bearer <connection token>`, `Ack: n`: the body
 *   carries packets up; the response carries the waiting packets down (at
 *   once when the request brought packets, else within `pollWaitMs`), with
 *   `Ack` and `More`; `Resend: 1`, or a `Poll` number seen before, hands
 *   out again what was sent and not acknowledged. 401 bad or expired token.
 * - `DELETE /` with the connection token closes it.
 *
 * Packet format and acknowledgements: `../transport/longpoll_wire.ts`. A
 * connection no request touched for `idleTimeoutMs` is closed and freed.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * const longPoll = new LongPollServer({
 *   tokens: { tokenHashes: null },
 *   onCarrier: (carrier) => carrier.pipe(carrier), // an echo
 * });
 * const app = new Hono();
 * app.route("/", longPoll.routes);
 * ```
 * @module
 */
import { Hono } from "hono";
import type { Context } from "hono";
import type { Duplex } from "node:stream";
import {
  BATCH_MAX_BYTES,
  decodeBatch,
  encodeBatch,
  LongPollFrameError,
  PacketDuplex,
  parseAck,
  parsePollNumber,
} from "../transport/longpoll_wire.ts";
import { delay } from "../shared/async.ts";
import { getLogger } from "../shared/log.ts";
import { ProtocolError } from "../wire/protocol.ts";
import { type TokenSources, verifyToken } from "./hello.ts";
import type { PublicBindings } from "./public/server.ts";
import { ConnectionLimits } from "./conn_limits.ts";

const log = getLogger(["reverprox", "longpoll"]);

export interface LongPollOptions {
  tokens: TokenSources;
  /** Gets each new virtual connection's byte stream and the address that opened it. */
  onCarrier(carrier: Duplex, peer: { hostname: string; port: number }): void;
  /** Longest a poll with nothing to carry waits for packets before an empty answer. */
  pollWaitMs?: number;
  /** A connection no request touched for this long is closed. */
  idleTimeoutMs?: number;
  /** How long an auth bearer opens connections. */
  authTtlMs?: number;
  /** Virtual connections one address may hold, and all addresses together. */
  maxPerAddress?: number;
  maxTotal?: number;
}

const DEFAULTS = {
  pollWaitMs: 25_000,
  idleTimeoutMs: 60_000,
  authTtlMs: 60_000,
  maxPerAddress: 16,
  maxTotal: 1024,
};
/** Auth bearers kept at once (each a few dozen bytes), so a flood of /auth stays small. */
const MAX_AUTH_BEARERS = 4096;
/** Auth bearers one address may hold, so one address cannot take them all. */
const MAX_AUTH_BEARERS_PER_ADDRESS = 64;
/** Requests one virtual connection may have open at once (the client keeps a few). */
const MAX_POLLS_PER_CONNECTION = 8;
/** Poll numbers a connection remembers, to see one sent twice (a retry comes at once, so a few suffice). */
const RECENT_POLLS = 64;
/** How often waiting polls look for packets due to be sent again, and idle connections are swept. */
const TICK_MS = 500;

type Env = { Bindings: PublicBindings };

class VirtualConnection {
  readonly carrier: PacketDuplex;
  lastSeen = Date.now();
  polls = 0;
  #wakers = new Set<() => void>();
  #recentPolls = new Set<number>();

  constructor(readonly id: string, readonly release: () => void) {
    this.carrier = new PacketDuplex(() => this.wake());
  }

  /** Whether poll `number` came before (so its first answer was lost); remembers it otherwise. */
  seenBefore(number: number): boolean {
    if (this.#recentPolls.has(number)) return true;
    this.#recentPolls.add(number);
    if (this.#recentPolls.size > RECENT_POLLS) {
      this.#recentPolls.delete(this.#recentPolls.values().next().value!);
    }
    return false;
  }

  /** Wakes the polls waiting for packets. */
  wake() {
    for (const wake of this.#wakers) wake();
  }

  /** Resolves once a packet is due, `ms` pass, or the request is gone. */
  async waitForPackets(ms: number, signal: AbortSignal): Promise<void> {
    const until = Date.now() + ms;
    while (this.carrier.outbox.due(Date.now()) === 0 && Date.now() < until && !signal.aborted) {
      if (this.carrier.destroyed) return;
      let wake!: () => void;
      const woken = new Promise<void>((resolve) => wake = resolve);
      this.#wakers.add(wake);
      // A delay cut short by the poll's end rejects; the loop's test sees the aborted signal.
      await Promise.race([woken, delay(Math.min(TICK_MS, until - Date.now()), signal).catch(() => {})]);
      this.#wakers.delete(wake);
    }
  }
}

/** Serves the long-polling routes; see the module doc. */
export class LongPollServer {
  readonly routes: Hono<Env>;
  #options: Required<Omit<LongPollOptions, "tokens" | "onCarrier">> & LongPollOptions;
  #bearers = new Map<string, { expires: number; address: string }>();
  #connections = new Map<string, VirtualConnection>();
  #limits: ConnectionLimits;
  #sweeper: ReturnType<typeof setInterval>;

  constructor(options: LongPollOptions) {
    this.#options = { ...DEFAULTS, ...options };
    this.#limits = new ConnectionLimits({
      total: this.#options.maxTotal,
      perAddress: this.#options.maxPerAddress,
    });
    this.#sweeper = setInterval(() => this.#sweep(), TICK_MS);
    this.#sweeper.unref?.();
    this.routes = new Hono<Env>()
      .post("/auth", (c) => this.#auth(c))
      .post("/register", (c) => this.#register(c))
      .post("/", (c) => this.#poll(c))
      .delete("/", (c) => this.#closeByRequest(c));
  }

  /** Virtual connections open now, for the status page. */
  get connections(): number {
    return this.#connections.size;
  }

  /** Closes every virtual connection and stops the sweeper. */
  close(): void {
    clearInterval(this.#sweeper);
    for (const connection of this.#connections.values()) this.#drop(connection);
  }

  async #auth(c: Context<Env>): Promise<Response> {
    const body = await readCapped(c.req.raw, 4096).catch(() => null);
    let token: string | undefined;
    try {
      token = body?.length ? JSON.parse(new TextDecoder().decode(body)).token : undefined;
    } catch {
      return refusal(400, 'The body must be JSON: {"token": "..."}.');
    }
    if (token !== undefined && typeof token !== "string") return refusal(400, "The token must be a string.");
    try {
      const record = verifyToken(token, this.#options.tokens);
      if (record?.maxTunnels === 0) return refusal(403, "This token may not open tunnels.");
    } catch (error) {
      if (error instanceof ProtocolError && error.code === "unauthorized") return refusal(401, error.message);
      throw error;
    }
    this.#pruneBearers();
    const address = c.env.incoming.socket.remoteAddress ?? "";
    const held = [...this.#bearers.values()].filter((bearer) => bearer.address === address).length;
    if (held >= MAX_AUTH_BEARERS_PER_ADDRESS) {
      return refusal(429, `Too many sign-ins from ${address}; try again.`);
    }
    if (this.#bearers.size >= MAX_AUTH_BEARERS) return refusal(503, "Too many sign-ins at once; try again.");
    const bearer = randomToken();
    this.#bearers.set(bearer, { expires: Date.now() + this.#options.authTtlMs, address });
    return c.json({ token: bearer, expiresInMs: this.#options.authTtlMs });
  }

  #register(c: Context<Env>): Response {
    const expires = this.#bearers.get(bearerOf(c) ?? "")?.expires;
    if (expires === undefined || expires < Date.now()) {
      return refusal(401, "The auth bearer is not valid or expired.");
    }
    const socket = c.env.incoming.socket;
    const address = socket.remoteAddress ?? "";
    const release = this.#limits.admit(address);
    if (!release) {
      return this.#connections.size >= this.#options.maxTotal
        ? refusal(503, "The relay holds as many long-polling connections as it can.")
        : refusal(429, `Too many long-polling connections from ${address}.`);
    }
    const token = randomToken();
    const connection = new VirtualConnection(token, release);
    this.#connections.set(token, connection);
    connection.carrier.once("close", () => this.#drop(connection));
    this.#options.onCarrier(connection.carrier, { hostname: address, port: socket.remotePort ?? 0 });
    log.info("long-polling connection from {address}", { address });
    return c.json({ id: token.slice(0, 8), token, pollWaitMs: this.#options.pollWaitMs });
  }

  async #poll(c: Context<Env>): Promise<Response> {
    const connection = this.#connections.get(bearerOf(c) ?? "");
    if (!connection) return refusal(401, "The connection token is not valid or expired.");
    if (connection.polls >= MAX_POLLS_PER_CONNECTION) {
      return refusal(429, `A connection may have ${MAX_POLLS_PER_CONNECTION} polls open at once.`);
    }
    connection.polls++;
    try {
      connection.lastSeen = Date.now();
      return await this.#exchange(connection, c);
    } catch (error) {
      if (error instanceof LongPollFrameError) return refusal(400, error.message);
      if (error instanceof BodyTooLarge) return refusal(413, error.message);
      throw error;
    } finally {
      connection.polls--;
      connection.lastSeen = Date.now();
    }
  }

  /** One poll: packets up, acknowledgements both ways, then packets down once there are any. */
  async #exchange(connection: VirtualConnection, c: Context<Env>): Promise<Response> {
    const { carrier } = connection;
    const ack = parseAck(c.req.header("ack"));
    const pollNumber = parsePollNumber(c.req.header("poll"));
    const packets = decodeBatch(await readCapped(c.req.raw, BATCH_MAX_BYTES));
    carrier.outbox.ack(ack);
    // An answer the client lost may have carried packets: hand out again all it has not acknowledged.
    if (c.req.header("resend") === "1" || (pollNumber !== undefined && connection.seenBefore(pollNumber))) {
      carrier.outbox.giveBackAll();
      connection.wake();
    }
    // A reader that is behind holds an upload's answer back, and with it the client's next packets;
    // the client's empty polls still pass, carrying the acknowledgements the reader may be waiting on.
    if (!carrier.deliver(packets) && packets.length > 0) await carrier.whenWanted();
    const gone = new AbortController();
    c.env.outgoing.once("close", () => gone.abort());
    if (packets.length === 0) await connection.waitForPackets(this.#options.pollWaitMs, gone.signal);
    // A poll cut while it waited can carry nothing down: packets taken into it would sit out the resend delay.
    const down = gone.signal.aborted ? [] : carrier.outbox.take(BATCH_MAX_BYTES, Date.now());
    // A poll cut before its answer was written whole did not deliver it: hand the packets out again.
    c.env.outgoing.once("close", () => {
      if (!c.env.outgoing.writableFinished) {
        carrier.outbox.giveBack(down);
        connection.wake();
      }
    });
    return new Response(encodeBatch(down), {
      headers: {
        "content-type": "application/octet-stream",
        "cache-control": "no-store",
        ack: String(carrier.inbox.expected),
        more: String(carrier.outbox.due(Date.now())),
      },
    });
  }

  #closeByRequest(c: Context<Env>): Response {
    const connection = this.#connections.get(bearerOf(c) ?? "");
    if (!connection) return refusal(401, "The connection token is not valid or expired.");
    this.#drop(connection);
    return new Response(null, { status: 204 });
  }

  #drop(connection: VirtualConnection) {
    if (!this.#connections.delete(connection.id)) return;
    connection.release();
    connection.carrier.destroy();
    connection.wake();
  }

  /** Closes connections no request touched for the idle timeout, and forgets expired bearers. */
  #sweep() {
    const now = Date.now();
    for (const connection of this.#connections.values()) {
      if (connection.polls === 0 && now - connection.lastSeen > this.#options.idleTimeoutMs) {
        log.info("long-polling connection {id} idle; closed", { id: connection.id.slice(0, 8) });
        this.#drop(connection);
      }
    }
    this.#pruneBearers();
  }

  #pruneBearers() {
    const now = Date.now();
    for (const [bearer, { expires }] of this.#bearers) if (expires < now) this.#bearers.delete(bearer);
  }
}

class BodyTooLarge extends Error {}

/** The whole body of `request`, refusing one over `max` bytes. */
async function readCapped(request: Request, max: number): Promise<Uint8Array> {
  if (!request.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of request.body) {
    size += chunk.length;
    if (size > max) throw new BodyTooLarge(`The body is over ${max} bytes.`);
    chunks.push(chunk);
  }
  const body = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    body.set(chunk, at);
    at += chunk.length;
  }
  return body;
}

function bearerOf(c: Context<Env>): string | undefined {
  return c.req.header("authorization")?.match(/^Bearer ([\w-]{16,128})$/)?.[1];
}

function randomToken(): string {
  return crypto.getRandomValues(new Uint8Array(24)).toBase64({ alphabet: "base64url" });
}

function refusal(status: number, message: string): Response {
  return new Response(`${status} ${message}\n`, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}
