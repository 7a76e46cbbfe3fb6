/**
 * HTTP header rules at the tunnel's two edges: which headers are hop-by-hop
 * (never forwarded), and the headers that tell the origin who the visitor is
 * (`X-Forwarded-*`, `X-Real-IP`, `Forwarded`), which only the relay sets. Headers
 * travel as `[name, value]` pairs so repeated ones (several `Set-Cookie`)
 * survive exactly.
 *
 * @example
 * ```ts
 * const pairs = endToEndHeaders(new Headers({ connection: "close", accept: "*\/*" }));
 * // [["accept", "*\/*"]]
 * ```
 * @module
 */

/** RFC 9110 §7.6.1 hop-by-hop headers, plus the legacy ones proxies still see. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

export type HeaderPairs = [string, string][];

/**
 * The headers a proxy forwards: all but hop-by-hop ones and those `Connection` names, except `Host`:
 * an HTTP/1.1 request without one is invalid, so `Connection: close, host` cannot take it away.
 */
export function endToEndHeaders(headers: Headers | HeaderPairs): HeaderPairs {
  const pairs: HeaderPairs = headers instanceof Headers ? headerPairs(headers) : headers;
  const dropped = new Set(HOP_BY_HOP);
  for (const [name, value] of pairs) {
    if (name.toLowerCase() !== "connection") continue;
    for (const token of value.split(",")) dropped.add(token.trim().toLowerCase());
  }
  dropped.delete("host");
  return pairs.filter(([name]) => !dropped.has(name.toLowerCase()));
}

/** `Headers` as pairs, keeping each `Set-Cookie` apart (Headers joins the others with ", "). */
export function headerPairs(headers: Headers): HeaderPairs {
  const pairs: HeaderPairs = [];
  for (const [name, value] of headers) {
    if (name === "set-cookie") continue;
    pairs.push([name, value]);
  }
  for (const cookie of headers.getSetCookie()) pairs.push(["set-cookie", cookie]);
  return pairs;
}

/** Node's flat `rawHeaders` (`[name, value, name, value, …]`) as pairs. */
export function rawHeaderPairs(raw: string[]): HeaderPairs {
  const pairs: HeaderPairs = [];
  for (let i = 0; i + 1 < raw.length; i += 2) pairs.push([raw[i], raw[i + 1]]);
  return pairs;
}

/** What the relay tells the origin about the visitor. */
export interface ForwardedInfo {
  remoteAddr: string;
  proto: "http" | "https";
  host: string;
}

/** Headers that say who the visitor is; only the relay may set them (X-Forwarded-For is appended to). */
const VISITOR_CLAIMS = new Set([
  "forwarded",
  "x-real-ip",
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
]);

/**
 * Adds what the relay knows about the visitor: `X-Forwarded-For` (appended to any earlier hops, as proxies
 * do), `-Proto`, `-Host`, `X-Real-IP` and an RFC 7239 `Forwarded`. A visitor's own `Forwarded` and
 * `X-Real-IP` are dropped: origins read them as the relay's word, and the visitor could write anything.
 */
export function withForwarded(pairs: HeaderPairs, info: ForwardedInfo): HeaderPairs {
  const earlierHops = pairs
    .filter(([name]) => name.toLowerCase() === "x-forwarded-for")
    .map(([, value]) => value);
  const out = pairs.filter(([name]) => !VISITOR_CLAIMS.has(name.toLowerCase()));
  out.push(["x-forwarded-for", [...earlierHops, info.remoteAddr].join(", ")]);
  out.push(["x-forwarded-proto", info.proto]);
  out.push(["x-forwarded-host", info.host]);
  out.push(["x-real-ip", info.remoteAddr]);
  out.push(["forwarded", forwardedElement(info)]);
  return out;
}

/** One RFC 7239 `Forwarded` element: `for=…;proto=…;host=…`, IPv6 addresses bracketed. */
function forwardedElement(info: ForwardedInfo): string {
  const node = info.remoteAddr.includes(":") ? `[${info.remoteAddr}]` : info.remoteAddr;
  return `for=${forwardedValue(node)};proto=${info.proto};host=${forwardedValue(info.host)}`;
}

/** A `Forwarded` parameter value: a token as is, anything else (`:` in `host:port`, `[`) quoted. */
function forwardedValue(value: string): string {
  return TOKEN.test(value) ? value : `"${value.replace(/["\\]/g, "\\$&")}"`;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Visible ASCII/Latin-1, spaces and tabs; no other control characters. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * Whether every pair is a valid HTTP field: a token name and a value without
 * control characters. `Headers` accepts some values (such as `\x01`) that
 * Deno's HTTP/1 writer then refuses with a panic, so the relay checks first.
 */
export function validHeaderPairs(pairs: HeaderPairs): boolean {
  return pairs.every(([name, value]) => TOKEN.test(name) && FIELD_VALUE.test(value));
}

/** Bytes the header block takes on the wire (name, ": ", value, CRLF), for the 431 cap. */
export function headerBytes(pairs: HeaderPairs): number {
  let total = 0;
  for (const [name, value] of pairs) total += name.length + value.length + 4;
  return total;
}
