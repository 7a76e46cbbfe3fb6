/**
 * The optional sign-up API of an open relay (`--registration`): visitors make
 * an account and get a token for names under their username.
 *
 * - `POST /api/register` `{"username", "password"}` → 201 `{"token", "names"}`;
 *   409 when the username is taken or its names would overlap another user's,
 *   400 when the input is not acceptable.
 * - `POST /api/auth` `{"username", "password"}` → 200 `{"token", "names"}`:
 *   a fresh token that replaces the user's previous one; 401 on bad credentials.
 * - 413 for a body over {@link MAX_BODY_BYTES}, 408 for one that takes longer
 *   than {@link BODY_TIMEOUT_MS}, 429 for an address over its rate, 503 with
 *   `Retry-After` while password hashing is saturated; with registration off,
 *   403.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { TokenStore } from "./token_store.ts";
 * const api = accountApi(TokenStore.open("/var/lib/reverprox"), { enabled: true, allowPunycode: false });
 * const pages = new Hono(); // on node:http, which tells the API each visitor's address
 * pages.all("/api/*", (c) => api.fetch(c.req.raw, c.env));
 * ```
 * @module
 */
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { getConnInfo } from "@hono/node-server/conninfo";
import { z } from "zod";
import { isPunycode, isValidName } from "../../shared/names.ts";
import { RateLimiter } from "../public/rate_limit.ts";
import { TimeoutError, withTimeout } from "../../shared/async.ts";
import { hashPassword, passwordMatches, type TokenStore } from "./token_store.ts";

/** Tunnels a signed-up user may hold at once, over all their clients. */
const USER_MAX_TUNNELS = 10;
/** How many of those may be TCP tunnels: each takes one of the relay's public ports. */
const USER_MAX_TCP_TUNNELS = 2;
/** Requests per second one address may make to the API: enough for people, little for guessing. */
const API_RATE_PER_IP = 10;
/** Largest request body: credentials fit, even a 1,024-character password written as JSON escapes. */
const MAX_BODY_BYTES = 8 * 1024;
/**
 * How much of a body over the cap is read and dropped before the relay hangs
 * up: closing a connection with unread bytes resets it, and the client may
 * then never read its 413.
 */
const DISCARD_BYTES = 64 * 1024;
/** Longest a request body may take to arrive. */
const BODY_TIMEOUT_MS = 10_000;
/**
 * Password hashes (scrypt, ~140 ms of one core each) running at once, and
 * waiting behind them. One at a time leaves the other core to the event loop
 * whatever the number of addresses guessing; 16 waiting is about two seconds.
 */
const HASHES_RUNNING = 1;
const HASHES_WAITING = 16;

/** The API as a Hono app, mounted by the public app on the relay's bare domain. */
export function accountApi(
  store: TokenStore,
  options: { enabled: boolean; allowPunycode: boolean },
): Hono {
  const app = new Hono();
  const perIp = new RateLimiter(API_RATE_PER_IP);
  const hashing = new HashQueue(HASHES_RUNNING, HASHES_WAITING);
  const credentials = credentialsSchema(options.allowPunycode);
  const issue = (username: string) => {
    const names = `${username}-*`;
    const { token } = store.issueAccountToken(username, {
      label: `user:${username}`,
      namePattern: names,
      maxTunnels: USER_MAX_TUNNELS,
      maxTcpTunnels: USER_MAX_TCP_TUNNELS,
    });
    return { token, names };
  };

  app.use(async (c, next) => {
    if (!options.enabled) return c.json({ error: "registration is not enabled on this relay" }, 403);
    if (!perIp.take(getConnInfo(c).remote.address ?? "")) return c.json({ error: "too many requests" }, 429);
    await next();
  });

  app.post("/api/register", async (c) => {
    const input = credentials.safeParse(await readJson(c.req.raw));
    if (!input.success) {
      return c.json({ error: input.error.issues.map((issue) => issue.message).join("; ") }, 400);
    }
    const { username, password } = input.data;
    // Checked before hashing to answer at once, and again when adding: another sign-up may win meanwhile.
    const early = store.usernameConflict(username);
    if (early) return c.json({ error: early }, 409);
    const conflict = store.addUser(username, await hashing.run(() => hashPassword(password)));
    if (conflict) return c.json({ error: conflict }, 409);
    return c.json(issue(username), 201);
  });

  app.post("/api/auth", async (c) => {
    const input = credentials.safeParse(await readJson(c.req.raw));
    const stored = input.success ? store.passwordHash(input.data.username) : null;
    if (!input.success || !stored || !await hashing.run(() => passwordMatches(input.data.password, stored))) {
      return c.json({ error: "unknown username or wrong password" }, 401);
    }
    return c.json(issue(input.data.username));
  });

  app.all("*", (c) => c.json({ error: "no such endpoint" }, 404));
  return app;
}

