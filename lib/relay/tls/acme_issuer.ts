/**
 * One ACME account and the challenges it answers, on `acme-client` (JWS, nonces, polling and the ACME
 * server's error details are its business). HTTP-01 answers are kept here for the relay's plain HTTP
 * port to serve; DNS-01 records are set and cleared by the operator's hook script.
 *
 * A failure throws the ACME server's own reason (acme-client puts the problem document's `detail` in
 * the message), so the log says why, such as the address the server could not connect to.
 *
 * @example
 * ```ts
 * import { AcmeStore } from "./acme_store.ts";
 * const store = AcmeStore.open("/var/lib/reverprox", "https://acme-v02.api.letsencrypt.org/directory");
 * const issuer = await AcmeIssuer.open({ directory: "https://acme-v02.api.letsencrypt.org/directory", store });
 * const { chain, key } = await issuer.issue(["api.tunnel.example.com"]); // HTTP-01
 * ```
 * @module
 */
import acme from "acme-client";
import { Agent } from "node:https";
import type { AcmeStore } from "./acme_store.ts";
import { getLogger } from "../../shared/log.ts";

const log = getLogger(["reverprox", "tls"]);

/** Longest a DNS hook may take, record propagation included, before the attempt counts as failed. */
const DNS_HOOK_TIMEOUT_MS = 10 * 60_000;

export interface AcmeIssuerOptions {
  directory: string;
  store: AcmeStore;
  email?: string;
  /** PEM of a CA to trust for the ACME server's HTTPS (a private server such as pebble). */
  caCert?: string;
  /** `SCRIPT set|clear <fqdn> <value>`: with it, every order is proven over DNS-01. */
  dnsHook?: string;
}

type Challenge = Parameters<acme.ClientAutoOptions["challengeCreateFn"]>[1];
type Authorization = Parameters<acme.ClientAutoOptions["challengeCreateFn"]>[0];

export class AcmeIssuer {
  /** Open HTTP-01 challenges: token → key authorization. */
  readonly httpAnswers = new Map<string, string>();

  private constructor(private readonly client: acme.Client, private readonly options: AcmeIssuerOptions) {}

  static async open(options: AcmeIssuerOptions): Promise<AcmeIssuer> {
    if (options.caCert) {
      // acme-client talks through its own axios instance; an agent with the private CA is how it trusts one.
      acme.axios.defaults.httpsAgent = new Agent({ ca: options.caCert, keepAlive: true });
    }
    const accountKey = await options.store.accountKey(async () =>
      String(await acme.crypto.createPrivateEcdsaKey())
    );
    return new AcmeIssuer(new acme.Client({ directoryUrl: options.directory, accountKey }), options);
  }

  /** Proves control of `names` (HTTP-01, or DNS-01 with the hook) and returns the certificate and its new key. */
  async issue(names: string[]): Promise<{ chain: string; key: string }> {
    // ECDSA P-256: every current browser takes it, and its handshakes cost the relay less than RSA's.
    const [key, csr] = await acme.crypto.createCsr(
      { commonName: names[0], altNames: names },
      await acme.crypto.createPrivateEcdsaKey(),
    );
    // DNS-01 records are cleared once the whole order is done: the domain and its wildcard are proven at
    // the same name, in parallel, and clearing that name after one would take the other's value away
    // before the ACME server checked it (a hook may well clear every value at the name).
    const dnsClears: (() => Promise<void>)[] = [];
    try {
      const chain = await this.client.auto({
        csr,
        email: this.options.email,
        termsOfServiceAgreed: true,
        // The ACME server's own check is the one that counts, and its reason is what gets logged.
        skipChallengeVerification: true,
        challengePriority: [this.options.dnsHook ? "dns-01" : "http-01"],
        challengeCreateFn: (authz, challenge, answer) => this.#open(authz, challenge, answer),
        challengeRemoveFn: (authz, challenge, answer) => {
          if (challenge.type === "http-01") this.httpAnswers.delete(challenge.token);
          else dnsClears.push(() => this.#dnsHook("clear", authz, answer));
          return Promise.resolve();
        },
      });
      return { chain, key: String(key) };
    } finally {
      for (const clear of dnsClears) {
        await clear().catch((error) => log.warn("{error}; the TXT record is left", { error: error.message }));
      }
    }
  }

  async #open(authz: Authorization, challenge: Challenge, answer: string) {
    if (challenge.type === "http-01") this.httpAnswers.set(challenge.token, answer);
    else await this.#dnsHook("set", authz, answer);
  }

  async #dnsHook(action: "set" | "clear", authz: Authorization, value: string) {
    const fqdn = `_acme-challenge.${authz.identifier.value}`;
    const { code, stderr } = await new Deno.Command(this.options.dnsHook!, {
      args: [action, fqdn, value],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      signal: AbortSignal.timeout(DNS_HOOK_TIMEOUT_MS),
    }).output();
    if (code !== 0) {
      const said = new TextDecoder().decode(stderr).trim();
      throw new Error(
        `${this.options.dnsHook} ${action} ${fqdn} exited with ${code}${said ? `: ${said}` : ""}`,
      );
    }
  }
}
