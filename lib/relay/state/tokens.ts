/**
 * Client tokens on the relay: read from flags or a file, kept only as SHA-256
 * hashes so a memory dump or log line never holds a usable token.
 *
 * @example
 * ```ts
 * import { sha256Hex } from "../../shared/hash.ts";
 * const hashes = await loadTokenHashes(["s3cret"], undefined);
 * hashes?.has(sha256Hex("s3cret")); // true
 * ```
 * @module
 */

import { sha256Hex } from "../../shared/hash.ts";

/**
 * Hashes of the tokens given directly and those in `file` (one per line, `#`
 * comments and blank lines ignored). `null` when there are none: an open relay.
 */
export async function loadTokenHashes(
  tokens: string[],
  file: string | undefined,
): Promise<Set<string> | null> {
  const all = [...tokens];
  if (file) {
    for (const line of (await Deno.readTextFile(file)).split("\n")) {
      const token = line.trim();
      if (token && !token.startsWith("#")) all.push(token);
    }
  }
  if (all.length === 0) return null;
  return new Set(all.map((token) => sha256Hex(token)));
}
