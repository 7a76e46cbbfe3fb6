/**
 * Deterministic test bytes: the same `n` bytes every time, streamed in 64 KiB
 * chunks, so both ends of a transfer can check a SHA-256 without keeping the data.
 * @module
 */
import { createHash } from "node:crypto";

const BLOCK = (() => {
  const block = new Uint8Array(1 << 20);
  let x = 0x9e3779b9;
  for (let i = 0; i < block.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    block[i] = x & 0xff;
  }
  return block;
})();
const CHUNK = 64 * 1024;

/** Byte `offset` onward of the pattern, `length` bytes. */
function slice(offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let filled = 0; filled < length;) {
    const at = (offset + filled) % BLOCK.length;
    const take = Math.min(length - filled, BLOCK.length - at);
    out.set(BLOCK.subarray(at, at + take), filled);
    filled += take;
  }
  return out;
}

/** The first `total` pattern bytes as a stream. */
export function patternStream(total: number): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream({
    pull(controller) {
      if (sent >= total) return controller.close();
      const length = Math.min(CHUNK, total - sent);
      controller.enqueue(slice(sent, length));
      sent += length;
    },
  }, { highWaterMark: 0 });
}

/** SHA-256 (hex) of the first `total` pattern bytes. */
export function patternSha256(total: number): string {
  const hash = createHash("sha256");
  for (let sent = 0; sent < total; sent += CHUNK) {
    hash.update(slice(sent, Math.min(CHUNK, total - sent)));
  }
  return hash.digest("hex");
}

/** SHA-256 (hex) and size of everything a stream yields. */
export async function streamSha256(
  stream: ReadableStream<Uint8Array>,
): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { sha256: hash.digest("hex"), bytes };
}
