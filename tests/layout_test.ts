/**
 * The shape of the code, held by tests: `lib/` is layered by role and its
 * imports point one way (read from `deno info --json`); the client loads no
 * relay-only package; only `lib/transport/` touches Deno's QUIC; and no
 * function outside tests tells more than one story's worth of lines.
 */
import assert from "node:assert/strict";
import { join, relative } from "node:path";
import ts from "typescript";
import { ROOT } from "./helpers/processes.ts";

/** Layers from the bottom: a module may import its own layer and those below, never above. */
const LAYERS = ["shared", "wire", "transport", "bridge", "relay|agent"];
/** Packages only the relay may load: the public HTTP side and the X.509 certificate maker. */
const RELAY_ONLY_PACKAGES = ["hono", "@hono/node-server", "@peculiar/x509", "reflect-metadata"];
const MAX_FUNCTION_LINES = 80;

interface Module {
  specifier: string;
  dependencies?: { code?: { specifier: string }; type?: { specifier: string } }[];
}

/** Every module `root` loads, from `deno info --json`. */
async function moduleGraph(root: string): Promise<Module[]> {
  const output = await new Deno.Command(Deno.execPath(), { args: ["info", "--json", root], cwd: ROOT })
    .output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  return JSON.parse(new TextDecoder().decode(output.stdout)).modules;
}

/** Source files below `dir` (relative to the repository), tests left out when asked. */
async function sources(dir: string, withTests: boolean): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(join(ROOT, dir))) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) found.push(...await sources(path, withTests));
    else if (entry.name.endsWith(".ts") && (withTests || !entry.name.endsWith("_test.ts"))) found.push(path);
  }
  return found;
}

/** `lib/relay/public/app.ts` → its layer's index; undefined outside lib/. */
function layerOf(path: string): number | undefined {
  const match = path.match(/^lib\/([^/]+)\//);
  return match ? LAYERS.findIndex((layer) => layer.split("|").includes(match[1])) : undefined;
}

function repoPath(specifier: string): string {
  return relative(ROOT, new URL(specifier).pathname);
}

Deno.test("lib/ imports point one way: shared ← wire ← transport ← bridge ← relay, agent (never each other)", async () => {
  // One root that loads every module of lib/, so modules only tests use are held to the rule too.
  const modules = await sources("lib", false);
  const root = join(ROOT, `.layout-root-${crypto.randomUUID()}.ts`);
  await Deno.writeTextFile(root, modules.map((path) => `import "./${path}";`).join("\n"));
  let graph: Module[];
  try {
    graph = await moduleGraph(root);
  } finally {
    await Deno.remove(root);
  }
  const wrong: string[] = [];
  for (
    const module of graph.filter((m) =>
      m.specifier.startsWith("file:") && !m.specifier.includes("node_modules")
    )
  ) {
    const from = repoPath(module.specifier);
    const fromLayer = layerOf(from);
    if (fromLayer === undefined) continue;
    assert.notEqual(fromLayer, -1, `${from} is in no layer (${LAYERS.join(", ")})`);
    for (const dependency of module.dependencies ?? []) {
      const target = dependency.code?.specifier ?? dependency.type?.specifier;
      if (!target?.startsWith("file:") || target.includes("node_modules")) continue;
      const to = repoPath(target);
      const toLayer = layerOf(to);
      const sideways = fromLayer === toLayer && from.split("/")[1] !== to.split("/")[1];
      if (toLayer === undefined || toLayer > fromLayer || sideways) wrong.push(`${from} → ${to}`);
    }
  }
  assert.deepEqual(wrong, [], `imports against the layers:\n${wrong.join("\n")}`);
});

Deno.test("the client loads no relay-only package (Hono, its Node adapter, X.509)", async () => {
  const loaded = (await moduleGraph("client.ts")).map((module) => module.specifier);
  const relayOnly = loaded.filter((specifier) =>
    RELAY_ONLY_PACKAGES.some((name) => specifier.includes(`/node_modules/${name}/`)) ||
    specifier.includes("/lib/relay/")
  );
  assert.deepEqual(relayOnly, []);
  // The check can fail: the relay does load them.
  const relayLoads = (await moduleGraph("server.ts")).map((module) => module.specifier);
  assert.ok(relayLoads.some((specifier) => specifier.includes("/node_modules/hono/")));
});

Deno.test("only lib/transport/ touches Deno's QUIC (tests may speak raw QUIC on purpose)", async () => {
  const files = [...await sources("lib", true), ...await sources("scripts", true), "client.ts", "server.ts"];
  const touching: string[] = [];
  for (const file of files) {
    if (file.startsWith("lib/transport/")) continue;
    if (/Deno\.(Quic|connectQuic)/.test(await Deno.readTextFile(join(ROOT, file)))) touching.push(file);
  }
  assert.deepEqual(touching, []);
});

Deno.test(`no function outside tests runs over ${MAX_FUNCTION_LINES} lines`, async () => {
  const files = [
    ...await sources("lib", false),
    ...await sources("scripts", false),
    "client.ts",
    "server.ts",
  ];
  const long: string[] = [];
  for (const file of files) {
    const text = await Deno.readTextFile(join(ROOT, file));
    const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
    const visit = (node: ts.Node) => {
      if (ts.isFunctionLike(node) && "body" in node && node.body) {
        const first = source.getLineAndCharacterOfPosition(node.getStart()).line;
        const last = source.getLineAndCharacterOfPosition(node.getEnd()).line;
        if (last - first + 1 > MAX_FUNCTION_LINES) {
          long.push(`${file}:${first + 1} (${last - first + 1} lines)`);
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(source);
  }
  assert.deepEqual(long, []);
});
