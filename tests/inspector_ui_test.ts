/**
 * The inspector page in a real browser: Debian's headless Chromium, driven by
 * playwright-core, against a real relay, agent and origin. Requests made
 * through the tunnel appear in the open page; replays and edited replays reach
 * the origin; WebSocket messages show both ways; the HAR download holds the
 * requests. With INSPECTOR_SCREENSHOTS=DIR the steps' screenshots are kept there.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { type BrowserContext, chromium, type Locator, type Page } from "playwright-core";
import { Processes, spawnClient, startOrigin, startRelay } from "./helpers/processes.ts";
import { visit } from "./helpers/visit.ts";
import { connectWebSocket } from "./helpers/websocket.ts";

/** Debian's chromium package (`.ci/run` installs it). */
const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
/** Longest wait for anything the page should show. */
const WAIT_MS = 10_000;

/** A fresh headless Chromium with its own profile, closed when the test ends. */
async function browser(processes: Processes): Promise<BrowserContext> {
  const context = await chromium.launchPersistentContext(await processes.tempDir(), {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 800 },
    acceptDownloads: true,
    timeout: WAIT_MS * 3,
  });
  context.setDefaultTimeout(WAIT_MS);
  processes.defer(() => context.close());
  return context;
}

/** Saves the page as `name`.png where screenshots go (INSPECTOR_SCREENSHOTS, else a temp dir). */
function screenshots(dir: string) {
  return (page: Page, name: string) => page.screenshot({ path: join(dir, `${name}.png`) });
}

/** The list's row for a target, once it is there. */
function row(page: Page, target: string) {
  return page.locator("[role=option]", { has: page.locator(".target", { hasText: target }) });
}

/** Waits for `locator`; when it does not come, the error says what the list showed instead. */
async function shown(page: Page, locator: Locator): Promise<void> {
  try {
    await locator.waitFor();
  } catch (error) {
    throw new Error(`${error}\nThe list showed:\n${await page.locator(".list").innerText()}`);
  }
}

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

