/**
 * `--tls FILE --key FILE`: a certificate of the user's own (a wildcard for `*.domain` + `domain`,
 * typically), served for every name, and reloaded when either file changes. The folders are watched,
 * not the files, because renewals (certbot's `live/` symlinks, editors saving by rename) replace files
 * rather than write into them. A pair that does not load, such as a chain already written beside the
 * old key, keeps the current certificate in service until the next change completes it.
 *
 * @example
 * ```ts
 * const certificates = await FileCertificates.open("/etc/tls/fullchain.pem", "/etc/tls/privkey.pem", "tunnel.example.com");
 * await certificates.contextFor("api.tunnel.example.com"); // the wildcard's context
 * certificates.close();
 * ```
 * @module
 */
import { basename, dirname, resolve } from "node:path";
import type { SecureContext } from "node:tls";
import { getLogger } from "../../shared/log.ts";
import { type Certificate, type Certificates, covers, loadCertificate } from "./certificates.ts";

const log = getLogger(["reverprox", "tls"]);

/** Quiet time after the last change before reloading: a renewal writes several files in a burst. */
const SETTLE_MS = 200;

export class FileCertificates implements Certificates {
  readonly maxWaitMs = 0;
  #current: Certificate;
  #watcher: Deno.FsWatcher;
  #settle?: ReturnType<typeof setTimeout>;

  private constructor(readonly chainFile: string, readonly keyFile: string, first: Certificate) {
    this.#current = first;
    this.#watcher = Deno.watchFs([...new Set([dirname(chainFile), dirname(keyFile)])], { recursive: false });
    this.#follow();
  }

  /** Loads the pair (throwing why it cannot) and starts following changes to it. */
  static async open(chainFile: string, keyFile: string, domain: string): Promise<FileCertificates> {
    const [chain, key] = [resolve(chainFile), resolve(keyFile)];
    const first = await load(chain, key);
    for (const host of [domain, `*.${domain}`]) {
      if (!covers(first, host)) {
        log.warn("{file} does not cover {host} (it names {names}): visitors there get a certificate error", {
          file: chainFile,
          host,
          names: first.names.join(", "),
        });
      }
    }
    log.info("serving {file}, valid until {until}", { file: chainFile, until: first.notAfter.toISOString() });
    return new FileCertificates(chain, key, first);
  }

  contextFor(_servername?: string): Promise<SecureContext> {
    return Promise.resolve(this.#current.context);
  }

  want(): void {
    // One certificate serves every name.
  }

  challengeAnswer(): undefined {
    return undefined;
  }

  close(): void {
    clearTimeout(this.#settle);
    this.#watcher.close();
  }

  async #follow() {
    const watched = new Set([basename(this.chainFile), basename(this.keyFile)]);
    for await (const event of this.#watcher) {
      if (!event.paths.some((path) => watched.has(basename(path)))) continue;
      clearTimeout(this.#settle);
      this.#settle = setTimeout(() => this.#reload(), SETTLE_MS);
    }
  }

  async #reload() {
    try {
      this.#current = await load(this.chainFile, this.keyFile);
      log.info("reloaded {file}, valid until {until}", {
        file: this.chainFile,
        until: this.#current.notAfter.toISOString(),
      });
    } catch (error) {
      log.warn("{file} changed but does not load ({error}); still serving the previous certificate", {
        file: this.chainFile,
        error: String(error),
      });
    }
  }
}

async function load(chainFile: string, keyFile: string): Promise<Certificate> {
  try {
    return loadCertificate(await Deno.readTextFile(chainFile), await Deno.readTextFile(keyFile));
  } catch (error) {
    throw new Error(`${chainFile} with ${keyFile}: ${error instanceof Error ? error.message : error}`);
  }
}
