/**
 * Debug receivers: a second client that attaches to an http tunnel another
 * client holds (its token has the `debug` permission) gets a debug id; the
 * visitors' requests marked with that id (`X-Reverprox-Debug: <id>`, or the
 * cookie `/.reverprox/debug/<id>` sets) go to it, all others still to the
 * tunnel's owner. A receiver never holds the name: when it leaves, its
 * requests go back to the owner; when the owner leaves, the tunnel is offline
 * for everyone, as without receivers.
 *
 * @example
 * ```ts
 * import type { ClientSession } from "./session.ts";
 * declare const owner: ClientSession, receiver: ClientSession;
 * const receivers = new DebugReceivers<ClientSession>();
 * const id = receivers.attach("api", receiver, receiver.ownerKey);
 * receivers.find("api", id);      // receiver
 * receivers.detach(receiver);
 * receivers.find("api", id);      // undefined: marked requests go to the owner again
 * ```
 * @module
 */
import { sha256Hex } from "../shared/hash.ts";
import type { TunnelSession } from "./public/app.ts";
import { errorPage } from "./public/pages.ts";

/** The header that marks a request for a debug receiver. */
export const DEBUG_HEADER = "x-reverprox-debug";
/** The cookie that marks a browser's requests for a debug receiver, set by {@link DEBUG_PATH}`<id>`. */
export const DEBUG_COOKIE = "reverprox_debug";
/** Visiting this path plus a debug id on a tunnel's URL sets the cookie; plus {@link DEBUG_OFF} clears it. */
export const DEBUG_PATH = "/.reverprox/debug/";
export const DEBUG_OFF = "off";

export class DebugReceivers<S> {
  #byId = new Map<string, { name: string; session: S }>();

  /**
   * Attaches `session` to tunnel `name`; returns its debug id. The id is derived from the receiver's
   * owner key (its token and client id), so a reconnecting receiver gets the same one and the cookies
   * and headers visitors hold keep working; nobody without that token can compute it.
   */
  attach(name: string, session: S, ownerKey: string): string {
    const id = sha256Hex(`debug\n${ownerKey}\n${name}`).slice(0, 24);
    this.#byId.set(id, { name, session });
    return id;
  }

  /** The receiver with debug id `id` on tunnel `name`, if one is attached. */
  find(name: string, id: string): S | undefined {
    const found = this.#byId.get(id);
    return found?.name === name ? found.session : undefined;
  }

  /** `session` left: its marked requests go to the tunnels' owners again. */
  detach(session: S): void {
    for (const [id, found] of this.#byId) if (found.session === session) this.#byId.delete(id);
  }

  /** `session` lets go of tunnel `name` alone; false when it was not attached to it. */
  detachOne(name: string, session: S): boolean {
    for (const [id, found] of this.#byId) {
      if (found.session === session && found.name === name) return this.#byId.delete(id);
    }
    return false;
  }

  /** Tunnel `name` is gone (its owner left or its grace ran out): its receivers are detached. */
  detachName(name: string): void {
    for (const [id, found] of this.#byId) if (found.name === name) this.#byId.delete(id);
  }

  clear(): void {
    this.#byId.clear();
  }
}

/**
 * The tunnel as a marked request sees it: sent to the receiver, under the owner's access rules and
 * condition (a paused tunnel is paused for its receivers too).
 */
export function debugRoute(owner: TunnelSession, receiver: TunnelSession): TunnelSession {
  return {
    forward: (...args) => receiver.forward(...args),
    forwardWebSocket: (...args) => receiver.forwardWebSocket(...args),
    guard: (name) => owner.guard(name),
    condition: (name) => owner.condition(name),
  };
}

/** The debug id a request carries: its header first, else its cookie. */
export function debugIdOf(header: string | undefined, cookie: string | undefined): string | undefined {
  if (header) return header.trim();
  for (const part of cookie?.split(";") ?? []) {
    const [key, value] = part.trim().split("=", 2);
    if (key === DEBUG_COOKIE && value) return value;
  }
  return undefined;
}

/**
 * The answer to `/.reverprox/debug/<id>` on tunnel `name`'s URL: with a `known` id, a small page that
 * sets the cookie marking this browser's requests for that receiver; with `off`, one that clears it;
 * else 404, and no cookie (a mistyped id would otherwise send the browser quietly to the owner).
 */
export function debugPage(name: string, id: string, known: boolean, secure: boolean): Response {
  const off = id === DEBUG_OFF;
  if (!off && !known) {
    return errorPage(404, "unknown_debug_id", `No debug receiver with id "${id}" is attached to "${name}".`);
  }
  const cookie = `${DEBUG_COOKIE}=${off ? "" : id}; Path=/; HttpOnly; SameSite=Lax` +
    `${off ? "; Max-Age=0" : ""}${secure ? "; Secure" : ""}`;
  const message = off
    ? `Requests from this browser to "${name}" go to the tunnel's own client again.`
    : `Requests from this browser to "${name}" now go to debug receiver ${id}. ` +
      `<a href="${DEBUG_PATH}${DEBUG_OFF}">Stop</a> to send them to the tunnel's own client again.`;
  return new Response(
    `<!doctype html><meta charset="utf-8"><title>${name}: debug</title>` +
      `<body style="font:16px system-ui;margin:3em auto;max-width:32em"><h1>reverprox debug</h1>` +
      `<p>${message}</p><p><a href="/">Open ${name}</a></p>`,
    {
      headers: {
        "content-type": "text/html; charset=utf-8",
        "cache-control": "no-store",
        "set-cookie": cookie,
      },
    },
  );
}
