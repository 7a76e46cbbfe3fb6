/**
 * Access rules a client asks the relay to enforce for its tunnel, from the
 * command line. The relay never learns a basic-auth password, only its
 * SHA-256.
 *
 * @example
 * ```ts
 * basicAuthRule("ada:s3cret"); // { username: "ada", passwordSha256: "…" }
 * ```
 * @module
 */
import type { TunnelAccess } from "../wire/protocol.ts";
import { sha256Hex } from "../shared/hash.ts";

/** Parses `user:pass` into what the relay keeps (the password only as SHA-256). */
export function basicAuthRule(text: string): NonNullable<TunnelAccess["basicAuth"]> {
  const colon = text.indexOf(":");
  if (colon < 1) throw new Error("--basic-auth takes user:password");
  return { username: text.slice(0, colon), passwordSha256: sha256Hex(text.slice(colon + 1)) };
}
