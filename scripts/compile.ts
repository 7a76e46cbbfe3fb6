/**
 * `deno task compile`: builds the two self-contained executables into `dist/`:
 * `reverprox` (client.ts) and `reverprox-server` (server.ts).
 *
 * `deno compile` needs the `denort` runtime for the target; it downloads it
 * from Deno's servers unless `DENORT_BIN` names a local copy (Deno reads that
 * variable itself). `--target <triple>` cross-compiles.
 * @module
 */
import { Command } from "commander";
import { V8_FLAGS } from "./v8_flags.ts";

const { target } = new Command("compile")
  .option("--target <triple>", "e.g. x86_64-unknown-linux-gnu, aarch64-apple-darwin")
  .parse(Deno.args, { from: "user" })
  .opts<{ target?: string }>();

const builds = [["client.ts", "reverprox"], ["server.ts", "reverprox-server"]];
for (const [entry, name] of builds) {
  const args = ["compile", "-A", "--unstable-net", `--v8-flags=${V8_FLAGS}`, "--output", `dist/${name}`];
  if (target) args.push("--target", target);
  const { code } = await new Deno.Command(Deno.execPath(), { args: [...args, entry] }).spawn().status;
  if (code !== 0) {
    console.error(
      `compile: building ${name} failed. deno compile downloads the denort runtime unless DENORT_BIN ` +
        `points to a local one (for example a denort from https://github.com/denoland/deno/releases).`,
    );
    Deno.exit(code);
  }
  console.log(`compile: dist/${name}`);
}
