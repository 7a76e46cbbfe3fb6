/**
 * One connection's life at the agent: `hello` on a new control stream, the
 * relay's `welcome` (or `error`, fatal when retrying cannot help), then
 * heartbeats both ways until the link is lost or the agent leaves with
 * `goodbye`. The relay's request streams are handed to whoever serves them.
 *
 * @example
 * ```ts
 * import type { FrameOf } from "../wire/protocol.ts";
 * import type { TunnelStream } from "../transport/types.ts";
 * import type { RelayLink } from "./link.ts";
 * declare const link: RelayLink, hello: FrameOf<"hello">, answer: (stream: TunnelStream) => void;
 * const { session, welcome } = await RelaySession.open(link, hello); // welcome.tunnels: the public URLs
 * session.serve(link.conn.incomingStreams, answer);
 * const reason = await session.lost; // "the relay missed its heartbeats", …
 * ```
 * @module
 */
import { encodeFrame, FrameReader } from "../wire/codec.ts";
import {
  CloseCode,
  type ErrorCode,
  type Frame,
  type FrameOf,
  type TunnelRequest,
  type TunnelRoute,
} from "../wire/protocol.ts";
import { Keepalive } from "../wire/keepalive.ts";
import type { TunnelStream } from "../transport/types.ts";
import { withTimeout } from "../shared/async.ts";
import { AgentError } from "./errors.ts";
import type { RelayLink } from "./link.ts";

/** Refusals that retrying will not fix. */
const FATAL_CODES = new Set<ErrorCode>([
  "bad_frame",
  "port_unavailable",
  "not_permitted",
  "bad_version",
  "unauthorized",
  "name_invalid",
  "name_taken",
  "too_many_tunnels",
]);

/** Longest the relay may take to answer `hello`. */
const WELCOME_TIMEOUT_MS = 10_000;
/** How long a leaving agent waits for the relay to free its names and hang up. */
const GOODBYE_WAIT_MS = 1_000;

/** A change to the tunnels of a live connection, as `tunnel-update` carries it (without its id). */
export type TunnelChange =
  | { op: "add"; tunnel: TunnelRequest }
  | { op: "remove" | "suspend" | "resume"; route: TunnelRoute };

export class RelaySession {
  /** Resolves with why the link was lost: the relay closed it, fell silent, or the control stream ended. */
  readonly lost: Promise<string>;
  #keepalive: Keepalive;
  #loseWith!: (reason: string) => void;
  #lastUpdate = 0;
  /** Updates sent and not yet acknowledged, by id. */
  #pending = new Map<number, (ack: FrameOf<"tunnel-ack">) => void>();

  private constructor(
    readonly link: RelayLink,
    private readonly reader: FrameReader,
    private readonly writer: WritableStreamDefaultWriter<Uint8Array>,
    heartbeatMs: number,
  ) {
    this.lost = new Promise((resolve) => this.#loseWith = resolve);
    this.#keepalive = new Keepalive((frame) => this.#send(frame), heartbeatMs, () => {
      this.#loseWith("the relay missed its heartbeats");
      // Said in the close code too: a transport whose bytes are held back is not worth another try (`link.ts`).
      link.conn.close({ code: CloseCode.heartbeatMissed, reason: "heartbeats missed" });
    });
    link.conn.closed.then((info) =>
      this.#loseWith(`the relay closed the connection: ${info.reason || "no reason"}`)
    );
    this.#readControl();
  }

  /** Says hello on `link`; resolves once welcomed, rejects with why not (an {@link AgentError} when fatal). */
  static async open(
    link: RelayLink,
    hello: FrameOf<"hello">,
  ): Promise<{ session: RelaySession; welcome: FrameOf<"welcome"> }> {
    const control = await link.conn.openStream();
    if (!control) throw new Error("the relay closed the connection before hello");
    const writer = control.writable.getWriter();
    const reader = new FrameReader(control.readable);
    await writer.write(encodeFrame(hello));
    const answer = await withTimeout(reader.expect("welcome", "error"), WELCOME_TIMEOUT_MS, "welcome")
      .catch(async (error) => {
        // A relay that hangs up before answering says why in the close reason.
        const closed = await withTimeout(link.conn.closed, 500, "close").catch(() => null);
        throw closed?.reason ? new Error(`relay closed the connection: ${closed.reason}`) : error;
      });
    if (answer.type === "error") {
      const message = `relay refused: ${answer.message} (${answer.code})`;
      throw FATAL_CODES.has(answer.code) ? new AgentError(answer.code, message) : new Error(message);
    }
    return { session: new RelaySession(link, reader, writer, answer.heartbeatMs), welcome: answer };
  }

  /**
   * Hands every stream the relay opens to `answer`, until they end: `streams` is the connection's own, or
   * those of a resumable connection over it.
   */
  async serve(streams: ReadableStream<TunnelStream>, answer: (stream: TunnelStream) => void): Promise<void> {
    for await (const stream of streams) answer(stream);
  }

  /**
   * Asks the relay to change the tunnels on this connection; resolves with its ack, or rejects when the
   * link is lost first.
   */
  update(change: TunnelChange): Promise<FrameOf<"tunnel-ack">> {
    const id = ++this.#lastUpdate;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, resolve);
      this.lost.then((reason) => {
        if (this.#pending.delete(id)) reject(new Error(reason));
      });
      this.#send({ type: "tunnel-update", id, ...change } as FrameOf<"tunnel-update">).catch((error) => {
        if (this.#pending.delete(id)) reject(error);
      });
    });
  }

  /** Tells the relay whether a tunnel's origin answers; it then answers that tunnel's visitors at once. */
  tellHealth(frame: Omit<FrameOf<"origin-health">, "type">): Promise<void> {
    return this.#send({ type: "origin-health", ...frame });
  }

  /** Round-trip time to the relay, from the latest heartbeat, ms. */
  get rttMs(): number | undefined {
    return this.#keepalive.rttMs;
  }

  /** Leaves on purpose: the relay frees the names at once, then hangs up. */
  async leave(reason: string): Promise<void> {
    this.#keepalive.stop();
    await this.#send({ type: "goodbye", reason }).catch(() => {
      // The link is gone already; the relay holds the names through its grace period instead.
    });
    await this.writer.close().catch(() => {
      // As above.
    });
    // The relay hangs up once it has freed our names; closing first could drop the goodbye.
    await withTimeout(this.link.conn.closed, GOODBYE_WAIT_MS, "goodbye").catch(() => {
      // A relay that does not hang up in time is closed on below.
    });
    this.close(reason);
  }

  /** Closes the connection (the relay then holds the names through its grace period). */
  close(reason: string): void {
    this.#keepalive.stop();
    this.link.conn.close({ code: CloseCode.normal, reason });
  }

  #send(frame: Frame): Promise<void> {
    return this.writer.write(encodeFrame(frame));
  }

  async #readControl() {
    try {
      for (let frame; (frame = await this.reader.read());) {
        if (this.#keepalive.received(frame)) continue;
        if (frame.type === "tunnel-ack") {
          this.#pending.get(frame.id)?.(frame);
          this.#pending.delete(frame.id);
        }
      }
      this.#loseWith("the relay ended the control stream");
    } catch (error) {
      this.#loseWith(`the control stream failed: ${error instanceof Error ? error.message : error}`);
    } finally {
      this.#keepalive.stop();
    }
  }
}
