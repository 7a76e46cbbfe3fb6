/**
 * Client tokens on the relay: read from flags or a file, kept only as SHA-256
 * hashes so a memory dump or log line never holds a usable token.
 *
 * @example
 * ```ts
 * const hashes = await loadTokenHashes(["s3cret"], undefined);
 * hashes.has(await sha256Hex("s3cret")); // true
 * ```
 * @module
 */

const encoder = new TextEncoder();

/** SHA-256 of a UTF-8 string, lowercase hex. */
export async function sha256Hex(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

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
  return new Set(await Promise.all(all.map(sha256Hex)));
}
