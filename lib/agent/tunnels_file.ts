/**
 * A tunnels file: several tunnels for one agent,
 * `{"tunnels": [{"name": "api", "target": "3000"}, {"kind": "tcp", "target": "5432"}]}`, and
 * keeping an agent in step with it while it is edited: a tunnel added to the
 * file is added, one taken out is removed, one whose target changed is
 * replaced, and every other tunnel (and its open connections) is left alone.
 *
 * @example
 * ```ts
 * const entries = await readTunnelsFile("tunnels.json"); // [{ kind: "http", name: "api", target: "3000" }]
 * ```
 * @module
 */
import { dirname, resolve } from "node:path";
import { z } from "zod";
import { getLogger } from "../shared/log.ts";
import type { AddTunnel, TunnelView } from "./control.ts";
import { TargetError } from "./origin.ts";

const log = getLogger(["reverprox", "client"]);

/** How long the file must be quiet after a change before it is read: editors write in several steps. */
const SETTLE_MS = 200;

const TunnelsFileSchema = z.object({
  tunnels: z.array(
    z.object({
      kind: z.enum(["http", "tcp"]).default("http"),
      name: z.string().optional(),
      target: z.union([z.string(), z.number()]),
      remotePort: z.number().int().min(1).max(65535).optional(),
      healthPath: z.string().startsWith("/").optional(),
    }),
  ),
});

/** One line of a tunnels file. */
export interface TunnelsFileEntry {
  kind: "http" | "tcp";
  name?: string;
  target: string;
  remotePort?: number;
  healthPath?: string;
}

/** Reads a tunnels file; throws a {@link TargetError} saying what is wrong with it. */
export async function readTunnelsFile(file: string): Promise<TunnelsFileEntry[]> {
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(file));
  } catch (error) {
    throw new TargetError(`${file}: ${error instanceof Error ? error.message : error}`);
  }
  const parsed = TunnelsFileSchema.safeParse(json);
  if (!parsed.success) {
    throw new TargetError(`${file}: expected {"tunnels": [{"name": "api", "target": "3000"}]}`);
  }
  return parsed.data.tunnels.map((t) => ({ ...t, target: String(t.target) }));
}

/** What keeping in step needs of an agent (its controller, or its API from another process). */
export interface TunnelHolder {
  list(): TunnelView[] | Promise<TunnelView[]>;
  add(tunnel: AddTunnel): Promise<TunnelView>;
  remove(name: string): Promise<void>;
}

/**
 * Changes `holder`'s tunnels named in `managed` (those the file put there) to `desired`: removes what
 * left the file, replaces what changed, adds what is new. Returns the names now managed.
 */
export async function syncTunnels(
  holder: TunnelHolder,
  managed: Set<string>,
  desired: AddTunnel[],
): Promise<Set<string>> {
  const current = new Map((await holder.list()).filter((t) => managed.has(t.name)).map((t) => [t.name, t]));
  const wanted = new Map(desired.map((tunnel) => [tunnel.name ?? "", tunnel]));
  const now = new Set<string>();
  for (const [name, view] of current) {
    const want = wanted.get(name);
    if (want && want.kind === view.kind && sameTarget(want, view)) {
      now.add(name);
      wanted.delete(name);
    } else {
      await holder.remove(name);
      log.info("tunnels file: removed {name}", { name });
    }
  }
  for (const tunnel of wanted.values()) {
    const added = await holder.add(tunnel).catch((error) => {
      log.error("tunnels file: cannot add {name}: {error}", {
        name: tunnel.name,
        error: (error as Error).message,
      });
      return undefined;
    });
    if (added) now.add(added.name);
  }
  return now;
}

/** Whether `view` already forwards where `tunnel` asks (targets as written, so `3000` = `localhost:3000`). */
function sameTarget(tunnel: AddTunnel, view: TunnelView): boolean {
  const written = /^\d+$/.test(tunnel.target)
    ? (tunnel.kind === "tcp" ? `127.0.0.1:${tunnel.target}` : `http://localhost:${tunnel.target}`)
    : tunnel.target;
  return view.target === written || view.target === `http://${written}`;
}

/**
 * Calls `changed` (debounced) whenever `file` is written, until `signal` aborts. Its folder is watched,
 * not the file: editors often save by writing a new file and renaming it over the old one.
 */
export async function watchFile(
  file: string,
  changed: () => Promise<void>,
  signal: AbortSignal,
): Promise<void> {
  const path = resolve(file);
  const watcher = Deno.watchFs(dirname(path), { recursive: false });
  signal.addEventListener("abort", () => watcher.close(), { once: true });
  let timer: ReturnType<typeof setTimeout> | undefined;
  for await (const event of watcher) {
    if (event.kind === "access" || !event.paths.includes(path)) continue;
    clearTimeout(timer);
    timer = setTimeout(() => {
      changed().catch((error) => log.error("tunnels file: {error}", { error: (error as Error).message }));
    }, SETTLE_MS);
  }
  clearTimeout(timer);
}
