/**
 * One connected client, as the relay holds it: its connection, the tunnels it
 * holds and their access rules, how requests are forwarded to it, and its
 * control stream (heartbeats both ways, changes to its tunnels, `goodbye`).
 *
 * @example
 * ```ts
 * import type { FrameReader } from "../wire/codec.ts";
 * import type { TunnelConnection } from "../transport/types.ts";
 * declare const conn: TunnelConnection, reader: FrameReader, control: WritableStreamDefaultWriter<Uint8Array>;
 * const forwarding = { responseTimeoutMs: 120_000, body: { windowMs: 30_000, minBytesPerSecond: 256 } };
 * const session = new ClientSession(conn, "owner key", control, forwarding);
 * declare const changes: TunnelChanges;
 * await session.serveControl(reader, 5_000, changes); // "goodbye", "ended", "silent" or "protocol error"
 * ```
 * @module
 */
import { encodeFrame, FrameError, type FrameReader } from "../wire/codec.ts";
import { CloseCode, type Frame, type FrameOf, ProtocolError } from "../wire/protocol.ts";
import { Keepalive } from "../wire/keepalive.ts";
import type { TunnelConnection } from "../transport/types.ts";
import { ResumableConnection } from "../transport/resumable.ts";
import { getLogger } from "../shared/log.ts";
import { type BodyRules, forwardRequest, tunnelGone, tunnelReconnecting } from "./forward_http.ts";
import { type LaneOwner, Lanes } from "./lanes.ts";
import { forwardWebSocket } from "./forward_websocket.ts";
import { forwardTcp } from "./tcp_ports.ts";
import type { AccessGuard } from "./public/access.ts";
import type { TunnelCondition, TunnelSession } from "./public/app.ts";
import type { AcceptWebSocket } from "./public/server.ts";
import type { TokenRecord } from "./state/token_store.ts";

const log = getLogger(["reverprox", "relay"]);

/** How requests to a client are forwarded: the relay's timeouts and body rules. */
export interface Forwarding {
  responseTimeoutMs: number;
  body: BodyRules;
}

/** What the relay does with a client's changes to its tunnels. */
export interface TunnelChanges {
  update(session: ClientSession, frame: FrameOf<"tunnel-update">): Promise<FrameOf<"tunnel-ack">>;
  health(session: ClientSession, frame: FrameOf<"origin-health">): void;
}

/** How a client's control stream ended. */
export type ControlEnd = "goodbye" | "ended" | "silent" | "protocol error";

/** Longest a replaced connection keeps carrying what it had in flight (a long download, a WebSocket). */
const RETIRE_MAX_MS = 5 * 60_000;

export class ClientSession implements TunnelSession {
  readonly id = crypto.randomUUID();
  /** What it holds: http names, and `tcp:<port>` for TCP tunnels. */
  readonly names: string[] = [];
  readonly guards = new Map<string, AccessGuard>();
  /** Tunnels paused by their owner, or whose origin is down, by the same keys as `names`. */
  readonly conditions = new Map<string, TunnelCondition>();
  /** Long-lived streams to the client, one per visitor connection. */
  #lanes: Lanes;
  /** The store token this client used, for per-token and per-account limits. */
  token?: TokenRecord;
  /** Requests, WebSockets and TCP connections it carries now. */
  #inFlight = 0;
  /** Set once a newer connection of the same client took over: it closes when nothing is in flight. */
  #retiring?: string;
  /** With streams that survive the link: what the client says in its next hello to resume them. */
  resumeToken?: string;
  /** The agent process's `instance` from its hello. */
  instance?: string;

  constructor(
    /** The client's connection; a {@link ResumableConnection} over it when the client asked for one. */
    readonly conn: TunnelConnection,
    /** Who owns its names: a hash of its token and client id. */
    readonly ownerKey: string,
    private control: WritableStreamDefaultWriter<Uint8Array>,
    private readonly forwarding: Forwarding,
  ) {
    this.#lanes = new Lanes(conn);
  }

  /** The client came back on a new connection: its streams go on over it, and its control stream is this. */
  resume(physical: TunnelConnection, control: WritableStreamDefaultWriter<Uint8Array>): void {
    if (!(this.conn instanceof ResumableConnection)) throw new Error("not a resumable session");
    this.control = control;
    this.conn.attach(physical);
  }

  async forward(
    head: FrameOf<"request">,
    body: ReadableStream<Uint8Array> | null,
    onSettled: () => void,
    visitorGone: AbortSignal,
    visitor?: LaneOwner,
  ): Promise<Response> {
    const settled = this.#begin(onSettled);
    // A lane parked by a lost link would hold the request until the link is back, however long that takes:
    // it waits as long as a new stream would, then gets its 503.
    if (this.conn instanceof ResumableConnection && !await this.conn.linked()) {
      return (settled(), tunnelReconnecting(head.tunnel));
    }
    const lane = await this.#lanes.take(visitor);
    if (!lane) return (settled(), tunnelGone(head.tunnel));
    return forwardRequest(lane, head, body, { ...this.forwarding, onSettled: settled, visitorGone });
  }

