/**
 * One heartbeat for both ends of a control stream: a `ping` every interval,
 * a `pong` for each of the peer's pings, and a verdict once the peer has been
 * silent for {@link HEARTBEAT_MISSES} intervals (any frame counts as a sign of
 * life). The transport's own keep-alive holds NAT bindings open; this one
 * proves the peer's program still answers.
 *
 * @example
 * ```ts
 * import { encodeFrame, type FrameReader } from "./codec.ts";
 * import type { Frame } from "./protocol.ts";
 * declare const control: WritableStreamDefaultWriter<Uint8Array>, reader: FrameReader;
 * const send = (frame: Frame) => control.write(encodeFrame(frame));
 * const keepalive = new Keepalive(send, 5_000, () => console.log("the peer fell silent"));
 * for (let frame; (frame = await reader.read());) {
 *   if (!keepalive.received(frame)) console.log(`${frame.type} is for the caller`);
 * }
 * keepalive.stop();
 * ```
 * @module
 */
import type { Frame } from "./protocol.ts";

/** Intervals of silence after which a peer counts as gone. */
export const HEARTBEAT_MISSES = 3;

export class Keepalive {
  #lastHeard = Date.now();
  #seq = 0;
  #timer: ReturnType<typeof setInterval>;
  /** When the latest ping was sent, to time its pong. */
  #pingSent = new Map<number, number>();
  /** Round-trip time of the latest answered ping, ms; undefined before the first. */
  rttMs?: number;

  /** Starts pinging through `send` every `intervalMs`; `onSilent` runs once if the peer falls silent. */
  constructor(
    private readonly send: (frame: Frame) => Promise<void>,
    intervalMs: number,
    onSilent: () => void,
  ) {
    this.#timer = setInterval(() => {
      if (Date.now() - this.#lastHeard > intervalMs * HEARTBEAT_MISSES) {
        this.stop();
        return onSilent();
      }
      // A failed write means the stream is gone; the reader's end tells its owner.
      this.#pingSent.clear();
      this.#pingSent.set(this.#seq, performance.now());
      this.send({ type: "ping", seq: this.#seq++ }).catch(() => {});
    }, intervalMs);
  }

  /** Notes a frame from the peer; answers a ping. True when the frame was a ping or pong, handled here. */
  received(frame: Frame): boolean {
    this.#lastHeard = Date.now();
    if (frame.type === "ping") {
      this.send({ type: "pong", seq: frame.seq }).catch(() => {
        // As above: the stream is gone, and the reader will see it end.
      });
      return true;
    }
    if (frame.type !== "pong") return false;
    const sent = this.#pingSent.get(frame.seq);
    if (sent !== undefined) this.rttMs = performance.now() - sent;
    return true;
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
