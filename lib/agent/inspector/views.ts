/**
 * The inspector's entries as the API shows them: a summary for the list, the
 * whole of one (heads, bodies with what kind they are, timings, WebSocket
 * messages, server-sent events), a request as a curl command, and the list
 * as HAR 1.2.
 *
 * @example
 * ```ts
 * import type { Entry } from "./store.ts";
 * declare const entry: Entry;
 * summary(entry);            // { id, method, target, status, durationMs, … }
 * curlCommand(entry, "https://api.tunnel.example.com");
 * ```
 * @module
 */
import { encodeBase64 } from "../../shared/base64.ts";
import type { HeaderPairs } from "../../shared/headers.ts";
import { VERSION } from "../../shared/version.ts";
import type { CapturedBody, Entry } from "./store.ts";

/** How a body is best shown. */
export type BodyKind = "empty" | "json" | "form" | "text" | "image" | "binary";

export function summary(entry: Entry) {
  return {
    id: entry.id,
    tunnel: entry.tunnel,
    replayOf: entry.replayOf ?? null,
    method: entry.method,
    target: entry.target,
    status: entry.status ?? null,
    durationMs: entry.durationMs ?? null,
    startedAt: new Date(entry.startedAt).toISOString(),
    remoteAddr: entry.remoteAddr,
    websocket: entry.websocket,
    sse: entry.sse !== undefined,
    requestBytes: entry.requestBody.size,
    responseBytes: entry.responseBody.size,
    contentType: header(entry.responseHeaders ?? [], "content-type") ?? null,
    error: entry.error ?? null,
  };
}

/** Everything the inspector keeps of one request. */
export function detail(entry: Entry) {
  const ms = (from?: number, to?: number) => from !== undefined && to !== undefined ? to - from : null;
  return {
    ...summary(entry),
    requestHeaders: entry.requestHeaders,
    responseHeaders: entry.responseHeaders ?? null,
    timings: {
      relayAt: entry.relayAt ? new Date(entry.relayAt).toISOString() : null,
      /** From the relay having the head to the agent having it. */
      relayToAgentMs: ms(entry.relayAt, entry.startedAt),
      /** From the agent asking the origin to the origin's response head. */
      originMs: ms(entry.startedAt, entry.responseAt),
      totalMs: entry.durationMs ?? null,
    },
    requestBody: body(entry.requestBody, header(entry.requestHeaders, "content-type")),
    responseBody: body(entry.responseBody, header(entry.responseHeaders ?? [], "content-type")),
    messages: entry.messages.map((message) => ({
      at: new Date(message.at).toISOString(),
      direction: message.direction,
      binary: message.binary,
      size: message.size,
      truncated: message.size > message.data.length,
      ...(message.binary
        ? { base64: encodeBase64(message.data) }
        : { text: new TextDecoder().decode(message.data) }),
    })),
    droppedMessages: entry.droppedMessages,
    events: entry.events.map((event) => ({ ...event, at: new Date(event.at).toISOString() })),
  };
}

/** A captured body with what it is: the page shows JSON pretty, forms decoded, text, images, hex. */
function body(captured: CapturedBody, contentType: string | undefined) {
  const bytes = captured.bytes();
  const text = asText(bytes);
  return {
    size: captured.size,
    captured: bytes.length,
    truncated: captured.truncated,
    contentType: contentType ?? null,
    kind: bodyKind(bytes, text, contentType ?? ""),
    base64: encodeBase64(bytes),
    text: text ?? null,
  };
}

