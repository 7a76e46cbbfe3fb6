/**
 * The relay owns how a tunnel's response is framed on the visitor's
 * connection. A tenant's client may send any head: a Content-Length that does
 * not match its body, Transfer-Encoding beside Content-Length, several
 * lengths, a body on a 204. Written as given, the surplus would sit on the
 * visitor's keep-alive connection and be read as the next response, which a
 * pooling proxy in front would hand to someone else. So the relay drops every
 * hop-by-hop and framing header it does not vouch for, keeps one valid
 * Content-Length, refuses heads that cannot be framed (502), and the writer
 * holds the body to that length (see `server.ts`).
 *
 * @example
 * ```ts
 * framedResponseHeaders(200, [["content-length", "5, 5"]]); // { headers: [["content-length", "5"]] }
 * framedResponseHeaders(200, [["content-length", "5"], ["transfer-encoding", "chunked"]]); // { problem: … }
 * ```
 * @module
 */
import { endToEndHeaders, type HeaderPairs } from "../../shared/headers.ts";

/** Final responses that carry no body (RFC 9110 §6.4.1); 1xx heads never get this far. */
export function hasNoBody(method: string, status: number): boolean {
  return method === "HEAD" || status === 204 || status === 304;
}

/** The headers to write for a tunnel's response head, or why it cannot be framed. */
export function framedResponseHeaders(
  status: number,
  pairs: HeaderPairs,
): { headers: HeaderPairs } | { problem: string } {
  const lengths = pairs.filter(([name]) => name.toLowerCase() === "content-length")
    .flatMap(([, value]) => value.split(",").map((part) => part.trim()));
  const chunked = pairs.some(([name]) => name.toLowerCase() === "transfer-encoding");
  if (chunked && lengths.length > 0) {
    return { problem: "the response has both Transfer-Encoding and Content-Length" };
  }
  if (lengths.some((length) => !/^\d{1,15}$/.test(length))) {
    return { problem: `the response's Content-Length ${lengths.join(", ")} is not a number` };
  }
  if (new Set(lengths.map(Number)).size > 1) {
    return { problem: `the response has conflicting Content-Length values ${lengths.join(", ")}` };
  }
  const headers = endToEndHeaders(pairs).filter(([name]) => name.toLowerCase() !== "content-length");
  // A 204 has no length at all; a 304 or an answer to HEAD may state the length of what GET would send.
  if (lengths.length > 0 && status !== 204) headers.push(["content-length", String(Number(lengths[0]))]);
  return { headers };
}
