/**
 * A tunnel connection whose streams survive the physical connection under
 * them: a layer just above the transport seam (`types.ts`), so it works over
 * QUIC and any other transport. Each logical stream (`resumable_stream.ts`)
 * rides one physical stream of whichever connection is current; when that
 * connection drops, the streams wait, keeping what the other side has not
 * acknowledged, and {@link ResumableConnection.attach} of a new connection
 * (the same client, authenticated again) carries each one on from where it
 * stopped. Not back within `graceMs`: the connection closes, and its streams
 * end as they would have without this layer.
 *
 * A physical stream starts with `open` (a new logical stream: id, 0) or
 * `resume` (id, bytes received so far) from the side that opened the logical
 * stream; the other side answers `open` (id, what it received) or `reset`.
 *
 * @example
 * ```ts
 * import { memoryPair } from "./memory.ts";
 * const [agentSide, relaySide] = memoryPair();
 * const agent = new ResumableConnection(agentSide, "agent", 60_000);
 * const relay = new ResumableConnection(relaySide, "relay", 60_000);
 * const stream = (await relay.openStream())!;
 * // …the link drops; a new pair of physical ends comes up…
 * const [agentAgain, relayAgain] = memoryPair();
 * agent.attach(agentAgain);
 * relay.attach(relayAgain); // `stream` carries on
 * ```
 * @module
 */
import type { CloseInfo, TunnelConnection, TunnelStream } from "./types.ts";
import {
  encodeRecord,
  LogicalStream,
  offsetPayload,
  readOffsets,
  Rec,
  RecordReader,
} from "./resumable_stream.ts";

export class ResumableConnection implements TunnelConnection {
  readonly incomingStreams: ReadableStream<TunnelStream>;
  readonly closed: Promise<CloseInfo>;
  #incoming!: ReadableStreamDefaultController<TunnelStream>;
  #settle!: (info: CloseInfo) => void;
  #physical: TunnelConnection | null = null;
  /** Logical streams by id, and whether this side opened them (then it resumes them). */
  #streams = new Map<number, { stream: LogicalStream; mine: boolean }>();
  #nextId: number;
  #graceTimer?: ReturnType<typeof setTimeout>;
  /** Waiters for a physical connection (streams opened during an outage). */
  #backWaiters: (() => void)[] = [];
  #open = true;