function bodyKind(bytes: Uint8Array, text: string | undefined, contentType: string): BodyKind {
  if (bytes.length === 0) return "empty";
  if (/^image\//i.test(contentType)) return "image";
  if (text === undefined) return "binary";
  if (/json/i.test(contentType) || /^\s*[[{]/.test(text) && isJson(text)) return "json";
  if (/application\/x-www-form-urlencoded/i.test(contentType)) return "form";
  return "text";
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    // Looked like JSON and was not: shown as text.
    return false;
  }
}

/** The bytes as UTF-8 text, or undefined when they are not (binary). */
function asText(bytes: Uint8Array): string | undefined {
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    // Control characters other than whitespace mark binary data that happens to be valid UTF-8.
    // deno-lint-ignore no-control-regex
    return /[\x00-\x08\x0e-\x1f]/.test(text) ? undefined : text;
  } catch {
    // Not UTF-8: binary.
    return undefined;
  }
}

function header(pairs: HeaderPairs, name: string): string | undefined {
  return pairs.find(([key]) => key.toLowerCase() === name)?.[1];
}

/** Quotes a word for a POSIX shell. */
function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** Headers curl works out itself from its own request. */
const CURL_OWN_HEADERS = new Set([
  "host",
  "content-length",
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-real-ip",
  "forwarded",
]);

/** The request as a curl command against `baseUrl` (the tunnel's public URL). */
export function curlCommand(entry: Entry, baseUrl: string): string {
  const words = ["curl", "-X", entry.method, shellQuote(baseUrl + entry.target)];
  for (const [name, value] of entry.requestHeaders) {
    if (!CURL_OWN_HEADERS.has(name.toLowerCase())) words.push("-H", shellQuote(`${name}: ${value}`));
  }
  const bytes = entry.requestBody.bytes();
  if (bytes.length) {
    const text = asText(bytes);
    words.push(
      "--data-binary",
      text !== undefined ? shellQuote(text) : `@<(printf %s ${shellQuote(encodeBase64(bytes))} | base64 -d)`,
    );
  }
  return words.join(" ");
}

/** The entries as a HAR 1.2 log, oldest first, against each tunnel's public URL. */
export function har(entries: Entry[], urlOf: (tunnel: string) => string) {
  const headers = (pairs: HeaderPairs) => pairs.map(([name, value]) => ({ name, value }));
  return {
    log: {
      version: "1.2",
      creator: { name: "reverprox", version: VERSION },
      entries: entries.map((entry) => {
        const url = urlOf(entry.tunnel) + entry.target;
        const request = body(entry.requestBody, header(entry.requestHeaders, "content-type"));
        const response = body(entry.responseBody, header(entry.responseHeaders ?? [], "content-type"));
        const wait = entry.responseAt !== undefined ? entry.responseAt - entry.startedAt : 0;
        return {
          startedDateTime: new Date(entry.startedAt).toISOString(),
          time: entry.durationMs ?? 0,
          request: {
            method: entry.method,
            url,
            httpVersion: "HTTP/1.1",
            cookies: [],
            headers: headers(entry.requestHeaders),
            queryString: [...new URL(url).searchParams].map(([name, value]) => ({ name, value })),
            ...(request.size
              ? {
                postData: {
                  mimeType: request.contentType ?? "application/octet-stream",
                  text: request.text ?? request.base64,
                  ...(request.text === null ? { encoding: "base64" } : {}),
                },
              }
              : {}),
            headersSize: -1,
            bodySize: request.size,
          },
          response: {
            status: entry.status ?? 0,
            statusText: "",
            httpVersion: "HTTP/1.1",
            cookies: [],
            headers: headers(entry.responseHeaders ?? []),
            content: {
              size: response.size,
              mimeType: response.contentType ?? "",
              text: response.text ?? response.base64,
              ...(response.text === null ? { encoding: "base64" } : {}),
              ...(response.truncated
                ? { comment: `captured ${response.captured} of ${response.size} bytes` }
                : {}),
            },
            redirectURL: "",
            headersSize: -1,
            bodySize: response.size,
          },
          cache: {},
          timings: { send: 0, wait, receive: Math.max(0, (entry.durationMs ?? wait) - wait) },
          ...(entry.replayOf ? { comment: `replay of request ${entry.replayOf}` } : {}),
        };
      }),
    },
  };
}
