/**
 * `deno task compile`: builds the two self-contained executables for one target (the host's
 * unless `--target <triple>` says another) into `dist/`, named as release files are, which is
 * how install.sh finds them: `reverprox-<target>` (client.ts) and `reverprox-server-<target>`
 * (server.ts), with `.exe` for Windows.
 *
 * Each executable embeds only the npm packages its program loads. With our `node_modules` (the
 * `"nodeModulesDir": "manual"` setting) `deno compile` would embed every folder in it, the
 * `deno` package's own 92 MB binary and the dev dependencies included, and resolving npm
 * packages from Deno's global cache instead embeds every package.json dependency just the same
 * (both measured). So this script passes `--exclude` for every package outside the program's
 * closure (the packages its module graph reaches, then their dependencies in package-lock.json),
 * and for the files no runtime loads inside the kept ones (TypeScript sources and declarations,
 * which Deno refuses in npm packages, and source maps). Files a program reads rather than
 * imports (the inspector's page) are named with `--include`.
 *
 * `deno compile` needs the `denort` runtime for the target; it downloads it
 * from Deno's servers unless `DENORT_BIN` names a local copy (Deno reads that
 * variable itself). With `DENORT_BIN` set to a full `deno` the output cannot run, but the
 * printed "Embedded Files" tree is what a real build carries (tests/compile_test.ts checks it).
 * @module
 */
import { join } from "node:path";
import { Command } from "commander";
import { V8_FLAGS } from "./v8_flags.ts";
import { compileExcludes } from "./compile_excludes.ts";

const { target, outDir, check } = new Command("compile")
  .option("--target <triple>", "e.g. x86_64-unknown-linux-gnu, aarch64-apple-darwin", Deno.build.target)
  .option("--out-dir <dir>", "where the executables go", "dist")
  .option("--no-check", "skip type-checking (deno task check does it; the compile test saves the time)")
  .parse(Deno.args, { from: "user" })
  .opts<{ target: string; outDir: string; check: boolean }>();

/** What each executable is built from, and what it reads at run time without importing it. */
const BUILDS = [
  {
    entry: "client.ts",
    name: "reverprox",
    // The inspector serves these (lib/agent/inspector/routes.ts); the page imports the htm module.
    include: ["lib/agent/inspector/ui", "node_modules/htm/preact/standalone.module.js"],
  },
  { entry: "server.ts", name: "reverprox-server", include: [] },
];

// deno compile adds `.exe` for a Windows target by itself; naming it here keeps the printed path true.
const extension = target.includes("windows") ? ".exe" : "";
for (const { entry, name, include } of BUILDS) {
  const output = join(outDir, `${name}-${target}${extension}`);
  const args = ["compile", "-A", "--unstable-net", `--v8-flags=${V8_FLAGS}`, "--output", output];
  args.push("--target", target, ...(check ? [] : ["--no-check"]));
  for (const path of include) args.push("--include", path);
  for (const path of await compileExcludes(entry, include)) args.push("--exclude", path);
  const { code } = await new Deno.Command(Deno.execPath(), { args: [...args, entry] }).spawn().status;
  if (code !== 0) {
    console.error(
      `compile: building ${name} failed. deno compile downloads the denort runtime unless DENORT_BIN ` +
        `points to a local one (for example a denort from https://github.com/denoland/deno/releases).`,
    );
    Deno.exit(code);
  }
  console.log(`compile: ${output}`);
}
