/**
 * Server-sent events read back out of a response body as it streams, for the
 * inspector (on `eventsource-parser`).
 *
 * @example
 * ```ts
 * const parser = new SseParser();
 * parser.push(new TextEncoder().encode("event: tick\ndata: 1\n\n")); // [{ event: "tick", data: "1" }]
 * ```
 * @module
 */
import { createParser } from "eventsource-parser";

export interface ParsedEvent {
  /** `message` when the stream names none. */
  event: string;
  id?: string;
  data: string;
}

export class SseParser {
  #decoder = new TextDecoder();
  #ready: ParsedEvent[] = [];
  #parser = createParser({
    onEvent: (event) => this.#ready.push({ event: event.event ?? "message", id: event.id, data: event.data }),
  });

  /** Feeds body bytes; returns the events they completed. */
  push(bytes: Uint8Array): ParsedEvent[] {
    this.#parser.feed(this.#decoder.decode(bytes, { stream: true }));
    return this.#ready.splice(0);
  }
}