  forwardWebSocket(
    head: FrameOf<"request">,
    accept: AcceptWebSocket,
    onSettled: () => void,
  ): Promise<Response> {
    return forwardWebSocket(this.conn, head, accept, {
      responseTimeoutMs: this.forwarding.responseTimeoutMs,
      onSettled: this.#begin(onSettled),
    });
  }

  forwardTcp(port: string, tcp: Deno.TcpConn): Promise<void> {
    return forwardTcp(this.conn, port, tcp).finally(this.#begin());
  }

  /**
   * A newer connection of the same agent process took over its names (it moved to a better transport):
   * new visitors go there; what this one carries finishes here, then it closes, or after
   * {@link RETIRE_MAX_MS} at most.
   */
  retire(reason: string): void {
    if (this.#retiring) return;
    this.#retiring = reason;
    if (this.#inFlight === 0) return this.close(CloseCode.replaced, reason);
    const timer = setTimeout(() => this.close(CloseCode.replaced, reason), RETIRE_MAX_MS);
    this.conn.closed.then(() => clearTimeout(timer));
  }

  /** Counts one exchange in flight; the function returned (calling `then` first) settles it, once. */
  #begin(then?: () => void): () => void {
    this.#inFlight++;
    let settled = false;
    return () => {
      if (settled) return;
      settled = true;
      then?.();
      if (--this.#inFlight === 0 && this.#retiring) this.close(CloseCode.replaced, this.#retiring);
    };
  }

  guard(name: string): AccessGuard | undefined {
    return this.guards.get(name);
  }

  condition(name: string): TunnelCondition | undefined {
    return this.conditions.get(name);
  }

  send(frame: Frame): Promise<void> {
    return this.control.write(encodeFrame(frame));
  }

  close(code: number, reason: string): void {
    this.conn.close({ code, reason });
  }

  /**
   * The link whose control stream is `control` is gone: with resumable streams, only that link (they wait
   * for the client to come back; a link it came back on since is not this one's to drop).
   */
  #dropLink(control: WritableStreamDefaultWriter<Uint8Array>, code: number, reason: string) {
    if (!(this.conn instanceof ResumableConnection)) this.close(code, reason);
    else if (control === this.control) this.conn.dropLink({ code, reason });
  }

  /** Says so when the link under resumable streams went down (its own end, or a drop above). */
  #logLinkDown(control: WritableStreamDefaultWriter<Uint8Array>, why: string) {
    if (!(this.conn instanceof ResumableConnection) || control !== this.control) return;
    log.info("client {id}: link down ({why}); its streams wait for it to come back", { id: this.id, why });
  }

  /**
   * Serves the control stream until it ends: heartbeats here, changes to the tunnels through `changes`.
   * The connection is closed when the end was not a goodbye.
   */
  async serveControl(reader: FrameReader, heartbeatMs: number, changes: TunnelChanges): Promise<ControlEnd> {
    let silent = false;
    const control = this.control;
    const keepalive = new Keepalive((frame) => this.send(frame), heartbeatMs, () => {
      silent = true;
      log.warn("client {id} missed its heartbeats; dropping it", { id: this.id });
      this.#dropLink(control, CloseCode.heartbeatMissed, "heartbeat missed");
    });
    try {
      for (let frame; (frame = await reader.read());) {
        if (keepalive.received(frame)) continue;
        if (frame.type === "tunnel-update") {
          // Not awaited: a slow one (a write to state.db) must not hold up heartbeats; acks carry their id.
          changes.update(this, frame).then((ack) => this.send(ack)).catch(() => {
            // The control stream is gone; its reader ends this loop.
          });
        } else if (frame.type === "origin-health") changes.health(this, frame);
        else if (frame.type === "goodbye") {
          log.info("client {id} left: {reason}", { id: this.id, reason: frame.reason });
          return "goodbye";
        } else throw new ProtocolError("bad_frame", `unexpected ${frame.type} on the control stream`);
      }
      this.#dropLink(control, CloseCode.normal, "control stream ended");
      this.#logLinkDown(control, silent ? "heartbeats missed" : "control stream ended");
      return silent ? "silent" : "ended";
    } catch (error) {
      if (!(error instanceof FrameError || error instanceof ProtocolError)) {
        // The stream broke with its connection, whose close already says why.
        this.#logLinkDown(control, silent ? "heartbeats missed" : "connection lost");
        return silent ? "silent" : "ended";
      }
      this.close(CloseCode.protocolError, error.message);
      return "protocol error";
    } finally {
      keepalive.stop();
    }
  }
}
