/**
 * What ACME leaves in the state dir, one folder per ACME server (so certificates from a staging or test
 * server are never served as production ones):
 *
 * ```
 * <state-dir>/acme/<server host>/account.key          the account's key (the account is found again by it)
 * <state-dir>/acme/<server host>/certs/<host>.pem      chain, leaf first
 * <state-dir>/acme/<server host>/certs/<host>.key      its private key (0600)
 * <state-dir>/acme/<server host>/issued.json           the last week's issuances, for the rate limit
 * ```
 *
 * A wildcard's files are named `_wildcard.<domain>`: `_` is never in a tunnel name, `*` is awkward in a
 * shell. Every file is written beside itself and renamed into place, so a crash leaves the old file or
 * the new one, never half of one.
 *
 * @example
 * ```ts
 * const store = AcmeStore.open("/var/lib/reverprox", "https://acme-v02.api.letsencrypt.org/directory");
 * await store.save("api.tunnel.example.com", "-----BEGIN CERTIFICATE-----…", "-----BEGIN PRIVATE KEY-----…");
 * await store.recordIssued(["api.tunnel.example.com"], false);
 * await store.newThisWeek(); // 1
 * ```
 * @module
 */
import { join } from "node:path";

const WEEK_MS = 7 * 24 * 3600_000;

/** One issuance, as kept in `issued.json`. */
interface Issuance {
  names: string[];
  at: string;
  /** Renewals of a certificate the relay already had; Let's Encrypt does not count them as new. */
  renewal: boolean;
}

export class AcmeStore {
  readonly #certs: string;

  private constructor(readonly dir: string) {
    this.#certs = join(dir, "certs");
  }

  /** The folder for the ACME server at `directoryUrl` under `stateDir`. */
  static open(stateDir: string, directoryUrl: string): AcmeStore {
    const { host } = new URL(directoryUrl);
    return new AcmeStore(join(stateDir, "acme", host.replaceAll(":", "_")));
  }

  /** The account key, made by `make` and kept on first use. */
  async accountKey(make: () => Promise<string>): Promise<string> {
    const path = join(this.dir, "account.key");
    const kept = await readIfThere(path);
    if (kept !== undefined) return kept;
    const key = await make();
    await this.#write(path, key, 0o600);
    return key;
  }

  /** Hosts with a stored certificate. */
  async hosts(): Promise<string[]> {
    const hosts: string[] = [];
    try {
      for await (const entry of Deno.readDir(this.#certs)) {
        if (entry.name.endsWith(".pem")) hosts.push(fromFileName(entry.name.slice(0, -4)));
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    return hosts.sort();
  }

  /** The stored chain and key for `host`, if both are there. */
  async load(host: string): Promise<{ chain: string; key: string } | undefined> {
    const base = join(this.#certs, fileName(host));
    const [chain, key] = await Promise.all([readIfThere(`${base}.pem`), readIfThere(`${base}.key`)]);
    return chain !== undefined && key !== undefined ? { chain, key } : undefined;
  }

  async save(host: string, chain: string, key: string): Promise<void> {
    const base = join(this.#certs, fileName(host));
    await this.#write(`${base}.key`, key, 0o600);
    await this.#write(`${base}.pem`, chain, 0o644);
  }

  /** New certificates (not renewals) issued in the last seven days, and when the oldest of them stops counting. */
  async newThisWeek(now = Date.now()): Promise<{ count: number; freeAt: number }> {
    const recent = (await this.#issuances(now)).filter((issuance) => !issuance.renewal);
    const oldest = recent.length ? Date.parse(recent[0].at) : now;
    return { count: recent.length, freeAt: oldest + WEEK_MS };
  }

  async recordIssued(names: string[], renewal: boolean, now = Date.now()): Promise<void> {
    const issuances = await this.#issuances(now);
    issuances.push({ names, at: new Date(now).toISOString(), renewal });
    await this.#write(join(this.dir, "issued.json"), JSON.stringify(issuances, null, 1) + "\n", 0o644);
  }

  /** The issuances of the last seven days, oldest first. */
  async #issuances(now: number): Promise<Issuance[]> {
    const text = await readIfThere(join(this.dir, "issued.json"));
    const all: Issuance[] = text ? JSON.parse(text) : [];
    return all.filter((issuance) => now - Date.parse(issuance.at) < WEEK_MS);
  }

  async #write(path: string, text: string, mode: number) {
    await Deno.mkdir(this.#certs, { recursive: true, mode: 0o700 });
    const temporary = `${path}.${crypto.randomUUID()}.tmp`;
    await Deno.writeTextFile(temporary, text, { mode });
    await Deno.rename(temporary, path);
  }
}

function fileName(host: string): string {
  return host.replace(/^\*\./, "_wildcard.");
}

function fromFileName(name: string): string {
  return name.replace(/^_wildcard\./, "*.");
}

async function readIfThere(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}
