/**
 * The inspector page: a live list of the agent's requests (newest first, with
 * filters) and the selected one in detail, with replay, edit-and-replay and
 * exports. It uses only the inspector's API (`../routes.ts`) and the live feed
 * `GET /api/events`. No build step: preact with htm, served by the agent.
 *
 * Keys: j/k or ↑/↓ move through the list, Enter or Space opens a row, `/`
 * goes to the filter, `r` replays, `e` edits and replays, Esc closes the form.
 */
import { html, render, useEffect, useLayoutEffect, useRef, useState } from "/ui/preact-htm.js";

/** How often, at most, the list is fetched again while events pour in. */
const LIST_REFRESH_MS = 250;
/** How often an entry still under way (a stream, a WebSocket) is fetched again. */
const LIVE_ENTRY_MS = 1000;
/** Bytes of a binary body shown as hex; the rest is in the raw body. */
const HEX_BYTES = 4096;
const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
const NO_FILTERS = { text: "", method: "", status: "", minMs: "", maxMs: "" };

// ---- The API ----

/** Calls the API; an error answer becomes an Error with the API's message. */
async function api(path, init = {}) {
  const response = await fetch(path, init);
  if (!response.ok) {
    const answer = await response.json().catch(() => null);
    throw new Error(answer?.error?.message ?? `${path}: ${response.status}`);
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") ?? "";
  return type.includes("json") ? response.json() : response.text();
}

/** A change: the API's guard wants JSON (which a plain form from another site cannot send). */
const change = (path, method, body = {}) =>
  api(path, { method, headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

function listQuery(filters) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(filters)) if (value.trim()) query.set(name, value.trim());
  const text = query.toString();
  return text ? `/api/requests?${text}` : "/api/requests";
}

/** Runs `fn` at most once per `ms`, the last call always honoured. */
function throttled(fn, ms) {
  let timer = null;
  let again = false;
  const run = () => {
    if (timer) return void (again = true);
    fn();
    timer = setTimeout(() => {
      timer = null;
      if (again) (again = false, run());
    }, ms);
  };
  return run;
}

// ---- Formatting ----

const thousands = (n) => n.toLocaleString("en-US");
const duration = (ms) =>
  ms === null
    ? "…"
    : ms < 10
    ? `${ms.toFixed(1)} ms`
    : ms < 1000
    ? `${Math.round(ms)} ms`
    : `${(ms / 1000).toFixed(2)} s`;
function size(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
const clock = (iso) =>
  new Date(iso).toLocaleTimeString("en-GB", {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    fractionalSecondDigits: 3,
  });
const statusClass = (status) => status === null ? "pending" : `s${String(status)[0]}xx`;

function bytesOf(base64) {
  const raw = atob(base64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/** Offset, sixteen bytes in hex, and those that are printable, per line. */
function hexDump(bytes) {
  const lines = [];
  for (let at = 0; at < bytes.length; at += 16) {
    const row = [...bytes.subarray(at, at + 16)];
    const hex = row.map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = row.map((b) => b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".").join("");
    lines.push(`${at.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${ascii}`);
  }
  return lines.join("\n");
}

/** JSON indented by two spaces, but short lists of numbers and strings (header pairs) on one line. */
function indentJson(value, indent = "") {
  const inner = indent + "  ";
  if (Array.isArray(value)) {
    const flat = `[${value.map((item) => JSON.stringify(item)).join(", ")}]`;
    if (value.every((item) => item === null || typeof item !== "object") && flat.length <= 80) return flat;
    if (!value.length) return "[]";
    return `[\n${value.map((item) => inner + indentJson(item, inner)).join(",\n")}\n${indent}]`;
  }
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  const keys = Object.keys(value);
  if (!keys.length) return "{}";
  const lines = keys.map((key) => `${inner}${JSON.stringify(key)}: ${indentJson(value[key], inner)}`);
  return `{\n${lines.join(",\n")}\n${indent}}`;
}

/** Pretty JSON with its keys, strings and literals in spans; text as it is when it does not parse (cut). */
function prettyJson(text) {
  let pretty;
  try {
    pretty = indentJson(JSON.parse(text));
  } catch {
    // A truncated capture is not whole JSON: shown as the text it is.
    return text;
  }
  const token = /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false|null)\b|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
  const parts = [];
  let last = 0;
  for (const match of pretty.matchAll(token)) {
    parts.push(pretty.slice(last, match.index));
    const kind = match[2] ? "key" : match[1] ? "str" : match[3] ? "lit" : "num";
    parts.push(html`<span class=${`j-${kind}`}>${match[1] ?? match[0]}</span>${match[2] ?? ""}`);
    last = match.index + match[0].length;
  }
  parts.push(pretty.slice(last));
  return parts;
}

// ---- Live data ----

/**
 * Follows the agent's events: `onEvent(data)` for each, `onEvent({})` when the feed (re)opens, since
 * what happened while it was down was not told. The latest `onEvent` given is the one called.
 */
function useLiveFeed(onEvent) {
  const latest = useRef(onEvent);
  latest.current = onEvent;
  const [live, setLive] = useState(false);
  useEffect(() => {
    const source = new EventSource("/api/events");
    source.onopen = () => (setLive(true), latest.current({}));
    // EventSource reconnects by itself; meanwhile the page says it is not live.
    source.onerror = () => setLive(false);
    const names = ["request-started", "response-head", "request-done", "ws-message", "online"];
    for (const name of names) {
      source.addEventListener(name, (event) => latest.current(JSON.parse(event.data)));
    }
    return () => source.close();
  }, []);
  return live;
}

/** The list under `filters`, fetched again when asked (throttled); answers out of order are dropped. */
function useRequestList(filters, onError) {
  const [listing, setListing] = useState({ requests: [], dropped: 0, limits: null, loaded: false });
  const filtersRef = useRef(filters);
  filtersRef.current = filters;
  const asked = useRef(0);
  const refresh = useRef(null);
  if (!refresh.current) {
    refresh.current = throttled(async () => {
      const mine = ++asked.current;
      try {
        const answer = await api(listQuery(filtersRef.current));
        if (mine === asked.current) setListing({ ...answer, loaded: true });
      } catch (error) {
        onError(error.message);
      }
    }, LIST_REFRESH_MS);
  }
  useEffect(() => refresh.current(), [JSON.stringify(filters)]);
  return [listing, refresh.current];
}

/** The selected entry in full, fetched again on `refresh` and every second while it is under way. */
function useEntry(id) {
  const [entry, setEntry] = useState(null);
  const [missing, setMissing] = useState(null);
  const current = useRef(id);
  current.current = id;
  const load = useRef(async () => {
    const wanted = current.current;
    if (wanted === null) return;
    try {
      const answer = await api(`/api/requests/${wanted}`);
      if (wanted === current.current) (setEntry(answer), setMissing(null));
    } catch (error) {
      if (wanted === current.current) (setEntry(null), setMissing(error.message));
    }
  });
  useEffect(() => {
    setEntry(null);
    setMissing(null);
    load.current();
  }, [id]);
  useEffect(() => {
    if (!entry || entry.durationMs !== null) return;
    const timer = setTimeout(load.current, LIVE_ENTRY_MS);
    return () => clearTimeout(timer);
  }, [entry]);
  return { entry, missing, reload: load.current };
}

// ---- The page ----

function App() {
  const [filters, setFilters] = useState(NO_FILTERS);
  const [selected, setSelected] = useState(null);
  const [editing, setEditing] = useState(false);
  const [notice, setNotice] = useState("");
  const [listing, refreshList] = useRequestList(filters, setNotice);
  const { entry, missing, reload } = useEntry(selected);
  const selectedRef = useRef(selected);
  selectedRef.current = selected;
  const reloadEntry = useRef(null);
  reloadEntry.current ??= throttled(() => reload(), LIST_REFRESH_MS);
  const live = useLiveFeed((data) => {
    refreshList();
    if (data.id !== undefined && data.id === selectedRef.current) reloadEntry.current();
  });
  // A row to focus once it is in the list (a replay's new row comes with the next listing).
  const focusWanted = useRef(null);
  const open = (id, focus = false) => {
    setSelected(id);
    setEditing(false);
    if (focus) focusWanted.current = id;
  };
  // At once after the render, not after the paint: the next key goes to the row just moved to.
  useLayoutEffect(() => {
    const row = focusWanted.current && document.getElementById(`row-${focusWanted.current}`);
    if (row) (row.focus(), focusWanted.current = null);
  }, [listing, selected]);
  const move = (delta) => {
    const ids = listing.requests.map((r) => r.id);
    if (!ids.length) return;
    const at = ids.indexOf(selected);
    const next = at === -1 ? 0 : Math.min(ids.length - 1, Math.max(0, at + delta));
    open(ids[next], true);
  };
  const actions = {
    replay: async (changes = {}) => {
      try {
        const replayed = await change(`/api/requests/${selected}/replay`, "POST", changes);
        setNotice(`#${selected} replayed as #${replayed.id}: ${replayed.status ?? "no answer"}`);
        refreshList();
        open(replayed.id, true);
      } catch (error) {
        setNotice(`replay failed: ${error.message}`);
      }
    },
    clear: async () => {
      if (!confirm("Forget every request the inspector keeps?")) return;
      await change("/api/requests", "DELETE").catch((error) => setNotice(error.message));
      setSelected(null);
      refreshList();
    },
  };
  useGlobalKeys({ move, entry, actions, setEditing });
  return html`
    <${Header} live=${live} listing=${listing} onClear=${actions.clear} />
    <${Filters} filters=${filters} onChange=${setFilters} />
    <p class="notice" role="status" aria-live="polite">${notice}</p>
    <main>
      <${RequestList} listing=${listing} selected=${selected} onOpen=${open} onMove=${move} />
      <section class="detail" aria-label="Request detail">
        ${entry
          ? html`
            <${Detail} entry=${entry} editing=${editing} setEditing=${setEditing} actions=${actions}
              notify=${setNotice} />
          `
          : html`<p class="empty">${
            missing ?? (selected ? "Loading…" : "Select a request to see it here.")
          }</p>`}
      </section>
    </main>
  `;
}

/** Keys that work anywhere but in a form field: j/k move, `/` filters, r replays, e edits. */
function useGlobalKeys({ move, entry, actions, setEditing }) {
  const latest = useRef(null);
  latest.current = { move, entry, actions, setEditing };
  useEffect(() => {
    const onKey = (event) => {
      const { move, entry, actions, setEditing } = latest.current;
      if (event.key === "Escape") return setEditing(false);
      // The list handles its own keys first (j/k there move the focus too).
      if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.target.closest("input, textarea, select")) return;
      const keys = {
        j: () => move(1),
        k: () => move(-1),
        "/": () => document.getElementById("filter-text").focus(),
        r: () => entry && !entry.websocket && actions.replay(),
        e: () => entry && !entry.websocket && setEditing(true),
      };
      if (!keys[event.key]) return;
      event.preventDefault();
      keys[event.key]();
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, []);
}

function Header({ live, listing, onClear }) {
  const { limits, dropped, requests } = listing;
  return html`
    <header>
      <h1>reverprox <span>inspector</span></h1>
      <span class=${live ? "live on" : "live"} title="Live feed from the agent">${live
        ? "live"
        : "reconnecting…"}</span>
      <p class="counts">
        ${requests.length} shown${limits
          ? ` · keeps the last ${thousands(limits.maxEntries)}, ${size(limits.maxBodyBytes)} per body`
          : ""}${dropped
          ? html`
            · <strong class="dropped">${thousands(dropped)} older dropped</strong>
          `
          : ""}
      </p>
      <nav class="exports">
        <a class="button" href="/api/requests.har" download="reverprox.har">Download HAR</a>
        <button type="button" onClick=${onClear}>Clear</button>
      </nav>
    </header>
  `;
}

function Filters({ filters, onChange }) {
  const [draft, setDraft] = useState(filters);
  useEffect(() => {
    // Typing settles before the list is asked for again.
    const timer = setTimeout(() => onChange(draft), 200);
    return () => clearTimeout(timer);
  }, [JSON.stringify(draft)]);
  const field = (name) => ({
    value: draft[name],
    onInput: (event) => {
      const value = event.currentTarget.value;
      setDraft((now) => ({ ...now, [name]: value }));
    },
  });
  return html`
    <form class="filters" role="search" onSubmit=${(event) => event.preventDefault()}>
      <label class="grow">Filter <input id="filter-text" type="search" placeholder="path, header, status… ( / )"
        ...${field("text")} /></label>
      <label>Method <select ...${field("method")}>
        <option value="">any</option>
        ${METHODS.map((method) => html`<option value=${method}>${method}</option>`)}
      </select></label>
      <label>Status <input class="short" placeholder="4xx, 404…" list="status-ranges"
        ...${field("status")} /></label>
      <datalist id="status-ranges">${["2xx", "3xx", "4xx", "5xx"].map((s) =>
        html`<option value=${s} />`
      )}</datalist>
      <label>Min ms <input class="tiny" type="number" min="0" ...${field("minMs")} /></label>
      <label>Max ms <input class="tiny" type="number" min="0" ...${field("maxMs")} /></label>
    </form>
  `;
}

function RequestList({ listing, selected, onOpen, onMove }) {
  const { requests, loaded } = listing;
  const onKeyDown = (event) => {
    const row = event.target.closest("[role=option]");
    const steps = { ArrowDown: 1, j: 1, ArrowUp: -1, k: -1, Home: -Infinity, End: Infinity };
    if (event.key in steps) {
      event.preventDefault();
      onMove(steps[event.key]);
    } else if ((event.key === "Enter" || event.key === " ") && row) {
      event.preventDefault();
      onOpen(row.dataset.id, true);
    }
  };
  if (!requests.length) {
    return html`
      <section class="list">
        <p class="empty">${loaded ? "No requests yet: visit the tunnel's URL." : "Loading…"}</p>
      </section>
    `;
  }
  const focusable = requests.some((r) => r.id === selected) ? selected : requests[0].id;
  return html`
    <section class="list">
      <ul role="listbox" aria-label="Requests, newest first" onKeyDown=${onKeyDown}>
        ${requests.map((r) =>
          html`
            <${Row} key=${r.id} request=${r} selected=${r.id === selected}
              focusable=${r.id === focusable} onOpen=${onOpen} />
          `
        )}
      </ul>
    </section>
  `;
}

function Row({ request: r, selected, focusable, onOpen }) {
  return html`
    <li role="option" id=${`row-${r.id}`} data-id=${r.id} aria-selected=${selected} tabindex=${focusable
      ? 0
      : -1}
      class=${selected ? "row selected" : "row"} onClick=${() => onOpen(r.id, true)}>
      <span class=${`status ${statusClass(r.status)}`}>${r.error ? "ERR" : r.status ?? "…"}</span>
      <span class="method">${r.method}</span>
      <span class="target" title=${r.target}>${r.target}</span>
      <span class="duration">${duration(r.durationMs)}</span>
      <span class="meta">
        <span class="id">#${r.id}</span>
        <time>${clock(r.startedAt)}</time>
        <span>${size(r.responseBytes)}</span>
        ${r.websocket ? html`<span class="tag">WebSocket</span>` : ""}
        ${r.sse ? html`<span class="tag">SSE</span>` : ""}
        ${r.replayOf ? html`<span class="tag replay">replay of #${r.replayOf}</span>` : ""}
        ${r.error ? html`<span class="tag error">${r.error.code}</span>` : ""}
      </span>
    </li>
  `;
}

// ---- One request ----

function Detail({ entry, editing, setEditing, actions, notify }) {
  const [curl, setCurl] = useState(null);
  useEffect(() => setCurl(null), [entry.id]);
  const copyCurl = async () => {
    try {
      const command = (await api(`/api/requests/${entry.id}/curl`)).trim();
      setCurl(command);
      await navigator.clipboard.writeText(command);
      notify("curl command copied");
    } catch (error) {
      // No clipboard (permission, old browser): the command is shown to copy by hand.
      notify(`curl command below (${error.message})`);
    }
  };
  return html`
    <header class="detail-head">
      <h2 tabindex="-1">
        <span class=${`status ${statusClass(entry.status)}`}>${entry.status ?? "…"}</span>
        ${" "}${entry.method} <span class="target">${entry.target}</span>
      </h2>
      ${entry.replayOf ? html`<p class="replay-note">replay of #${entry.replayOf}</p>` : ""}
      ${entry.error ? html`<p class="error">${entry.error.code}: ${entry.error.message}</p>` : ""}
      <div class="actions">
        ${entry.websocket ? html`<span class="hint">WebSockets cannot be replayed</span>` : html`
          <button type="button" onClick=${() => actions.replay()} title="r">Replay</button>
          <button type="button" onClick=${() => setEditing(!editing)} aria-expanded=${editing} title="e">
            Edit and replay</button>
        `}
        <button type="button" onClick=${copyCurl}>Copy as curl</button>
      </div>
      ${curl ? html`<pre class="curl" aria-label="curl command">${curl}</pre>` : ""}
    </header>
    ${editing
      ? html`<${EditReplay} entry=${entry} onSend=${actions.replay} onCancel=${() => setEditing(false)} />`
      : ""}
    <${Facts} entry=${entry} />
    ${entry.websocket ? html`<${Messages} entry=${entry} />` : ""}
    ${entry.sse ? html`<${Events} entry=${entry} />` : ""}
    <${Side} title="Request" id=${entry.id} side="request" headers=${entry.requestHeaders} body=${entry
      .requestBody} />
    <${Side} title="Response" id=${entry.id} side="response" headers=${entry.responseHeaders ?? []}
      body=${entry.responseBody} />
  `;
}

/** When, from where, how big, and how long: at the relay, at the origin, in all. */
function Facts({ entry }) {
  const t = entry.timings;
  const relay = t.relayToAgentMs ?? 0;
  // Until it ends (an open WebSocket, a stream), the origin's answer is the longest part known.
  const whole = relay + Math.max(t.totalMs ?? 0, t.originMs ?? 0);
  const share = (ms) => whole > 0 ? `${(Math.max(0, ms) / whole) * 100}%` : "0";
  const ms = (value) => value === null ? "–" : duration(value);
  return html`
    <dl class="facts">
      <div>
        <dt>At</dt>
        <dd>${new Date(entry.startedAt).toLocaleString("en-GB")}</dd>
      </div>
      <div>
        <dt>Visitor</dt>
        <dd>${entry.remoteAddr}</dd>
      </div>
      <div>
        <dt>Tunnel</dt>
        <dd>${entry.tunnel}</dd>
      </div>
      <div>
        <dt>Sizes</dt>
        <dd>↑ ${size(entry.requestBody.size)} · ↓ ${size(entry.responseBody.size)}</dd>
      </div>
    </dl>
    <dl class="facts timings">
      <div>
        <dt><i class="t-relay"></i>Relay → agent</dt>
        <dd>${ms(t.relayToAgentMs)}</dd>
      </div>
      <div>
        <dt><i class="t-origin"></i>Origin's answer</dt>
        <dd>${ms(t.originMs)}</dd>
      </div>
      <div>
        <dt><i class="t-body"></i>Total at the agent</dt>
        <dd>${ms(t.totalMs)}</dd>
      </div>
    </dl>
    <div class="timeline" aria-hidden="true">
      <span class="t-relay" style=${{ width: share(relay) }}></span>
      <span class="t-origin" style=${{ width: share(t.originMs ?? 0) }}></span>
      <span class="t-body" style=${{ width: share((t.totalMs ?? 0) - (t.originMs ?? 0)) }}></span>
    </div>
  `;
}

function Side({ title, id, side, headers, body }) {
  return html`
    <section class="side" aria-label=${title}>
      <h3>${title}</h3>
      ${headers.length
        ? html`
          <table class="headers">
            <tbody>${headers.map(([name, value]) =>
              html`
                <tr>
                  <th scope="row">${name}</th>
                  <td>${value}</td>
                </tr>
              `
            )}</tbody>
          </table>
        `
        : html`<p class="empty">No headers (yet).</p>`}
      <${Body} body=${body} raw=${`/api/requests/${id}/body/${side}`} />
    </section>
  `;
}

/** A body as what it is: JSON pretty, a form as a table, text, an image, or hex. */
function Body({ body, raw }) {
  const note = body.truncated
    ? html`<p class="truncated">captured ${thousands(body.captured)} of ${thousands(body.size)} bytes
        (the inspector keeps the first part of each body)</p>`
    : "";
  const label = html`
    <p
      class="body-kind">${body.kind} · ${body.contentType ?? "no content type"} · ${size(
        body.size,
      )} · <a href=${raw} target="_blank" rel="noopener">raw</a></p>
  `;
  if (body.kind === "empty") return html`<p class="empty">No body.</p>`;
  return html`${label}${note}${bodyView(body)}`;
}

function bodyView(body) {
  switch (body.kind) {
    case "json":
      return html`<pre class="body json">${prettyJson(body.text)}</pre>`;
    case "form":
      return html`
        <table class="form">
          <thead>
            <tr>
              <th>Field</th>
              <th>Value</th>
            </tr>
          </thead>
          <tbody>${[...new URLSearchParams(body.text)].map(([name, value]) =>
            html`
              <tr>
                <td>${name}</td>
                <td>${value}</td>
              </tr>
            `
          )}</tbody>
        </table>
      `;
    case "image":
      return html`
        <img class="body image" alt="the body, as an image"
          src=${`data:${body.contentType};base64,${body.base64}`} />
      `;
    case "binary": {
      const bytes = bytesOf(body.base64);
      const more = bytes.length > HEX_BYTES
        ? html`<p class="hint">first ${thousands(HEX_BYTES)} bytes</p>`
        : "";
      return html`${more}<pre class="body hex">${hexDump(bytes.subarray(0, HEX_BYTES))}</pre>`;
    }
    default:
      return html`<pre class="body text">${body.text}</pre>`;
  }
}

function Messages({ entry }) {
  const dropped = entry.droppedMessages
    ? html`<p class="truncated">${thousands(entry.droppedMessages)} later messages not kept</p>`
    : "";
  return html`
    <section class="side" aria-label="WebSocket messages">
      <h3>WebSocket messages (${entry.messages.length})</h3>
      ${dropped}
      ${entry.messages.length
        ? html`
          <table class="stream messages">
            <thead>
              <tr>
                <th>Time</th>
                <th>Way</th>
                <th>Size</th>
                <th>Data</th>
              </tr>
            </thead>
            <tbody>${entry.messages.map((m) => html`<${Message} message=${m} />`)}</tbody>
          </table>
        `
        : html`<p class="empty">No messages yet.</p>`}
    </section>
  `;
}

function Message({ message: m }) {
  const way = m.direction === "in"
    ? html`<span class="in" title="visitor → origin">→ in</span>`
    : html`<span class="out" title="origin → visitor">← out</span>`;
  const data = m.binary ? hexDump(bytesOf(m.base64).subarray(0, 256)) : m.text;
  return html`
    <tr class=${`msg ${m.direction}`}>
      <td><time>${clock(m.at)}</time></td>
      <td>${way}</td>
      <td>${size(m.size)}${m.truncated ? " (cut)" : ""}${m.binary ? " binary" : ""}</td>
      <td>
        <pre>${data}</pre>
      </td>
    </tr>
  `;
}

function Events({ entry }) {
  const streaming = entry.durationMs === null
    ? html`
      <span class="tag">streaming</span>
    `
    : "";
  return html`
    <section class="side" aria-label="Server-sent events">
      <h3>Server-sent events (${entry.events.length})${streaming}</h3>
      ${entry.events.length
        ? html`
          <table class="stream events">
            <thead>
              <tr>
                <th>Time</th>
                <th>Event</th>
                <th>Id</th>
                <th>Data</th>
              </tr>
            </thead>
            <tbody>${entry.events.map((e) =>
              html`
                <tr>
                  <td><time>${clock(e.at)}</time></td>
                  <td>${e.event}</td>
                  <td>${e.id ?? ""}</td>
                  <td>
                    <pre>${e.data}</pre>
                  </td>
                </tr>
              `
            )}</tbody>
          </table>
        `
        : html`<p class="empty">No events yet.</p>`}
    </section>
  `;
}

/** "Name: value" lines as header pairs; a line without a colon is an error that names it. */
function parseHeaderLines(text) {
  const pairs = [];
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const colon = line.indexOf(":");
    if (colon < 1) throw new Error(`"${line}" is not a header (Name: value)`);
    pairs.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  }
  return pairs;
}

function EditReplay({ entry, onSend, onCancel }) {
  const { kind, truncated, captured, size: whole } = entry.requestBody;
  // A binary body cannot be edited as text, and a cut one is not all there: neither is shown.
  const hidden = kind === "binary" || truncated;
  const bodyNote = truncated
    ? ` (only ${thousands(captured)} of ${thousands(whole)} bytes were kept: write the body to send)`
    : kind === "binary"
    ? " (binary: left empty, the body is sent as it was)"
    : "";
  const [form, setForm] = useState({
    method: entry.method,
    path: entry.target,
    headers: entry.requestHeaders.map(([name, value]) => `${name}: ${value}`).join("\n"),
    body: hidden ? "" : entry.requestBody.text ?? "",
  });
  const [error, setError] = useState("");
  const first = useRef(null);
  useEffect(() => first.current?.focus(), []);
  const field = (name) => ({
    name,
    value: form[name],
    onInput: (event) => {
      const value = event.currentTarget.value;
      setForm((now) => ({ ...now, [name]: value }));
    },
  });
  const submit = (event) => {
    event.preventDefault();
    try {
      const changes = { method: form.method, path: form.path, headers: parseHeaderLines(form.headers) };
      // Left empty, a hidden body is not sent: the API replays it as it was (or says it was cut).
      if (!hidden || form.body) changes.body = form.body;
      setError("");
      onSend(changes);
    } catch (problem) {
      setError(problem.message);
    }
  };
  return html`
    <form class="edit" aria-label="Edit and replay" onSubmit=${submit}>
      <div class="edit-line">
        <label>Method <input ref=${first} class="short" required pattern="[A-Za-z]+" ...${field(
          "method",
        )} /></label>
        <label class="grow">Path <input required pattern="/.*" ...${field("path")} /></label>
      </div>
      <label>Headers, one "Name: value" per line
        <textarea rows="6" spellcheck="false" ...${field("headers")}></textarea></label>
      <label>Body${bodyNote}
        <textarea rows="6" spellcheck="false" ...${field("body")}></textarea></label>
      ${error ? html`<p class="error" role="alert">${error}</p>` : ""}
      <div class="actions">
        <button type="submit" class="primary">Send</button>
        <button type="button" onClick=${onCancel}>Cancel</button>
      </div>
    </form>
  `;
}

render(html`<${App} />`, document.getElementById("app"));
