/**
 * Per-tunnel access rules, chosen by the client and enforced at the relay
 * before any byte crosses QUIC: an IP allow/deny list (`hono/ip-restriction`)
 * and HTTP basic auth (`hono/basic-auth`). The relay never learns the
 * password, only its SHA-256.
 *
 * @example
 * ```ts
 * import type { Context } from "hono";
 * import { sha256Hex } from "../../shared/hash.ts";
 * declare const c: Context;
 * const basicAuth = { username: "me", passwordSha256: sha256Hex("s3cret") };
 * const guard = accessGuard({ allow: ["203.0.113.0/24"], basicAuth });
 * const refusal = await guard!(c); // a 403 outside the list, a 401 without the password, or undefined
 * ```
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import { basicAuth } from "hono/basic-auth";
import { HTTPException } from "hono/http-exception";
import { getConnInfo } from "@hono/node-server/conninfo";
import { ipRestriction } from "hono/ip-restriction";
import type { TunnelAccess } from "../../wire/protocol.ts";
import { errorPage } from "./pages.ts";
import { sha256Hex } from "../../shared/hash.ts";

/** Checks one request: `undefined` lets it through, a `Response` refuses it. */
export type AccessGuard = (c: Context) => Promise<Response | undefined>;

/** The guard that enforces `access`, or `undefined` when it allows everyone. Throws on a malformed rule. */
export function accessGuard(access: TunnelAccess | undefined): AccessGuard | undefined {
  if (!access) return undefined;
  const checks: MiddlewareHandler[] = [];
  if (access.allow?.length || access.deny?.length) {
    checks.push(ipRestriction(
      getConnInfo,
      { allowList: access.allow ?? [], denyList: access.deny ?? [] },
      (remote) => errorPage(403, "forbidden", `${remote.addr} may not reach this tunnel.`),
    ));
  }
  const credentials = access.basicAuth;
  if (credentials) {
    checks.push(basicAuth({
      realm: "reverprox tunnel",
      verifyUser: (username, password) =>
        username === credentials.username && sha256Hex(password) === credentials.passwordSha256,
    }));
  }
  if (checks.length === 0) return undefined;
  return async (c) => {
    for (const check of checks) {
      let passed = false;
      try {
        const refusal = await check(c, () => {
          passed = true;
          return Promise.resolve();
        });
        if (!passed) return refusal ?? errorPage(403, "forbidden", "This tunnel refused the request.");
      } catch (error) {
        if (error instanceof HTTPException) return error.getResponse();
        throw error;
      }
    }
    return undefined;
  };
}
