/**
 * The inspector's API and page, on the agent's API address (same protections
 * as the control API, `api.ts`):
 *
 * - `GET /api/requests?text=&method=&status=&minMs=&maxMs=&tunnel=`: summaries, newest first
 * - `GET /api/requests/{id}`: heads, bodies (kind, text, base64), timings, messages, events
 * - `GET /api/requests/{id}/body/request|response`: a captured body's bytes, with its type
 * - `GET /api/requests/{id}/curl`: the request as a curl command
 * - `POST /api/requests/{id}/replay` `{method?, path?, headers?, body?, bodyBase64?}`: replay it (edited)
 * - `GET /api/requests.har`: HAR 1.2; `DELETE /api/requests`: forget them
 * - `GET /`: the page (`ui/`), which uses only these and the live feed `GET /api/events`
 *
 * @example
 * ```ts
 * import type { Agent } from "../agent.ts";
 * import { InspectorStore } from "./store.ts";
 * declare const agent: Agent;
 * const store = new InspectorStore(agent.events, { maxEntries: 500, maxBodyBytes: 1 << 20 });
 * const routes = inspectorRoutes({ store, agent, originTimeoutMs: 60_000 });
 * ```
 * @module
 */
import { z } from "zod";
import type { Agent } from "../agent.ts";
import { readJson, type Route } from "../api.ts";
import { ControlError } from "../control.ts";
import { replay } from "./replay.ts";
import type { InspectorStore } from "./store.ts";
import { curlCommand, detail, har, summary } from "./views.ts";

const ReplaySchema = z.object({
  method: z.string().regex(/^[A-Za-z]{1,32}$/).optional(),
  path: z.string().startsWith("/").max(8192).optional(),
  headers: z.array(z.tuple([z.string().min(1).max(256), z.string().max(8192)])).max(256).optional(),
  body: z.string().optional(),
  bodyBase64: z.string().optional(),
});

const UI_FILES: Record<string, string> = {
  "/": "index.html",
  "/ui/app.js": "app.js",
  "/ui/style.css": "style.css",
};
const UI_TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
};

export interface InspectorDeps {
  store: InspectorStore;
  agent: Agent;
  originTimeoutMs: number;
}

export function inspectorRoutes(deps: InspectorDeps): Route[] {
  const { store } = deps;
  const route = (method: string, pathname: string, answer: Route["answer"]): Route => ({
    method,
    pattern: new URLPattern({ pathname }),
    answer,
  });
  const entry = (id: string | undefined) => {
    const found = store.get(id ?? "");
    if (!found) {
      throw new ControlError(
        "not_found",
        `no request ${id} (the inspector keeps the last ${store.limits.maxEntries})`,
      );
    }
    return found;
  };
  const publicUrl = (tunnel: string) =>
    deps.agent.tunnels.find((t) => t.name === tunnel)?.grant?.url ?? `http://${tunnel}`;
  return [
    route(
      "GET",
      "/api/requests",
      (request) => Response.json(listing(store, new URL(request.url).searchParams)),
    ),
    route("DELETE", "/api/requests", () => (store.clear(), new Response(null, { status: 204 }))),
    route("GET", "/api/requests.har", () =>
      Response.json(har(store.list().reverse(), publicUrl), {
        headers: { "content-disposition": 'attachment; filename="reverprox.har"' },
      })),
    route("GET", "/api/requests/:id", (_r, { id }) => Response.json(detail(entry(id)))),
    route("GET", "/api/requests/:id/curl", (_r, { id }) => {
      const found = entry(id);
      return new Response(curlCommand(found, publicUrl(found.tunnel)) + "\n", {
        headers: { "content-type": "text/plain" },
      });
    }),
    route("GET", "/api/requests/:id/body/:side", (_r, { id, side }) => rawBody(entry(id), side!)),
    route("POST", "/api/requests/:id/replay", async (request, { id }) => {
      const original = entry(id);
      const changes = ReplaySchema.safeParse(await readJson(request));
      if (!changes.success) {
        throw new ControlError(
          "bad_request",
          changes.error.issues.map((i) => i.message).join("; "),
        );
      }
      const tunnel = deps.agent.tunnels.find((t) => t.name === original.tunnel);
      if (!tunnel) throw new ControlError("unknown_tunnel", `tunnel "${original.tunnel}" is gone`);
      const replayed = await replay(original, tunnel, changes.data, { events: deps.agent.events, ...deps });
      return Response.json(summary(entry(replayed)), { status: 201 });
    }),
    ...Object.keys(UI_FILES).map((path) =>
      route("GET", path, () => uiFile(new URL(`./ui/${UI_FILES[path]}`, import.meta.url)))
    ),
    route("GET", "/ui/preact-htm.js", () => uiFile(PREACT_HTM)),
  ];
}

function listing(store: InspectorStore, query: URLSearchParams) {
  const number = (name: string) => query.has(name) ? Number(query.get(name)) : undefined;
  const entries = store.list({
    text: query.get("text") ?? undefined,
    method: query.get("method") ?? undefined,
    status: query.get("status") ?? undefined,
    minMs: number("minMs"),
    maxMs: number("maxMs"),
    tunnel: query.get("tunnel") ?? undefined,
  });
  return { requests: entries.map(summary), dropped: store.dropped, limits: store.limits };
}

function rawBody(found: ReturnType<InspectorStore["get"]> & object, side: string): Response {
  if (side !== "request" && side !== "response") {
    throw new ControlError("not_found", "bodies are request or response");
  }
  const headers = side === "request" ? found.requestHeaders : found.responseHeaders ?? [];
  const type = headers.find(([name]) => name.toLowerCase() === "content-type")?.[1] ??
    "application/octet-stream";
  const bytes = (side === "request" ? found.requestBody : found.responseBody).bytes();
  return new Response(bytes, { headers: { "content-type": type, "x-content-type-options": "nosniff" } });
}

/** Preact with htm in one module (no build step), from the `htm` package. */
const PREACT_HTM = new URL("../../../node_modules/htm/preact/standalone.module.js", import.meta.url);

async function uiFile(file: URL): Promise<Response> {
  const text = await Deno.readFile(file);
  return new Response(text, {
    headers: {
      "content-type": UI_TYPES[file.pathname.split(".").pop()!],
      "cache-control": "no-cache",
      // The page runs only its own scripts, and cannot be framed by another site.
      "content-security-policy":
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    },
  });
}
