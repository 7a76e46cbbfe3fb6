/** The README's first command: `deno task demo` serves a page at a *.localhost URL. */
import assert from "node:assert/strict";
import { Child, Processes } from "./helpers/processes.ts";
import { visit } from "./helpers/visit.ts";

Deno.test("the demo prints a demo.localhost URL whose page answers, and stops cleanly on Ctrl-C", async () => {
  await using processes = new Processes();
  const demo = processes.add(Child.script("demo", "scripts/demo.ts", ["--http-port=0", "--quic-port=0"]));
  const [, url] = await demo.waitFor(/open (http:\/\/demo\.localhost:\d+)/);
  const response = await visit(`${url}/hello?from=test`);
  assert.equal(response.status, 200);
  const page = await response.text();
  assert.match(page, /Hello through reverprox/);
  assert.match(page, /<code>\/hello\?from=test<\/code>/);
  await demo.waitFor(/GET \/hello\?from=test 200/);
  demo.kill("SIGINT");
  assert.equal((await demo.status).code, 0);
});
