#!/usr/bin/env bash
# Rebuilds engine/dashboard/static/vendor/ from the versions pinned in
# package.json and package-lock.json in this folder.
#
#   bash engine/dashboard/vendor-src/build.sh
#
# Needs Node.js and npm, and the npm registry. Installs the pinned packages
# with `npm ci` into node_modules/ here (not committed), bundles editor.js
# with esbuild into one minified IIFE, copies the prebuilt files of htmx, its
# SSE extension and uPlot, and writes THIRD-PARTY-NOTICES.txt with the name,
# version, license and license text of every package whose code ends up in
# the vendored files. The output is committed; running the dashboard needs
# none of this.
#
# To upgrade: change the versions in package.json, run `npm install` here to
# update package-lock.json, run this script, then update the versions in
# ../static/vendor/README.md (this script fails until they match).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(cd "$here/.." && pwd)/static/vendor"
cd "$here"

npm ci --no-audit --no-fund

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mkdir -p "$out"

# The CodeMirror versions the bundle reports as FhirbotsEditor.versions.
versions_json="$(node -e '
  const names = ["codemirror", "@codemirror/state", "@codemirror/view",
    "@codemirror/language", "@codemirror/commands", "@codemirror/lint",
    "@codemirror/lang-python", "@codemirror/lang-json", "@codemirror/merge"];
  const v = {};
  for (const n of names) v[n] = require("./node_modules/" + n + "/package.json").version;
  process.stdout.write(JSON.stringify(v));
')"

./node_modules/.bin/esbuild editor.js \
  --bundle \
  --minify \
  --format=iife \
  --target=es2020 \
  --charset=utf8 \
  --legal-comments=none \
  "--define:__CODEMIRROR_VERSIONS__=$versions_json" \
  "--banner:js=/*! fhirbots dashboard editor: CodeMirror 6 (MIT) and its dependencies; see THIRD-PARTY-NOTICES.txt */" \
  --metafile="$work/meta.json" \
  --log-level=warning \
  --outfile="$out/editor.min.js"

cp node_modules/htmx.org/dist/htmx.min.js "$out/htmx.min.js"
cp node_modules/htmx-ext-sse/dist/sse.min.js "$out/htmx-ext-sse.min.js"
cp node_modules/uplot/dist/uPlot.iife.min.js "$out/uplot.iife.min.js"
cp node_modules/uplot/dist/uPlot.min.css "$out/uplot.min.css"

# THIRD-PARTY-NOTICES.txt: the copied packages, and every package that esbuild
# put into editor.min.js (read from its metafile). A package without a license
# file, or whose license cannot be told, stops the build.
META="$work/meta.json" OUT="$out" node - <<'EOF'
const fs = require("fs");
const path = require("path");

const copied = [
  ["htmx.org", ["htmx.min.js"]],
  ["htmx-ext-sse", ["htmx-ext-sse.min.js"]],
  ["uplot", ["uplot.iife.min.js", "uplot.min.css"]],
];

const meta = JSON.parse(fs.readFileSync(process.env.META, "utf8"));
const bundled = new Set();
for (const input of Object.keys(meta.inputs)) {
  const m = input.match(/(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//g);
  if (!m) continue; // editor.js itself
  bundled.add(m[m.length - 1].replace(/^\/?node_modules\//, "").replace(/\/$/, ""));
}

const packages = new Map();
for (const [name, files] of copied) packages.set(name, files.slice());
for (const name of bundled) {
  const files = packages.get(name) || [];
  files.push("editor.min.js");
  packages.set(name, files);
}

const LICENSE_FILES = /^(licen[cs]e|copying)(\.(md|txt))?$/i;

function licenseOf(pkg, text) {
  if (typeof pkg.license === "string" && pkg.license) return pkg.license;
  const head = text.trimStart().split("\n")[0];
  if (/zero[- ]clause bsd|bsd zero clause/i.test(head)) return "0BSD";
  if (/mit license/i.test(head)) return "MIT";
  return null;
}

const entries = [];
for (const name of [...packages.keys()].sort()) {
  const dir = path.join("node_modules", name);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  const file = fs.readdirSync(dir).filter((f) => LICENSE_FILES.test(f)).sort()[0];
  if (!file) throw new Error(`${name}: no license file in the package`);
  const text = fs.readFileSync(path.join(dir, file), "utf8").replace(/\r\n/g, "\n").trim();
  const license = licenseOf(pkg, text);
  if (!license) throw new Error(`${name}: license not stated in package.json nor recognised in ${file}`);
  let source = pkg.homepage || "";
  if (!source && pkg.repository) {
    source = typeof pkg.repository === "string" ? pkg.repository : pkg.repository.url || "";
  }
  entries.push({ name, version: pkg.version, license, source, text, files: packages.get(name) });
}

const lines = [];
lines.push("Third-party software vendored in this folder");
lines.push("============================================");
lines.push("");
lines.push("Written by engine/dashboard/vendor-src/build.sh; do not edit by hand.");
lines.push("");
lines.push("Package                           Version   License   In");
for (const e of entries) {
  lines.push(`${e.name.padEnd(34)}${e.version.padEnd(10)}${e.license.padEnd(10)}${e.files.join(", ")}`);
}
for (const e of entries) {
  lines.push("");
  lines.push("-".repeat(78));
  lines.push(`${e.name} ${e.version}`);
  lines.push(`License: ${e.license}`);
  if (e.source) lines.push(`Source: ${e.source.replace(/^git\+/, "")}`);
  lines.push("");
  lines.push(e.text);
}
fs.writeFileSync(path.join(process.env.OUT, "THIRD-PARTY-NOTICES.txt"), lines.join("\n") + "\n");
EOF

# README.md is written by hand; check that it names the versions just built.
stale=0
for name in htmx.org htmx-ext-sse uplot codemirror @codemirror/state @codemirror/view \
    @codemirror/language @codemirror/commands @codemirror/lint @codemirror/lang-python \
    @codemirror/lang-json @codemirror/merge esbuild; do
  version="$(node -p "require('./node_modules/$name/package.json').version")"
  if ! grep -qF -- "$name $version" "$out/README.md" 2>/dev/null; then
    echo "README.md: does not say \"$name $version\"; update it" >&2
    stale=1
  fi
done

ls -l "$out"
exit "$stale"
