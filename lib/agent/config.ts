/**
 * The client's settings and small state, kept in `$XDG_CONFIG_HOME/reverprox/`
 * (or `~/.config/reverprox/`, or `$REVERPROX_CONFIG_DIR`):
 *
 * - `config.json`: `server`, `token`, `fingerprint`, `transport`, set with `reverprox config set`;
 * - `known_relays`: relay fingerprints trusted on first use, like SSH's known_hosts;
 * - `client-id`: a random id that lets a restarted client reclaim its names;
 * - `names.json`: the random names picked before, so a restart keeps its URL.
 *
 * Environment variables (`REVERPROX_SERVER`, `REVERPROX_TOKEN`,
 * `REVERPROX_FINGERPRINT`) override the file; flags override both.
 *
 * @example
 * ```ts
 * const dir = configDir();
 * await setConfigValue(dir, "server", "quic://tunnel.example.com:4433");
 * const settings = await resolveSettings(dir, {}); // file < env < flags
 * ```
 * @module
 */
import { randomBytes } from "node:crypto";
import { dirname, join } from "node:path";

export const CONFIG_KEYS = ["server", "token", "fingerprint", "transport"] as const;
export type ConfigKey = typeof CONFIG_KEYS[number];
export type ClientConfig = Partial<Record<ConfigKey, string>>;

/** Used when nothing else names a relay: one on this machine. */
const DEFAULT_SERVER = "quic://127.0.0.1:4433";

/** Where the client keeps its files. */
export function configDir(): string {
  const explicit = Deno.env.get("REVERPROX_CONFIG_DIR");
  if (explicit) return explicit;
  const xdg = Deno.env.get("XDG_CONFIG_HOME");
  if (xdg) return join(xdg, "reverprox");
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE") ?? ".";
  return join(home, ".config", "reverprox");
}

export function isConfigKey(key: string): key is ConfigKey {
  return (CONFIG_KEYS as readonly string[]).includes(key);
}

/** The settings in `config.json`; a missing file is an empty config. */
export async function readConfig(dir: string): Promise<ClientConfig> {
  const parsed = await readJson(join(dir, "config.json"));
  const config: ClientConfig = {};
  for (const key of CONFIG_KEYS) {
    if (typeof parsed[key] === "string") config[key] = parsed[key] as string;
  }
  return config;
}

/** Stores one setting; `undefined` removes it. The file is private (0600): it may hold a token. */
export async function setConfigValue(dir: string, key: ConfigKey, value: string | undefined) {
  const config = await readConfig(dir);
  if (value === undefined) delete config[key];
  else config[key] = value;
  await writeJson(join(dir, "config.json"), config);
}

/** File, then environment, then flags: the later wins. `server` falls back to {@link DEFAULT_SERVER}. */
export async function resolveSettings(dir: string, flags: ClientConfig) {
  const file = await readConfig(dir);
  const env: ClientConfig = {
    server: Deno.env.get("REVERPROX_SERVER"),
    token: Deno.env.get("REVERPROX_TOKEN"),
    fingerprint: Deno.env.get("REVERPROX_FINGERPRINT"),
    transport: Deno.env.get("REVERPROX_TRANSPORT"),
  };
  const pick = (key: ConfigKey) => flags[key] ?? env[key] ?? file[key];
  return {
    server: pick("server") ?? DEFAULT_SERVER,
    token: pick("token"),
    fingerprint: pick("fingerprint"),
    transport: pick("transport"),
  };
}

/** This install's client id, made on first use. */
export async function clientId(dir: string): Promise<string> {
  const path = join(dir, "client-id");
  try {
    return (await Deno.readTextFile(path)).trim();
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const id = randomBytes(24).toString("hex");
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(path, id + "\n", { mode: 0o600 });
  return id;
}

/** The random name used before for `key` (relay + local target), if any. */
export async function rememberedName(dir: string, key: string): Promise<string | undefined> {
  const names = await readJson(join(dir, "names.json"));
  return typeof names[key] === "string" ? names[key] as string : undefined;
}

export async function rememberName(dir: string, key: string, name: string) {
  const path = join(dir, "names.json");
  const names = await readJson(path);
  names[key] = name;
  await writeJson(path, names);
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  try {
    const parsed = JSON.parse(await Deno.readTextFile(path));
    return parsed && typeof parsed === "object" ? parsed : {};
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return {};
    throw new Error(`cannot read ${path}: ${error instanceof Error ? error.message : error}`);
  }
}

async function writeJson(path: string, value: unknown) {
  await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(path, JSON.stringify(value, null, 2) + "\n", { mode: 0o600 });
}
