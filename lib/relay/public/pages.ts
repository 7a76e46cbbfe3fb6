/**
 * The relay's own answers to visitors: short plain-text pages with the right
 * status and an `X-Reverprox-Error` code that scripts can match on.
 *
 * @example
 * ```ts
 * const response = errorPage(404, "unknown_tunnel", "No tunnel is named api on this relay.");
 * throw new PageError(429, "rate_limited", "Slow down.", { "retry-after": "1" });
 * ```
 * @module
 */

/** Codes a visitor may see in `X-Reverprox-Error`. */
export type PageCode =
  | "unknown_tunnel"
  | "unknown_debug_id"
  | "tunnel_paused"
  | "origin_down"
  | "not_found"
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
  | "misdirected_request"
  | "request_timeout"
  | "upgrade_unsupported"
  | "forbidden"
  | "rate_limited"
  | "loop_detected";

/** What visitors of a tunnel whose client is reconnecting are told (with 503 `tunnel_offline`). */
export function reconnectingMessage(tunnel: string): string {
  return `The tunnel "${tunnel}" is offline; its client is reconnecting.`;
}

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

/**
 * A refusal on the public side, thrown by whichever middleware decides it; the app's one error handler
 * turns it into its page (Hono's `HTTPException`, with our page codes).
 */
export class PageError extends Error {
  constructor(
    readonly status: number,
    readonly code: PageCode,
    message: string,
    /** Headers the page carries besides the usual ones (`Retry-After`, `Connection: close`). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "PageError";
  }

  page(): Response {
    const response = errorPage(this.status, this.code, this.message);
    for (const [name, value] of Object.entries(this.headers)) response.headers.set(name, value);
    return response;
  }
}

/** The answer for a tunnel its owner paused: 503 with `Retry-After`, as a small page for browsers or text. */
export function pausedPage(name: string, html: boolean, retryAfterSeconds: number): Response {
  const message = `The tunnel "${name}" is paused by its owner; its address is kept. Try again later.`;
  const response = html
    ? new Response(
      `<!doctype html><meta charset="utf-8"><meta name="viewport" content="width=device-width">` +
        `<title>${name}: paused</title><body style="font:16px system-ui;margin:3em auto;max-width:32em">` +
        `<h1>Paused</h1><p>${message.replaceAll('"', "&quot;")}</p><p><small>reverprox</small></p>`,
      { status: 503, headers: { "content-type": "text/html; charset=utf-8" } },
    )
    : errorPage(503, "tunnel_paused", message);
  response.headers.set("retry-after", String(retryAfterSeconds));
  response.headers.set("x-reverprox-error", "tunnel_paused");
  response.headers.set("cache-control", "no-store");
  return response;
}
