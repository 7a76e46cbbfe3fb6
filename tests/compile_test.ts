/**
 * What `deno task compile` puts into each executable. deno itself stands in for `denort` (which
 * these machines cannot download): the results cannot run as reverprox, but deno compile prints
 * the embedded file tree and writes the files into them exactly as a real build does. Then each
 * program runs from a copy of this checkout that holds only what its build embeds, which shows
 * nothing it loads was left out.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { execFile } from "node:child_process";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { Child, Processes, ROOT } from "./helpers/processes.ts";
import { compileExcludes } from "../scripts/compile_excludes.ts";
import { VERSION } from "../lib/shared/version.ts";

const run = promisify(execFile);
const MB = 1024 * 1024;

/** deno compile's "Files: 3.99MB" line, in bytes. */
function embeddedBytes(output: string): number {
  const match = output.match(/^Files: ([\d.]+)(B|KB|MB|GB)$/m);
  assert.ok(match, `no "Files:" line in:\n${output}`);
  return Number(match[1]) * 1024 ** ["B", "KB", "MB", "GB"].indexOf(match[2]);
}

async function contains(file: string, part: Uint8Array): Promise<boolean> {
  return Buffer.from(await Deno.readFile(file)).includes(Buffer.from(part));
}

Deno.test("compile embeds only what each program loads: client < 10 MB with the inspector page, relay < 15 MB", async () => {
  await using processes = new Processes();
  const outDir = await processes.tempDir();
  const compile = processes.add(
    Child.script("compile", "scripts/compile.ts", ["--out-dir", outDir, "--no-check"], {
      DENORT_BIN: Deno.execPath(),
      NO_COLOR: "1",
    }),
  );
  const { code } = await compile.status;
  await compile.stop(); // the rest of its output is read
  const out = compile.lines.join("\n");
  assert.equal(code, 0, out);
  const [client, relay] = out.split(/^Compile server\.ts/m);
  assert.ok(relay, `no server build in:\n${out}`);
  assert.ok(embeddedBytes(client) < 10 * MB, `client embeds ${embeddedBytes(client)} bytes`);
  assert.ok(embeddedBytes(relay) < 15 * MB, `relay embeds ${embeddedBytes(relay)} bytes`);
  // Neither carries the deno package's own binary or a dev dependency.
  assert.doesNotMatch(out, /@deno\/linux|typescript \(|playwright-core \(/);

  const clientBuild = join(outDir, `reverprox-${Deno.build.target}`);
  const page = ["lib/agent/inspector/ui", "node_modules/htm/preact"];
  const served = [
    ...[...Deno.readDirSync(join(ROOT, page[0]))].map((file) => join(page[0], file.name)),
    join(page[1], "standalone.module.js"),
  ];
  for (const file of served) {
    assert.ok(
      await contains(clientBuild, await Deno.readFile(join(ROOT, file))),
      `${file} is not in the client`,
    );
  }
  const relayBuild = join(outDir, `reverprox-server-${Deno.build.target}`);
  const acme = await Deno.readFile(join(ROOT, "node_modules/acme-client/src/client.js"));
  assert.ok(await contains(relayBuild, acme), "acme-client is not in the relay");
});

/** Copies `from` to `to`, leaving out the paths in `excluded` (and what is under them). */
async function copyWithout(from: string, to: string, excluded: Set<string>): Promise<void> {
  for await (const item of Deno.readDir(from)) {
    const source = join(from, item.name);
    if (excluded.has(source)) continue;
    const target = join(to, item.name);
    if (item.isDirectory) {
      await Deno.mkdir(target, { recursive: true });
      await copyWithout(source, target, excluded);
    } else if (item.isFile) {
      await Deno.mkdir(dirname(target), { recursive: true });
      await Deno.copyFile(source, target);
    }
  }
}

Deno.test("each program loads from a checkout holding only what its build embeds", async () => {
  await using processes = new Processes();
  for (const [entry, name] of [["client.ts", "reverprox"], ["server.ts", "reverprox-server"]]) {
    const stage = join(await processes.tempDir(), "checkout");
    const modules = await Deno.realPath(join(ROOT, "node_modules"));
    const excluded = new Set(await compileExcludes(entry, []));
    await copyWithout(modules, join(stage, "node_modules"), excluded);
    for (const path of [entry, "lib", "deno.json", "package.json"]) {
      await run("cp", ["-r", join(ROOT, path), join(stage, path)]);
    }
    const { stdout } = await run(Deno.execPath(), ["run", "-A", "--no-check", entry, "--version"], {
      cwd: stage,
    });
    assert.match(stdout, new RegExp(`^${name} ${VERSION} `));
  }
});
