/**
 * The agent's control API: HTTP on 127.0.0.1 (4040, or the next free port),
 * JSON in and out, used by the CLI, and later by the inspector page on the
 * same address. A web page must not be able to drive it: it listens on
 * loopback only; every request needs a loopback Host (DNS rebinding); calls
 * that change anything need `Content-Type: application/json` (which a plain
 * form or `no-cors` fetch cannot send) and, when an `Origin` is sent, the
 * API's own.
 *
 * - `GET /api/status`, `GET /api/tunnels`, `GET /api/tunnels/{name}`
 * - `POST /api/tunnels` `{kind, name?, target, options?}` → 201 and the tunnel
 * - `DELETE /api/tunnels/{name}`, `POST /api/tunnels/{name}/suspend`, `…/resume`
 * - `GET /api/events?tunnel=NAME`: the agent's events as server-sent events
 *
 * Errors are `{"error": {"code", "message"}}` with the status of their code (`control.ts`).
 *
 * @example
 * ```ts
 * import type { AgentControl } from "./control.ts";
 * declare const control: AgentControl;
 * const api = serveControlApi(control, { port: 4040 });
 * console.log(api.url); // http://127.0.0.1:4040
 * await api.shutdown();
 * ```
 * @module
 */
import { z } from "zod";
import { getLogger } from "../shared/log.ts";
import { type AddTunnel, type AgentControl, ControlError } from "./control.ts";
import type { AgentEventMap, AgentEventName } from "./events.ts";

const log = getLogger(["reverprox", "api"]);

/** Ports tried after the asked one, when it is taken. */
const PORT_TRIES = 20;
/** Largest JSON body the API reads. */
const MAX_BODY_BYTES = 64 * 1024;
/** How often an idle event stream says it is still there. */
const EVENT_STREAM_PING_MS = 15_000;
/** Hosts a request to the API may name: loopback only, so a rebound DNS name is refused. */
const LOOPBACK_HOST = /^(127\.0\.0\.1|localhost|\[::1\])(:\d+)?$/i;

export interface ControlApi {
  readonly url: string;
  readonly port: number;
  shutdown(): Promise<void>;
}

/** A route: method, URL pattern, and the answer. */
export interface Route {
  method: string;
  pattern: URLPattern;
  answer: (request: Request, match: Record<string, string | undefined>) => Promise<Response> | Response;
}

const AddTunnelSchema = z.object({
  kind: z.enum(["http", "tcp"]),
  name: z.string().max(63).optional(),
  target: z.union([z.string().min(1).max(2048), z.number().int()]).transform(String),
  options: z.object({
    remotePort: z.number().int().min(1).max(65535).optional(),
    healthPath: z.string().startsWith("/").max(2048).optional(),
    debug: z.boolean().optional(),
    access: z.object({
      allow: z.array(z.string().max(64)).max(256).optional(),
      deny: z.array(z.string().max(64)).max(256).optional(),
      basicAuth: z.object({ username: z.string().max(256), passwordSha256: z.string().length(64) })
        .optional(),
    }).optional(),
  }).optional(),
});

/** The control API's routes over `control`; `extra` routes (the inspector's) are tried after these. */
export function controlRoutes(control: AgentControl): Route[] {
  const route = (method: string, pathname: string, answer: Route["answer"]): Route => ({
    method,
    pattern: new URLPattern({ pathname }),
    answer,
  });
  return [
    route("GET", "/api/status", () => Response.json(control.status())),
    route("GET", "/api/tunnels", () => Response.json(control.list())),
    route("POST", "/api/tunnels", async (request) => {
      const input = AddTunnelSchema.safeParse(await readJson(request));
      if (!input.success) {
        throw new ControlError(
          "bad_request",
          input.error.issues.map((i) => i.message).join("; "),
        );
      }
      return Response.json(await control.add(input.data as AddTunnel), { status: 201 });
    }),
    route("GET", "/api/tunnels/:name", (_request, { name }) => Response.json(tunnelNamed(control, name!))),
    route("DELETE", "/api/tunnels/:name", async (_request, { name }) => {
      await control.remove(name!);
      return new Response(null, { status: 204 });
    }),
    route(
      "POST",
      "/api/tunnels/:name/suspend",
      async (_r, { name }) => Response.json(await control.suspend(name!)),
    ),
    route(
      "POST",
      "/api/tunnels/:name/resume",
      async (_r, { name }) => Response.json(await control.resume(name!)),
    ),
    route(
      "GET",
      "/api/events",
      (request) => eventStream(control, new URL(request.url).searchParams.get("tunnel")),
    ),
  ];
}

