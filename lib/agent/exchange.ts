/**
 * One visitor request as the agent answers it, told as events (`events.ts`):
 * started, the origin's response head, body bytes both ways (only counted
 * unless someone listens for them), and done, once, with status, duration,
 * sizes and the failure if there was one.
 *
 * @example
 * ```ts
 * import type { FrameOf } from "../wire/protocol.ts";
 * import { AgentEvents } from "./events.ts";
 * declare const head: FrameOf<"request">;
 * const exchange = new Exchange(new AgentEvents(), head); // "request-started"
 * exchange.response(200, [["content-type", "text/plain"]]); // "response-head"
 * exchange.responseBytes(new TextEncoder().encode("hello"));
 * exchange.done(); // "request-done": status 200, 5 response bytes
 * ```
 * @module
 */
import type { ErrorCode, FrameOf } from "../wire/protocol.ts";
import type { HeaderPairs } from "../shared/headers.ts";
import type { AgentEvents } from "./events.ts";

let lastId = 0;

export class Exchange {
  readonly id = String(++lastId);
  readonly tunnel: string;
  #started = performance.now();
  #requestBytes = 0;
  #responseBytes = 0;
  #status = 0;
  #done = false;
  #wantsBytes: boolean;

  constructor(private readonly events: AgentEvents, head: FrameOf<"request">, replayOf?: string) {
    this.tunnel = head.tunnel;
    this.#wantsBytes = events.wants("body-bytes");
    events.emit("request-started", {
      id: this.id,
      tunnel: head.tunnel,
      method: head.method,
      target: head.target,
      headers: head.headers,
      remoteAddr: head.remoteAddr,
      websocket: head.upgrade === "websocket",
      ...(head.relayAt ? { relayAt: head.relayAt } : {}),
      ...(replayOf ? { replayOf } : {}),
    });
  }

  /** The origin's response head. */
  response(status: number, headers: HeaderPairs): void {
    this.#status = status;
    this.events.emit("response-head", { id: this.id, tunnel: this.tunnel, status, headers });
  }

  /** A piece of the visitor's upload, on its way to the origin. */
  requestBytes(bytes: Uint8Array): void {
    this.#requestBytes += bytes.length;
    if (this.#wantsBytes) this.events.emit("body-bytes", { id: this.id, direction: "request", bytes });
  }

  /** A piece of the origin's answer, on its way to the visitor. */
  responseBytes(bytes: Uint8Array): void {
    this.#responseBytes += bytes.length;
    if (this.#wantsBytes) this.events.emit("body-bytes", { id: this.id, direction: "response", bytes });
  }

  /** A WebSocket message crossing: `in` from the visitor, `out` from the origin. */
  wsMessage(direction: "in" | "out", data: Uint8Array, binary: boolean): void {
    if (this.events.wants("ws-message")) {
      this.events.emit("ws-message", { id: this.id, tunnel: this.tunnel, direction, binary, data });
    }
  }

  /**
   * The exchange is over: with the status the visitor got (the response head's, when there was one),
   * and why it failed, when it did. Only the first call counts.
   */
  done(status = this.#status, error?: { code: ErrorCode; message: string }): void {
    if (this.#done) return;
    this.#done = true;
    this.events.emit("request-done", {
      id: this.id,
      tunnel: this.tunnel,
      status,
      durationMs: performance.now() - this.#started,
      requestBytes: this.#requestBytes,
      responseBytes: this.#responseBytes,
      ...(error ? { error: { code: error.code, message: error.message } } : {}),
    });
  }
}
