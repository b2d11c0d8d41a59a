// The JavaScript a first page load fetches, gzipped: the entry chunk and everything it imports
// statically, plus the landing tab's lazy route chunk and its static imports. Checked for every tab
// (any tab can be the first page, via a link). Fails when one exceeds the budget (default 250 KB).
// Run after `vite build` (npm run size); reads dist/.vite/manifest.json.
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const dist = resolve(root, "../src/millm/webui/dist");
const budgetKb = Number(process.env.UI_JS_BUDGET_KB ?? 250);
const manifest = JSON.parse(readFileSync(join(dist, ".vite/manifest.json"), "utf8"));

function closure(keys, seen = new Set()) {
  for (const k of keys) {
    if (seen.has(k)) continue;
    seen.add(k);
    closure(manifest[k].imports ?? [], seen);
  }
  return seen;
}

const gz = new Map();
function gzKb(key) {
  if (!gz.has(key))
    gz.set(key, gzipSync(readFileSync(join(dist, manifest[key].file)), { level: 9 }).length / 1024);
  return gz.get(key);
}

const entry = Object.keys(manifest).find((k) => manifest[k].isEntry);
const base = closure([entry]);
const routes = Object.keys(manifest).filter((k) => /src\/routes\/(?!__root)[^/]+\.tsx\?tsr-split/.test(k));
let worst = 0;
const rows = [];
for (const r of routes) {
  const keys = closure([r], new Set(base));
  const kb = [...keys].reduce((s, k) => s + gzKb(k), 0);
  worst = Math.max(worst, kb);
  rows.push([r.match(/routes\/([^.]+)\.tsx/)[1], kb]);
}
const baseKb = [...base].reduce((s, k) => s + gzKb(k), 0);
console.log(`shell (entry + static imports): ${baseKb.toFixed(1)} KB gzipped`);
for (const [name, kb] of rows.sort()) console.log(`first page at /${name}: ${kb.toFixed(1)} KB gzipped`);
if (worst > budgetKb) {
  console.error(`over the budget of ${budgetKb} KB gzipped`);
  process.exit(1);
}
console.log(`largest first page ${worst.toFixed(1)} KB gzipped, within the ${budgetKb} KB budget`);
