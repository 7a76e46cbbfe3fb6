/**
 * What the inspector remembers: the last requests the agent answered (500 by
 * default), each with its heads, up to 1 MiB of each body (marked when cut),
 * its timings, its WebSocket messages and server-sent events, built from the
 * agent's events. Memory stays bounded: old entries are dropped (and
 * counted), bodies, messages and events are capped.
 *
 * @example
 * ```ts
 * import { AgentEvents } from "../events.ts";
 * const store = new InspectorStore(new AgentEvents(), { maxEntries: 500, maxBodyBytes: 1 << 20 });
 * store.list({ method: "POST", status: "2xx" });
 * ```
 * @module
 */
import type { HeaderPairs } from "../../shared/headers.ts";
import type { AgentEventMap, AgentEvents } from "../events.ts";
import { SseParser } from "./sse.ts";

/** WebSocket messages and server-sent events kept per entry, and bytes kept per message. */
const MAX_MESSAGES = 1000;
const MAX_MESSAGE_BYTES = 64 * 1024;

export interface InspectorLimits {
  /** Requests kept; older ones are dropped. */
  maxEntries: number;
  /** Bytes kept of each body; the rest is counted, not kept. */
  maxBodyBytes: number;
}

/** A body as captured: what was kept, and how much there was. */
export class CapturedBody {
  #chunks: Uint8Array[] = [];
  #kept = 0;
  /** Bytes seen in all. */
  size = 0;

  constructor(private readonly limit: number) {}

  get truncated(): boolean {
    return this.size > this.#kept;
  }

  add(bytes: Uint8Array): void {
    this.size += bytes.length;
    const room = this.limit - this.#kept;
    if (room <= 0) return;
    const kept = bytes.length > room ? bytes.slice(0, room) : bytes.slice();
    this.#chunks.push(kept);
    this.#kept += kept.length;
  }

