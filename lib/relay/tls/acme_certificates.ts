/**
 * `--tls acme`: a certificate per tunnel name (HTTP-01), asked for when the name is first handed out,
 * plus one for the bare domain; or, with a DNS hook, one wildcard for `*.domain` + `domain` (DNS-01)
 * that serves every name.
 *
 * - **Visitors who come while their name's certificate is being issued** wait in the TLS handshake (an
 *   async SNI callback) for up to {@link SNI_WAIT_MS}, rather than get a certificate error at once.
 * - **Stored** in the state dir (`acme_store.ts`) and loaded at start, so a restart asks for nothing new.
 * - **Renewed** when a third of its lifetime is left (30 days of Let's Encrypt's 90), by a timer per
 *   certificate; only while a tunnel still holds the name (or for the bare domain / wildcard), so names
 *   that came and went do not spend the rate limit.
 * - **Failures** are logged with the ACME server's reason and retried with exponential backoff (one
 *   minute, doubling, at most six hours), while the name is held.
 * - **Rate limit**: new certificates (renewals are exempt) are counted in the state dir; past
 *   `weeklyLimit` in seven days the relay stops asking, says so, and suggests a wildcard.
 *
 * @example
 * ```ts
 * import { AcmeIssuer } from "./acme_issuer.ts";
 * import { AcmeStore } from "./acme_store.ts";
 * declare const issuer: AcmeIssuer, store: AcmeStore;
 * const certificates = await AcmeCertificates.open({
 *   domain: "tunnel.example.com", issuer, store, wildcard: false, weeklyLimit: 50, inUse: () => true,
 * });
 * certificates.want("api"); // issues api.tunnel.example.com in the background
 * await certificates.contextFor("api.tunnel.example.com"); // waits for it, up to SNI_WAIT_MS
 * ```
 * @module
 */
import type { SecureContext } from "node:tls";
import { getLogger } from "../../shared/log.ts";
import { isValidName } from "../../shared/names.ts";
import { tunnelName } from "../public/middleware.ts";
import type { AcmeIssuer } from "./acme_issuer.ts";
import type { AcmeStore } from "./acme_store.ts";
import { type Certificate, type Certificates, loadCertificate } from "./certificates.ts";

const log = getLogger(["reverprox", "tls"]);

/** Longest a handshake waits for its name's certificate to be issued; then it gets the bare domain's. */
const SNI_WAIT_MS = 10_000;
/** First wait after a failed order; it doubles per failure (Let's Encrypt allows 5 failures per name per hour). */
const RETRY_FIRST_MS = 60_000;
const RETRY_MAX_MS = 6 * 3600_000;
/** setTimeout's longest delay (about 24.8 days); longer waits are chained. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface AcmeCertificatesOptions {
  domain: string;
  issuer: Pick<AcmeIssuer, "issue" | "httpAnswers">;
  store: AcmeStore;
  /** One wildcard certificate (DNS-01) instead of one per name. */
  wildcard: boolean;
  /** New certificates per seven days before the relay stops asking. */
  weeklyLimit: number;
  /** Whether a tunnel holds `name` (online, or reserved for its client): only such names are renewed and retried. */
  inUse: (name: string) => boolean;
}

/** The weekly limit is reached; asking again is of use only from `freeAt`. */
class WeeklyLimitReached extends Error {
  constructor(readonly freeAt: number, limit: number) {
    super(
      `${limit} new certificates in seven days, the most the ACME server allows (--acme-weekly-limit); ` +
        `no new ones until ${new Date(freeAt).toISOString()}. A relay with many names wants one wildcard ` +
        `certificate: --acme-dns-hook SCRIPT (DNS-01), or --tls FILE --key FILE`,
    );
  }
}

export class AcmeCertificates implements Certificates {
  readonly maxWaitMs = SNI_WAIT_MS;
  #served = new Map<string, Certificate>();
  #issuing = new Map<string, Promise<void>>();
  #retries = new Map<string, { attempt: number; timer?: Timer }>();
  #renewals = new Map<string, Timer>();
  /** New certificates being ordered now, counted against the weekly limit before they are issued. */
  #newInFlight = 0;
  #closed = false;
  /** The bare domain's certificate, or the wildcard: served for names that have none of their own. */
  readonly #site: string;

  private constructor(private readonly options: AcmeCertificatesOptions) {
    this.#site = options.wildcard ? `*.${options.domain}` : options.domain;
  }

  /** Loads what the state dir holds and starts on the bare domain's (or the wildcard's) certificate. */
  static async open(options: AcmeCertificatesOptions): Promise<AcmeCertificates> {
    const certificates = new AcmeCertificates(options);
    await certificates.#loadStored();
    certificates.#ensure(certificates.#site);
    return certificates;
  }