  constructor(
    first: TunnelConnection,
    side: "agent" | "relay",
    private readonly graceMs: number,
    /** How long a stream opened while the link is down waits for it before `openStream` gives up. */
    private readonly openWaitMs = 10_000,
  ) {
    // Ids of the two sides never meet: the agent's are odd, the relay's even.
    this.#nextId = side === "agent" ? 1 : 2;
    this.incomingStreams = new ReadableStream({ start: (controller) => void (this.#incoming = controller) });
    this.closed = new Promise((resolve) => this.#settle = resolve);
    this.attach(first);
  }

  get transport(): string {
    return this.#physical?.transport ?? "none";
  }

  get peer(): { hostname: string; port: number } {
    return this.#physical?.peer ?? { hostname: "", port: 0 };
  }

  get alpn(): string | undefined {
    return this.#physical?.alpn;
  }

  /** Whether a physical connection carries it now. */
  get attached(): boolean {
    return this.#physical !== null;
  }

  /** Carries every live stream on over `physical` from where it stopped. */
  attach(physical: TunnelConnection): void {
    if (!this.#open) return physical.close({ code: 0, reason: "resumable connection closed" });
    const old = this.#physical;
    this.#physical = physical;
    old?.close({ code: 3, reason: "replaced by a resumed connection" });
    clearTimeout(this.#graceTimer);
    for (const wake of this.#backWaiters.splice(0)) wake();
    physical.closed.then(() => this.#lost(physical));
    this.#acceptLoop(physical);
    for (const [id, { stream, mine }] of this.#streams) if (mine) this.#resume(physical, id, stream);
  }

  /** Whether a physical connection carries it, waiting up to `openWaitMs` for one while the link is down. */
  async linked(): Promise<boolean> {
    if (this.#open && !this.#physical) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#backWaiters.push(resolve);
        timer = setTimeout(resolve, this.openWaitMs);
      });
      clearTimeout(timer);
    }
    return this.#physical !== null;
  }

  async openStream(): Promise<TunnelStream | null> {
    // Only waited for when down: a link that just dropped still takes the stream, which resumes on the next.
    if (!this.#physical) await this.linked();
    const physical = this.#physical;
    if (!physical) return null;
    const id = this.#nextId;
    this.#nextId += 2;
    const stream = this.#register(id, true);
    const carrier = await physical.openStream();
    // Gone meanwhile: the stream waits for the next attach, which resumes it from 0.
    if (carrier) this.#carry(carrier, stream, Rec.open, offsetPayload(id, 0));
    return stream;
  }

  /** Drops the physical connection only (it fell silent): the streams wait for the next attach. */
  dropLink(info: CloseInfo): void {
    this.#physical?.close(info);
  }

  close(info: CloseInfo): void {
    if (!this.#open) return;
    this.#open = false;
    clearTimeout(this.#graceTimer);
    this.#physical?.close(info);
    this.#physical = null;
    for (const { stream } of [...this.#streams.values()]) {
      stream.reset(false, `connection closed: ${info.reason}`);
    }
    for (const wake of this.#backWaiters.splice(0)) wake();
    this.#incoming.close();
    this.#settle(info);
  }

  /** The physical connection dropped: streams wait for the next attach, up to the grace period. */
  #lost(physical: TunnelConnection) {
    if (this.#physical !== physical) return;
    this.#physical = null;
    this.#graceTimer = setTimeout(
      () => this.close({ code: 2, reason: `link not back within ${this.graceMs} ms` }),
      this.graceMs,
    );
  }

  #register(id: number, mine: boolean): LogicalStream {
    const stream = new LogicalStream(id, () => this.#streams.delete(id));
    this.#streams.set(id, { stream, mine });
    return stream;
  }

  /**
   * Says `open` or `resume` on a new physical stream and hands it to `stream`: a new one at once (the
   * other side has received nothing: no round trip before the first bytes; its answering `open` is
   * skipped), a resumed one once answered with what the other side received.
   */
  async #carry(carrier: TunnelStream, stream: LogicalStream, type: number, payload: Uint8Array) {
    const writer = carrier.writable.getWriter();
    const reader = new RecordReader(carrier.readable);
    try {
      await writer.write(encodeRecord(type, payload));
      if (type === Rec.open) return stream.attach(writer, reader, offsetPayload(stream.id, 0));
      const answer = await reader.read();
      if (!answer || answer.type === Rec.reset) return stream.reset(false, "the other side lost the stream");
      stream.attach(writer, reader, answer.payload);
    } catch {
      // The new physical connection broke too: the next attach tries again.
    }
  }

  #resume(physical: TunnelConnection, id: number, stream: LogicalStream) {
    stream.leaveOld();
    physical.openStream().then((carrier) => {
      if (carrier) {
        this.#carry(
          carrier,
          stream,
          stream.carried ? Rec.resume : Rec.open,
          offsetPayload(id, stream.received),
        );
      }
    });
  }

  async #acceptLoop(physical: TunnelConnection) {
    for await (const carrier of physical.incomingStreams) this.#accept(carrier);
  }

  /** A physical stream the other side opened: a new logical stream, or an old one resumed. */
  async #accept(carrier: TunnelStream) {
    const writer = carrier.writable.getWriter();
    const reader = new RecordReader(carrier.readable);
    try {
      const first = await reader.read();
      if (!first || (first.type !== Rec.open && first.type !== Rec.resume)) throw new Error("no open");
      const { id } = readOffsets(first.payload);
      let stream = this.#streams.get(id)?.stream;
      if (first.type === Rec.open && !stream) {
        stream = this.#register(id, false);
        this.#incoming.enqueue(stream);
      }
      if (!stream) return void await writer.write(encodeRecord(Rec.reset)).then(() => writer.close());
      stream.leaveOld();
      await writer.write(encodeRecord(Rec.open, offsetPayload(id, stream.received)));
      stream.attach(writer, reader, first.payload);
    } catch {
      // Broken before it carried anything: the opener tries again on the next attach.
      reader.cancel();
    }
  }
}