/** Serves `routes` on loopback at `port` (or the next free one); the guard runs before any route. */
export function serveControlApi(
  control: AgentControl,
  options: { port: number; extraRoutes?: Route[] },
): ControlApi {
  const routes = [...controlRoutes(control), ...(options.extraRoutes ?? [])];
  const handler = (request: Request) => answer(request, routes);
  for (let port = options.port, tries = 0;; port++, tries++) {
    try {
      const server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, handler);
      const bound = server.addr.port;
      return { url: `http://127.0.0.1:${bound}`, port: bound, shutdown: () => server.shutdown() };
    } catch (error) {
      if (!(error instanceof Deno.errors.AddrInUse) || options.port === 0 || tries === PORT_TRIES) {
        throw error;
      }
    }
  }
}

async function answer(request: Request, routes: Route[]): Promise<Response> {
  try {
    guard(request);
    const url = new URL(request.url);
    const matching = routes.filter((route) => route.pattern.test(url));
    const route = matching.find((candidate) => candidate.method === request.method);
    if (!route) {
      if (matching.length) {
        throw new ControlError("method_not_allowed", `${request.method} is not allowed here`);
      }
      throw new ControlError("not_found", `no such endpoint: ${url.pathname}`);
    }
    return await route.answer(request, route.pattern.exec(url)!.pathname.groups);
  } catch (error) {
    if (error instanceof ControlError) {
      return Response.json({ error: { code: error.code, message: error.message } }, { status: error.status });
    }
    log.error("control API: {method} {url} failed: {error}", { ...request, error: String(error) });
    return Response.json({ error: { code: "internal", message: String(error) } }, { status: 500 });
  }
}

/** Refuses what a web page could send: a foreign Host, and for changes a non-JSON body or a foreign Origin. */
export function guard(request: Request): void {
  const host = request.headers.get("host") ?? "";
  if (!LOOPBACK_HOST.test(host)) {
    throw new ControlError("forbidden_host", `Host ${host || "(none)"} is not this agent's; use 127.0.0.1`);
  }
  if (request.method === "GET" || request.method === "HEAD") return;
  const type = request.headers.get("content-type") ?? "";
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    throw new ControlError("unsupported_media_type", "changes need Content-Type: application/json");
  }
  const origin = request.headers.get("origin");
  if (origin !== null && origin !== `http://${host}`) {
    throw new ControlError("forbidden_origin", `requests from ${origin} may not drive this agent`);
  }
}

/** The request's JSON body, at most {@link MAX_BODY_BYTES}; an empty body is `{}`. */
export async function readJson(request: Request): Promise<unknown> {
  const declared = Number(request.headers.get("content-length") ?? 0);
  if (declared > MAX_BODY_BYTES) {
    throw new ControlError("body_too_large", `bodies are at most ${MAX_BODY_BYTES} bytes`);
  }
  const text = await request.text();
  if (text.length > MAX_BODY_BYTES) {
    throw new ControlError("body_too_large", `bodies are at most ${MAX_BODY_BYTES} bytes`);
  }
  if (!text.trim()) return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new ControlError("bad_request", "the body is not JSON");
  }
}

function tunnelNamed(control: AgentControl, name: string) {
  const tunnel = control.list().find((view) => view.name === name);
  if (!tunnel) throw new ControlError("unknown_tunnel", `no tunnel named "${name}"`);
  return tunnel;
}

/** Events a client may follow (body bytes are the inspector's, and binary). */
const STREAMED_EVENTS: AgentEventName[] = [
  "online",
  "reconnecting",
  "offline",
  "tunnel-added",
  "tunnel-removed",
  "tunnel-state",
  "request-started",
  "response-head",
  "request-done",
  "ws-message",
  "origin-down",
  "origin-up",
];

/** An event as JSON: a WebSocket message's bytes are left out (the inspector has them), its size kept. */
function eventJson(name: AgentEventName, event: object): string {
  if (name !== "ws-message") return JSON.stringify(event);
  const { data, ...rest } = event as AgentEventMap["ws-message"];
  return JSON.stringify({ ...rest, size: data.length });
}

/** The agent's events as server-sent events; with `tunnel`, only those about that tunnel. */
function eventStream(control: AgentControl, tunnel: string | null): Response {
  const encoder = new TextEncoder();
  let stop = () => {};
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      const send = (text: string) => controller.enqueue(encoder.encode(text));
      const offs = STREAMED_EVENTS.map((name) =>
        control.events.on(name, (event: AgentEventMap[typeof name]) => {
          if (tunnel && !concerns(event, tunnel)) return;
          send(`event: ${name}\ndata: ${eventJson(name, event)}\n\n`);
        })
      );
      const ping = setInterval(() => send(": still here\n\n"), EVENT_STREAM_PING_MS);
      stop = () => {
        clearInterval(ping);
        for (const off of offs) off();
      };
      send(": events of reverprox agent\n\n");
    },
    cancel: () => stop(),
  });
  return new Response(body, {
    headers: { "content-type": "text/event-stream", "cache-control": "no-store" },
  });
}

/** Whether an event is about `tunnel` (events about the whole agent are about every tunnel). */
function concerns(event: object, tunnel: string): boolean {
  const named = (event as { tunnel?: string; name?: string }).tunnel ?? (event as { name?: string }).name;
  return named === undefined || named === tunnel;
}
