// Validate glTF/GLB files with the Khronos glTF-Validator (npm `gltf-validator`).
// Usage: node tests/gltf_validate.mjs FILE...   -> one JSON line per file:
// {"file", "errors", "warnings", "infos", "messages": [first 50 issues]}
// https://github.com/KhronosGroup/glTF-Validator
import { readFile } from "node:fs/promises";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const validator = require("gltf-validator");

let failed = 0;
for (const file of process.argv.slice(2)) {
  const data = new Uint8Array(await readFile(file));
  const report = await validator.validateBytes(data, {
    uri: path.basename(file),
    maxIssues: 1000,
    externalResourceFunction: (uri) =>
      readFile(path.resolve(path.dirname(file), decodeURIComponent(uri))).then(
        (b) => new Uint8Array(b),
      ),
  });
  const issues = report.issues;
  if (issues.numErrors > 0) failed += 1;
  console.log(
    JSON.stringify({
      file,
      errors: issues.numErrors,
      warnings: issues.numWarnings,
      infos: issues.numInfos,
      messages: issues.messages.slice(0, 50),
      extensionsUsed: report.info ? report.info.extensionsUsed || [] : [],
    }),
  );
}
process.exit(failed ? 1 : 0);