  bytes(): Uint8Array<ArrayBuffer> {
    const out = new Uint8Array(this.#kept);
    let at = 0;
    for (const chunk of this.#chunks) (out.set(chunk, at), at += chunk.length);
    return out;
  }
}

export interface WsMessage {
  at: number;
  direction: "in" | "out";
  binary: boolean;
  size: number;
  /** What was kept of it (at most 64 KiB). */
  data: Uint8Array;
}

export interface SseEvent {
  at: number;
  event: string;
  id?: string;
  data: string;
}

/** One request as the inspector holds it. */
export interface Entry {
  id: string;
  tunnel: string;
  replayOf?: string;
  method: string;
  target: string;
  requestHeaders: HeaderPairs;
  remoteAddr: string;
  websocket: boolean;
  /** When the relay had the head, when the agent did, when the origin answered, when it ended (ms epoch). */
  relayAt?: number;
  startedAt: number;
  responseAt?: number;
  doneAt?: number;
  durationMs?: number;
  status?: number;
  responseHeaders?: HeaderPairs;
  error?: { code: string; message: string };
  requestBody: CapturedBody;
  responseBody: CapturedBody;
  messages: WsMessage[];
  /** Messages not kept once {@link MAX_MESSAGES} were. */
  droppedMessages: number;
  events: SseEvent[];
  sse?: SseParser;
}

/** What `GET /api/requests` filters on. */
export interface EntryFilter {
  /** Found in the method, target, status, tunnel or a header. */
  text?: string;
  method?: string;
  /** `2xx`, `404`, `400-499`. */
  status?: string;
  minMs?: number;
  maxMs?: number;
  tunnel?: string;
}

export class InspectorStore {
  #entries = new Map<string, Entry>();
  /** Entries dropped to keep within the limit. */
  dropped = 0;

  constructor(events: AgentEvents, readonly limits: InspectorLimits) {
    events.on("request-started", (event) => this.#started(event));
    events.on("response-head", (event) => this.#responseHead(event));
    events.on("body-bytes", (event) => this.#bodyBytes(event));
    events.on("ws-message", (event) => this.#wsMessage(event));
    events.on("request-done", (event) => this.#done(event));
  }

  get(id: string): Entry | undefined {
    return this.#entries.get(id);
  }

  /** Entries matching `filter`, newest first. */
  list(filter: EntryFilter = {}): Entry[] {
    const matches = [...this.#entries.values()].filter((entry) => matchesFilter(entry, filter));
    return matches.reverse();
  }

  clear(): void {
    this.#entries.clear();
  }

  #started(event: AgentEventMap["request-started"]) {
    this.#entries.set(event.id, {
      id: event.id,
      tunnel: event.tunnel,
      replayOf: event.replayOf,
      method: event.method,
      target: event.target,
      requestHeaders: event.headers,
      remoteAddr: event.remoteAddr,
      websocket: event.websocket,
      relayAt: event.relayAt,
      startedAt: Date.now(),
      requestBody: new CapturedBody(this.limits.maxBodyBytes),
      responseBody: new CapturedBody(this.limits.maxBodyBytes),
      messages: [],
      droppedMessages: 0,
      events: [],
    });
    while (this.#entries.size > this.limits.maxEntries) {
      this.#entries.delete(this.#entries.keys().next().value!);
      this.dropped++;
    }
  }

  #responseHead({ id, status, headers }: AgentEventMap["response-head"]) {
    const entry = this.#entries.get(id);
    if (!entry) return;
    Object.assign(entry, { status, responseHeaders: headers, responseAt: Date.now() });
    const type = headers.find(([name]) => name.toLowerCase() === "content-type")?.[1] ?? "";
    if (type.startsWith("text/event-stream")) entry.sse = new SseParser();
  }

  #bodyBytes({ id, direction, bytes }: AgentEventMap["body-bytes"]) {
    const entry = this.#entries.get(id);
    if (!entry) return;
    (direction === "request" ? entry.requestBody : entry.responseBody).add(bytes);
    if (direction !== "response" || !entry.sse) return;
    for (const event of entry.sse.push(bytes)) {
      if (entry.events.length < MAX_MESSAGES) entry.events.push({ at: Date.now(), ...event });
    }
  }

  #wsMessage({ id, direction, binary, data }: AgentEventMap["ws-message"]) {
    const entry = this.#entries.get(id);
    if (!entry) return;
    if (entry.messages.length >= MAX_MESSAGES) return void entry.droppedMessages++;
    const kept = data.slice(0, MAX_MESSAGE_BYTES);
    entry.messages.push({ at: Date.now(), direction, binary, size: data.length, data: kept });
  }

  #done({ id, status, durationMs, error }: AgentEventMap["request-done"]) {
    const entry = this.#entries.get(id);
    if (!entry) return;
    Object.assign(entry, { status, durationMs, doneAt: Date.now(), error });
  }
}

function matchesFilter(entry: Entry, filter: EntryFilter): boolean {
  if (filter.tunnel && entry.tunnel !== filter.tunnel) return false;
  if (filter.method && entry.method !== filter.method.toUpperCase()) return false;
  if (filter.status && !statusMatches(entry.status, filter.status)) return false;
  if (filter.minMs !== undefined && (entry.durationMs ?? Infinity) < filter.minMs) return false;
  if (filter.maxMs !== undefined && (entry.durationMs ?? Infinity) > filter.maxMs) return false;
  if (!filter.text) return true;
  const needle = filter.text.toLowerCase();
  const haystack = [
    entry.method,
    entry.target,
    String(entry.status ?? ""),
    entry.tunnel,
    ...entry.requestHeaders.flat(),
    ...(entry.responseHeaders ?? []).flat(),
  ];
  return haystack.some((text) => text.toLowerCase().includes(needle));
}

/** Whether `status` is in `range`: `404`, `4xx`, `400-499`. */
export function statusMatches(status: number | undefined, range: string): boolean {
  if (status === undefined) return false;
  const span = range.match(/^(\d{3})-(\d{3})$/);
  if (span) return status >= Number(span[1]) && status <= Number(span[2]);
  const klass = range.match(/^([1-5])xx$/i);
  if (klass) return Math.floor(status / 100) === Number(klass[1]);
  return String(status) === range;
}
