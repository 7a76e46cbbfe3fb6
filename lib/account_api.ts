/**
 * The optional sign-up API of an open relay (`--registration`): visitors make
 * an account and get a token for names under their username.
 *
 * - `POST /api/register` `{"username", "password"}` → 201 `{"token", "names"}`;
 *   409 when the username is taken, 400 when the input is not acceptable.
 * - `POST /api/auth` `{"username", "password"}` → 200 `{"token", "names"}`
 *   (a fresh token each time); 401 on bad credentials.
 * - With registration off, both answer 403.
 *
 * @example
 * ```ts
 * const api = accountApi(store, { enabled: true });
 * await api.request("/api/register", { method: "POST", body: JSON.stringify({ username: "ada", password: "correct horse" }) });
 * ```
 * @module
 */
import { Hono } from "hono";
import { getConnInfo } from "@hono/node-server/conninfo";
import { z } from "zod";
import { isValidName } from "./names.ts";
import { RateLimiter } from "./rate_limit.ts";
import type { TokenStore } from "./token_store.ts";

/** Tunnels a signed-up user's token may hold at once. */
const USER_MAX_TUNNELS = 10;
/** Requests per second one address may make to the API: enough for people, little for guessing. */
const API_RATE_PER_IP = 10;

const Credentials = z.object({
  username: z.string().refine(isValidName, "username must be a DNS label: a-z, 0-9, inner -").refine(
    (name) => name.length <= 40,
    "username must be at most 40 characters",
  ),
  password: z.string().min(8, "password must have at least 8 characters").max(1024),
});

/** The API as a Hono app, mounted by the public app on the relay's bare domain. */
export function accountApi(store: TokenStore, options: { enabled: boolean }): Hono {
  const app = new Hono();
  const perIp = new RateLimiter(API_RATE_PER_IP);
  const issue = (username: string) => {
    const names = `${username}-*`;
    const { token } = store.add({
      label: `user:${username}`,
      namePattern: names,
      maxTunnels: USER_MAX_TUNNELS,
    });
    return { token, names };
  };

  app.use(async (c, next) => {
    if (!options.enabled) return c.json({ error: "registration is not enabled on this relay" }, 403);
    if (!perIp.take(getConnInfo(c).remote.address ?? "")) return c.json({ error: "too many requests" }, 429);
    await next();
  });

  app.post("/api/register", async (c) => {
    const input = Credentials.safeParse(await c.req.json().catch(() => null));
    if (!input.success) {
      return c.json({ error: input.error.issues.map((issue) => issue.message).join("; ") }, 400);
    }
    const { username, password } = input.data;
    if (!store.addUser(username, password)) return c.json({ error: `username ${username} is taken` }, 409);
    return c.json(issue(username), 201);
  });

  app.post("/api/auth", async (c) => {
    const input = Credentials.safeParse(await c.req.json().catch(() => null));
    if (!input.success || !store.checkUser(input.data.username, input.data.password)) {
      return c.json({ error: "unknown username or wrong password" }, 401);
    }
    return c.json(issue(input.data.username));
  });

  app.all("*", (c) => c.json({ error: "no such endpoint" }, 404));
  return app;
}
