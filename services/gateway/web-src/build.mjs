// Bundles vendor.js into the gateway package: `npm ci && npm run build`. The output is the
// same bytes on every run from the same package-lock.json (services/gateway/tests/test_web_build.py
// rebuilds it and compares).
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const out = process.argv[2] ?? "../src/parley_gateway/web/vendor.js";

await build({
  entryPoints: [fileURLToPath(new URL("vendor.js", import.meta.url))],
  outfile: out,
  bundle: true,
  format: "esm",
  minify: true,
  target: "es2020",
  legalComments: "eof",
  charset: "utf8",
  logLevel: "warning",
});
