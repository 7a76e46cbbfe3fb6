/**
 * The relay's own answers to visitors: short plain-text pages with the right
 * status and an `X-Reverprox-Error` code that scripts can match on.
 *
 * @example
 * ```ts
 * const response = errorPage(404, "unknown_tunnel", "No tunnel is named api on this relay.");
 * ```
 * @module
 */

/** Codes a visitor may see in `X-Reverprox-Error`. */
export type PageCode =
  | "unknown_tunnel"
  | "tunnel_offline"
  | "origin_refused"
  | "origin_timeout"
  | "origin_error"
  | "client_failed"
  | "relay_overloaded"
  | "tunnel_overloaded"
  | "relay_shutting_down"
  | "headers_too_large"
  | "uri_too_long"
  | "body_too_large"
  | "bad_request"
  | "request_timeout"
  | "upgrade_unsupported"
  | "forbidden"
  | "internal"
  | "rate_limited";

/** A plain-text error page; the body ends in a newline so curl output reads well. */
export function errorPage(status: number, code: PageCode, message: string): Response {
  return new Response(`${status} ${code.replaceAll("_", " ")}\n${message}\n`, {
    status,
    headers: {
      "content-type": "text/plain; charset=utf-8",
      "cache-control": "no-store",
      "x-reverprox-error": code,
    },
  });
}
