/**
 * What `deno compile` must leave out of one program's executable (see scripts/compile.ts): every
 * `node_modules` package outside the program's closure, and the files no runtime loads inside the
 * kept ones. The closure starts from the packages the program's module graph (`deno info --json`)
 * reaches, plus those of paths it reads at run time, and follows each package's dependencies in
 * package-lock.json, resolved the way Node does (a nested `node_modules` first, then upwards).
 * Dependencies of CommonJS code, which `deno info` does not follow, are covered that way.
 *
 * @example
 * ```ts
 * import { compileExcludes } from "./compile_excludes.ts";
 * const excluded = await compileExcludes("server.ts", []);
 * console.log(excluded.includes("node_modules/typescript")); // true
 * ```
 * @module
 */

type LockPackage = {
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
};

/** Inside a kept package: TypeScript (Deno refuses it in npm packages, declarations included) and source maps. */
const UNLOADED_FILE = /\.(ts|mts|cts|map)$/;

/**
 * Paths to pass as `--exclude` when compiling `entry`. deno compile matches them against real
 * paths, so they start at node_modules' real path (a checkout may link node_modules elsewhere).
 */
export async function compileExcludes(entry: string, include: string[]): Promise<string[]> {
  const lock = JSON.parse(await Deno.readTextFile("package-lock.json")) as {
    packages: Record<string, LockPackage>;
  };
  const installed = Object.keys(lock.packages).filter((key) => key.startsWith("node_modules/"));
  const roots = [...await graphFiles(entry), ...include].map(packageKey).filter((key) => key !== undefined);
  const kept = closure(roots, lock.packages);
  const excluded: string[] = ["node_modules/.bin"];
  for (const key of installed.sort()) {
    if (excluded.some((path) => key.startsWith(`${path}/`))) continue;
    if (!kept.has(key)) excluded.push(key);
    else excluded.push(...await unloadedFiles(key));
  }
  const real = await Deno.realPath("node_modules");
  return excluded.map((path) => real + path.slice("node_modules".length));
}

/** The local files of `entry`'s module graph (npm modules appear as files under node_modules). */
async function graphFiles(entry: string): Promise<string[]> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (code !== 0) throw new Error(`deno info ${entry} failed: ${new TextDecoder().decode(stderr)}`);
  const graph = JSON.parse(new TextDecoder().decode(stdout)) as { modules: { specifier: string }[] };
  return graph.modules.map((module) => module.specifier).filter((specifier) => specifier.startsWith("file:"))
    .map((specifier) => decodeURIComponent(new URL(specifier).pathname));
}

/**
 * The package-lock key of the package holding `path`, e.g. `.../node_modules/a/node_modules/@s/b/x.js`
 * → `node_modules/a/node_modules/@s/b`; undefined outside node_modules.
 */
function packageKey(path: string): string | undefined {
  const start = path.indexOf("node_modules/");
  if (start === -1) return undefined;
  const parts = path.slice(start).split("/");
  let end = 0;
  for (let i = 0; i < parts.length; i++) {
    if (parts[i] !== "node_modules" || i + 1 >= parts.length) continue;
    end = parts[i + 1].startsWith("@") ? i + 3 : i + 2;
  }
  return parts.slice(0, end).join("/");
}

function closure(roots: string[], packages: Record<string, LockPackage>): Set<string> {
  const kept = new Set<string>();
  const pending = [...roots];
  while (pending.length > 0) {
    const key = pending.pop()!;
    if (kept.has(key) || !packages[key]) continue;
    kept.add(key);
    const { dependencies = {}, optionalDependencies = {}, peerDependencies = {} } = packages[key];
    for (const name of Object.keys({ ...dependencies, ...optionalDependencies, ...peerDependencies })) {
      const found = resolveFrom(key, name, packages);
      if (found) pending.push(found);
    }
  }
  return kept;
}

/** Where Node finds package `name` required from the package at `from`: its nested node_modules, then upwards. */
function resolveFrom(from: string, name: string, packages: Record<string, LockPackage>): string | undefined {
  let base = from;
  while (true) {
    const candidate = `${base}/node_modules/${name}`;
    if (packages[candidate]) return candidate;
    const up = base.lastIndexOf("/node_modules/");
    if (up === -1) return packages[`node_modules/${name}`] ? `node_modules/${name}` : undefined;
    base = base.slice(0, up);
  }
}

/** The files of a kept package no runtime loads; its nested packages are judged on their own. */
async function unloadedFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const item of Deno.readDir(dir)) {
    const path = `${dir}/${item.name}`;
    if (item.isDirectory && item.name !== "node_modules") found.push(...await unloadedFiles(path));
    else if (item.isFile && UNLOADED_FILE.test(item.name)) found.push(path);
  }
  return found;
}