function credentialsSchema(allowPunycode: boolean) {
  return z.object({
    username: z.string()
      .refine(isValidName, "username must be a DNS label: a-z, 0-9, inner -")
      .refine((name) => name.length <= 40, "username must be at most 40 characters")
      .refine(
        (name) => allowPunycode || !isPunycode(name),
        "username must not start with xn-- (punycode) on this relay",
      ),
    password: z.string().min(8, "password must have at least 8 characters").max(1024),
  });
}

/**
 * The body of `request` parsed as JSON (null when it is not JSON), read as it
 * streams: 413 past {@link MAX_BODY_BYTES}, 408 past {@link BODY_TIMEOUT_MS}.
 * Content-Length is only a shortcut: a chunked body, or one that lies about
 * its length, is counted byte by byte. Up to {@link DISCARD_BYTES} are read
 * and dropped so the client gets to read its 413; past that the relay stops
 * reading and hangs up once the answer is out.
 */
async function readJson(request: Request): Promise<unknown> {
  const reader = request.body?.getReader();
  if (!reader) return null;
  const decoder = new TextDecoder();
  let size = 0, text = "";
  const readAll = async () => {
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      size += read.value.length;
      if (size > DISCARD_BYTES) throw tooLarge();
      if (size <= MAX_BODY_BYTES) text += decoder.decode(read.value, { stream: true });
    }
  };
  try {
    if (Number(request.headers.get("content-length") ?? 0) > DISCARD_BYTES) throw tooLarge();
    await withTimeout(readAll(), BODY_TIMEOUT_MS, "request body");
  } catch (error) {
    // Cancelling closes the connection after the answer; it fails only when the stream already broke.
    reader.cancel().catch(() => {});
    if (error instanceof TimeoutError) throw failure(408, "the request body took too long");
    throw error;
  }
  if (size > MAX_BODY_BYTES) throw tooLarge();
  try {
    return JSON.parse(text + decoder.decode());
  } catch {
    // Not JSON: the schema check that follows answers 400 (register) or 401 (auth).
    return null;
  }
}

function tooLarge() {
  return failure(413, `the request body is over ${MAX_BODY_BYTES} bytes`);
}

/** An error answered as JSON. */
function failure(status: 408 | 413 | 503, error: string, headers: Record<string, string> = {}) {
  return new HTTPException(status, {
    res: Response.json({ error }, { status, headers }),
  });
}

/**
 * Runs jobs at most `running` at a time, with at most `waiting` queued behind
 * them; past that a job is refused at once with 503 and `Retry-After`.
 */
class HashQueue {
  #running = 0;
  #waiting: (() => void)[] = [];

  constructor(readonly running: number, readonly waiting: number) {}

  async run<T>(job: () => Promise<T>): Promise<T> {
    if (this.#running >= this.running) {
      if (this.#waiting.length >= this.waiting) {
        throw failure(503, "the relay is busy checking passwords; try again shortly", { "retry-after": "1" });
      }
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#running++;
    }
    try {
      return await job();
    } finally {
      // The slot passes straight to the next job in line, or is given back.
      const next = this.#waiting.shift();
      if (next) next();
      else this.#running--;
    }
  }
}
