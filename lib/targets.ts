/**
 * What the client forwards to: parsing `3000`, `host:port` or a URL into an
 * origin, checking that something listens there, and reading a tunnels file
 * for several tunnels in one process.
 *
 * @example
 * ```ts
 * parseOrigin("3000");                   // { protocol: "http:", hostname: "localhost", port: 3000 }
 * parseOrigin("https://127.0.0.1:8443"); // { protocol: "https:", hostname: "127.0.0.1", port: 8443 }
 * await probeOrigin(parseOrigin("3000")); // undefined, or why nothing answers
 * ```
 * @module
 */
import { z } from "zod";
import type { Origin } from "./http_bridge.ts";

/** A target the user typed that is not a port, host:port or http(s) URL. */
export class TargetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TargetError";
  }
}

/** `3000` → localhost:3000; `host:port`; `http://…` or `https://…`. */
export function parseOrigin(target: string): Origin {
  const text = /^\d+$/.test(target)
    ? `http://localhost:${target}`
    : target.includes("://")
    ? target
    : `http://${target}`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new TargetError(`"${target}" is not a port, host:port or URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TargetError(`"${target}": only http and https origins are supported`);
  }
  const port = Number(url.port || (url.protocol === "https:" ? 443 : 80));
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new TargetError(`"${target}": bad port`);
  }
  return { protocol: url.protocol, hostname: url.hostname.replace(/^\[(.*)\]$/, "$1"), port };
}

/** `undefined` when a TCP connection to the origin opens, else a sentence saying why not. */
export async function probeOrigin(origin: Origin): Promise<string | undefined> {
  try {
    const conn = await Deno.connect({ hostname: origin.hostname, port: origin.port });
    conn.close();
    return undefined;
  } catch (error) {
    return `nothing answers at ${origin.hostname}:${origin.port} (${(error as Error).message})`;
  }
}

const TunnelsFileSchema = z.object({
  tunnels: z.array(
    z.object({ name: z.string().optional(), target: z.union([z.string(), z.number()]) }),
  ).min(1),
});

/** Reads `{"tunnels": [{"name": "api", "target": "3000"}, …]}`. */
export async function readTunnelsFile(file: string): Promise<{ name?: string; target: string }[]> {
  const parsed = TunnelsFileSchema.safeParse(JSON.parse(await Deno.readTextFile(file)));
  if (!parsed.success) {
    throw new TargetError(`${file}: expected {"tunnels": [{"name": "api", "target": "3000"}]}`);
  }
  return parsed.data.tunnels.map((t) => ({ name: t.name, target: String(t.target) }));
}