  async contextFor(servername: string): Promise<SecureContext | undefined> {
    const host = this.#hostFor(servername);
    const issuing = this.#issuing.get(host);
    if (issuing && !this.#served.has(host)) await settledWithin(issuing, SNI_WAIT_MS);
    return (this.#served.get(host) ?? this.#served.get(this.#site))?.context;
  }

  want(name: string): void {
    if (!this.options.wildcard) this.#ensure(`${name}.${this.options.domain}`);
  }

  challengeAnswer(token: string): string | undefined {
    return this.options.issuer.httpAnswers.get(token);
  }

  close(): void {
    this.#closed = true;
    for (const timer of this.#renewals.values()) timer.cancel();
    for (const { timer } of this.#retries.values()) timer?.cancel();
  }

  /** The certificate a handshake for `servername` gets: its own name's, else the site's. */
  #hostFor(servername: string): string {
    if (this.options.wildcard) return this.#site;
    const name = tunnelName(servername, this.options.domain);
    return typeof name === "string" && isValidName(name) ? servername : this.#site;
  }

  /** Starts an order for `host` unless it has a certificate not yet due, has one coming, or waits to retry. */
  #ensure(host: string) {
    if (this.#closed || this.#issuing.has(host) || this.#retries.get(host)?.timer) return;
    const current = this.#served.get(host);
    if (current && Date.now() < renewalTime(current)) return;
    this.#issue(host);
  }

  #issue(host: string) {
    const issuing = this.#obtain(host).finally(() => this.#issuing.delete(host));
    this.#issuing.set(host, issuing);
  }

  /** Orders, stores and serves a certificate for `host`; a failure is logged and retried later. */
  async #obtain(host: string) {
    const renewal = this.#served.has(host);
    const names = host === this.#site && this.options.wildcard ? [this.options.domain, host] : [host];
    const started = Date.now();
    let counted = false;
    try {
      if (!renewal) counted = await this.#countNew();
      log.info("{what} a certificate for {names}", { what: renewal ? "renewing" : "ordering", names });
      const { chain, key } = await this.options.issuer.issue(names);
      const certificate = loadCertificate(chain, key);
      await this.options.store.save(host, chain, key);
      await this.options.store.recordIssued(names, renewal);
      this.#serve(host, certificate);
      this.#retries.delete(host);
      log.info("certificate for {names} {what} in {ms} ms, valid until {until}", {
        names,
        what: renewal ? "renewed" : "issued",
        ms: Date.now() - started,
        until: certificate.notAfter.toISOString(),
      });
    } catch (error) {
      this.#retryLater(host, error);
    } finally {
      if (counted) this.#newInFlight--;
    }
  }

  /** Counts one more new certificate against the weekly limit, or throws when there is no room. */
  async #countNew(): Promise<true> {
    const { count, freeAt } = await this.options.store.newThisWeek();
    if (count + this.#newInFlight >= this.options.weeklyLimit) {
      throw new WeeklyLimitReached(freeAt, this.options.weeklyLimit);
    }
    this.#newInFlight++;
    return true;
  }

  #retryLater(host: string, error: unknown) {
    if (this.#closed) return;
    const attempt = (this.#retries.get(host)?.attempt ?? 0) + 1;
    const limited = error instanceof WeeklyLimitReached;
    const waitMs = limited
      ? error.freeAt - Date.now()
      : Math.min(RETRY_FIRST_MS * 2 ** (attempt - 1), RETRY_MAX_MS);
    log.error("no certificate for {host} (attempt {attempt}): {reason}; next try in {seconds} s", {
      host,
      attempt,
      reason: error instanceof Error ? error.message : String(error),
      seconds: Math.round(waitMs / 1000),
    });
    const entry: { attempt: number; timer?: Timer } = { attempt };
    entry.timer = timerAt(Date.now() + waitMs, () => {
      entry.timer = undefined;
      if (this.#wanted(host)) this.#issue(host);
      else this.#retries.delete(host);
    });
    this.#retries.set(host, entry);
  }

  /** Serves `certificate` for `host` and sets the time to renew it. */
  #serve(host: string, certificate: Certificate) {
    this.#served.set(host, certificate);
    this.#renewals.get(host)?.cancel();
    this.#renewals.set(host, timerAt(renewalTime(certificate), () => this.#renew(host)));
  }

  #renew(host: string) {
    this.#renewals.delete(host);
    if (this.#closed || this.#issuing.has(host)) return;
    if (this.#wanted(host)) return this.#issue(host);
    log.info(
      "not renewing {host}: no tunnel holds the name now (it gets a new certificate if it comes back)",
      {
        host,
      },
    );
  }

  /** Whether `host` should keep a certificate: the site's, or a name a tunnel holds. */
  #wanted(host: string): boolean {
    return host === this.#site || this.options.inUse(host.slice(0, -(this.options.domain.length + 1)));
  }

  async #loadStored() {
    for (const host of await this.options.store.hosts()) {
      if (this.options.wildcard ? host !== this.#site : this.#hostFor(host) !== host) continue;
      const stored = await this.options.store.load(host);
      if (!stored) continue;
      try {
        this.#serve(host, loadCertificate(stored.chain, stored.key));
      } catch (error) {
        log.warn(
          "the stored certificate for {host} does not load ({error}); a new one is ordered when needed",
          {
            host,
            error: String(error),
          },
        );
      }
    }
    log.info("{count} stored certificates loaded", { count: this.#served.size });
  }
}

/** When a certificate is renewed: with a third of its lifetime left. */
function renewalTime(certificate: Certificate): number {
  const lifetime = certificate.notAfter.getTime() - certificate.notBefore.getTime();
  return certificate.notAfter.getTime() - lifetime / 3;
}

interface Timer {
  cancel(): void;
}

/** Runs `run` at `at` (ms since the epoch), however far off that is. */
function timerAt(at: number, run: () => void): Timer {
  let timer: ReturnType<typeof setTimeout>;
  const arm = () => {
    const wait = at - Date.now();
    timer = wait > MAX_TIMER_MS ? setTimeout(arm, MAX_TIMER_MS) : setTimeout(run, Math.max(0, wait));
  };
  arm();
  return { cancel: () => clearTimeout(timer) };
}

/** Resolves once `promise` settles or `ms` have passed, whichever is first; never rejects. */
function settledWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise.then(() => {}, () => {}),
    new Promise<void>((resolve) => timer = setTimeout(resolve, ms)),
  ]).finally(() => clearTimeout(timer));
}