Deno.test("the inspector page shows requests live, replays them, shows WebSocket messages and exports HAR", async (t) => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const { child } = await spawnClient(processes, relay, [String(origin.port), "hooks"]);
  const [, api] = await child.waitFor(/control API and inspector at (\S+)/);
  const [, url] = await child.waitFor(/^\s+(http:\/\/\S+) →/);
  const seen = async () => (await (await fetch(`http://127.0.0.1:${origin.port}/seen`)).json()).seen;
  const shot = screenshots(Deno.env.get("INSPECTOR_SCREENSHOTS") ?? await processes.tempDir());

  const context = await browser(processes);
  const page = await context.newPage();
  const problems: string[] = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => message.type() === "error" && problems.push(`console: ${message.text()}`));
  await page.goto(api);
  await page.locator(".live.on").waitFor();
  // Set once: a reload would lose it, so the rows below must come without one.
  await page.evaluate(() => Object.assign(globalThis, { stillTheSamePage: true }));

  const payload = { event: "invoice.paid", data: { id: 42, amount: 12.5, paid: true, note: null } };
  await t.step("a request made through the tunnel appears in the open page", async () => {
    await (await visit(`${url}/status/404`)).text();
    const posted = await visit(`${url}/echo?source=webhook`, {
      method: "POST",
      body: JSON.stringify(payload),
      headers: { "content-type": "application/json" },
    });
    const answer = await posted.text();
    assert.equal(posted.status, 200, answer);
    await shown(page, row(page, "/echo?source=webhook").locator(".status", { hasText: "200" }));
    await shown(page, row(page, "/status/404").locator(".status", { hasText: "404" }));
    assert.equal(await page.evaluate(() => "stillTheSamePage" in globalThis), true);
  });

  let original = "";
  await t.step("its JSON body shows pretty-printed", async () => {
    await row(page, "/echo?source=webhook").click();
    const body = page.locator("section[aria-label=Request] pre.json");
    await body.waitFor();
    assert.equal(await body.textContent(), JSON.stringify(payload, null, 2));
    original = (await row(page, "/echo?source=webhook").getAttribute("data-id"))!;
    await shot(page, "json-detail");
  });

  await t.step("the keys: j/k move through the list, Enter opens a row, / goes to the filter", async () => {
    await row(page, "/echo?source=webhook").focus();
    await page.keyboard.press("j");
    await page.locator("[role=option][aria-selected=true] .target", { hasText: "/status/404" }).waitFor();
    await page.keyboard.press("k");
    await page.keyboard.press("Enter");
    await page.locator(".detail-head .target", { hasText: "/echo?source=webhook" }).waitFor();
    await page.locator("[role=option][aria-selected=true]:focus").waitFor();
    await page.keyboard.press("/");
    await page.locator("#filter-text:focus").waitFor();
  });

  await t.step("Copy as curl shows the command for the tunnel's public URL", async () => {
    await page.getByRole("button", { name: "Copy as curl" }).click();
    await page.locator("pre.curl", { hasText: `curl -X POST '${url}/echo?source=webhook'` }).waitFor();
  });

  await t.step("clicking Replay reaches the origin and selects a new entry marked as a replay", async () => {
    const before = await seen();
    await page.getByRole("button", { name: "Replay", exact: true }).click();
    await page.locator(".detail-head .replay-note", { hasText: `replay of #${original}` }).waitFor();
    await page.locator("[role=option] .tag.replay", { hasText: `replay of #${original}` }).waitFor();
    assert.equal(await seen(), before + 1);
    await shot(page, "replayed");
  });

  await t.step("edit and replay sends the changed body", async () => {
    await page.locator(`#row-${original}`).click();
    await page.locator(".detail-head .target", { hasText: "/echo?source=webhook" }).waitFor();
    await page.getByRole("button", { name: "Edit and replay" }).click();
    const edited = JSON.stringify({ event: "invoice.refunded", data: { id: 42, amount: -12.5 } });
    await page.locator("form.edit textarea[name=body]").fill(edited);
    await shot(page, "edit-form");
    await page.locator("form.edit button[type=submit]").click();
    await page.locator("[role=option] .tag.replay", { hasText: `replay of #${original}` }).nth(1).waitFor();
    const answer = page.locator("section[aria-label=Response] pre.json");
    await page.locator("section[aria-label=Request] pre.json", { hasText: "invoice.refunded" }).waitFor();
    const echoed = JSON.parse((await answer.textContent())!);
    assert.equal(echoed.bytes, new TextEncoder().encode(edited).length);
    assert.equal(echoed.sha256, sha256(edited));
  });

  await t.step("a WebSocket's messages appear both ways", async () => {
    const ws = connectWebSocket(`${url}/ws`);
    try {
      await ws.opened;
      await row(page, "/ws").click();
      await page.locator("section[aria-label='WebSocket messages']").waitFor();
      const echoed = ws.next();
      ws.socket.send("hello from a visitor");
      await echoed;
      await page.locator("tr.msg.in", { hasText: "hello from a visitor" }).waitFor();
      await page.locator("tr.msg.out", { hasText: "hello from a visitor" }).waitFor();
      await shot(page, "websocket");
    } finally {
      ws.socket.close();
      await ws.closed;
    }
  });

  await t.step("the HAR download holds the requests", async () => {
    const downloaded = page.waitForEvent("download");
    await page.getByRole("link", { name: "Download HAR" }).click();
    const har = JSON.parse(await Deno.readTextFile((await (await downloaded).path())!));
    const listed = (await (await fetch(`${api}/api/requests`)).json()).requests;
    assert.equal(har.log.entries.length, listed.length);
    const urls = har.log.entries.map((entry: { request: { url: string } }) => entry.request.url);
    assert.ok(urls.includes(`${url}/echo?source=webhook`), urls.join(", "));
  });

  await t.step("filters narrow the list: method, status range, text", async () => {
    const methods = () => page.locator("[role=option] .method").allTextContents();
    await page.getByLabel("Method").selectOption("POST");
    await row(page, "/ws").waitFor({ state: "detached" });
    assert.deepEqual(new Set(await methods()), new Set(["POST"]));
    await page.getByLabel("Method").selectOption("");
    await page.getByLabel("Status").fill("4xx");
    await row(page, "/echo?source=webhook").first().waitFor({ state: "detached" });
    assert.deepEqual(await page.locator("[role=option] .status").allTextContents(), ["404"]);
    await page.getByLabel("Status").fill("");
    await page.getByLabel("Filter").fill("/ws");
    await row(page, "/status/404").waitFor({ state: "detached" });
    assert.deepEqual(await page.locator("[role=option] .target").allTextContents(), ["/ws"]);
    await page.getByLabel("Filter").fill("");
  });

  await t.step("a narrow window shows one column", async () => {
    await page.setViewportSize({ width: 420, height: 800 });
    const list = await page.locator(".list").boundingBox();
    const detail = await page.locator(".detail").boundingBox();
    assert.ok(list && detail && detail.y >= list.y + list.height - 1, JSON.stringify({ list, detail }));
    await shot(page, "narrow");
  });

  assert.deepEqual(problems, []);
});
