// Generates the typed API client (src/client/, from openapi.json) and the WebSocket/SSE frame types
// (src/ws/frames.gen.ts, from frames.schema.json). `--check` generates into a temp dir and fails
// when the committed files differ (a stale client), without touching them.
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@hey-api/openapi-ts";
import { compile } from "json-schema-to-typescript";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const check = process.argv.includes("--check");
const outRoot = check ? mkdtempSync(join(tmpdir(), "millm-ui-gen-")) : join(root, "src");

const CLIENT_DIR = "client";
const FRAMES_FILE = join("ws", "frames.gen.ts");

async function generateClient(out) {
  await createClient({
    input: join(root, "openapi.json"),
    output: { path: out, postProcess: [] },
    logs: { level: "silent" },
    plugins: [
      { name: "@hey-api/client-fetch", throwOnError: true },
      "@hey-api/typescript",
      { name: "@hey-api/sdk" },
    ],
  });
}

// Pydantic titles every property ("Request Id"), which would make one named alias per field;
// keep titles only on the named definitions so each frame is one readable interface.
// A $ref with sibling keywords (a channel's description) would be emitted as a copy of the referenced
// type (DownloadEvent1); keep the bare $ref so each frame type exists once.
function dropPropertyTitles(node, keep = false) {
  if (Array.isArray(node)) return node.map((n) => dropPropertyTitles(n));
  if (node === null || typeof node !== "object") return node;
  if (typeof node.$ref === "string") return { $ref: node.$ref };
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === "title" && !keep) continue;
    if (k === "$defs" || k === "definitions") {
      out[k] = Object.fromEntries(Object.entries(v).map(([n, d]) => [n, dropPropertyTitles(d, true)]));
    } else out[k] = dropPropertyTitles(v);
  }
  return out;
}

async function generateFrames(file) {
  const raw = JSON.parse(readFileSync(join(root, "frames.schema.json"), "utf8"));
  const schema = { ...dropPropertyTitles(raw), title: raw.title };
  const ts = await compile(schema, schema.title ?? "Frames", {
    bannerComment:
      "/* Generated from frames.schema.json by scripts/generate.mjs (npm run gen). Do not edit. */",
    unreachableDefinitions: true,
    additionalProperties: false,
    format: false,
  });
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, ts);
}

function listFiles(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => relative(dir, join(d.parentPath, d.name)))
    .sort();
}

function diffDirs(expected, actual, label) {
  const problems = [];
  const a = listFiles(expected);
  const b = listFiles(actual);
  for (const f of new Set([...a, ...b])) {
    const pa = join(expected, f);
    const pb = join(actual, f);
    if (!existsSync(pa)) problems.push(`${label}/${f}: committed but no longer generated`);
    else if (!existsSync(pb)) problems.push(`${label}/${f}: missing (not committed)`);
    else if (readFileSync(pa, "utf8") !== readFileSync(pb, "utf8")) problems.push(`${label}/${f}: differs`);
  }
  return problems;
}

if (!check) rmSync(join(outRoot, CLIENT_DIR), { recursive: true, force: true });
await generateClient(join(outRoot, CLIENT_DIR));
await generateFrames(join(outRoot, FRAMES_FILE));

if (check) {
  const problems = [
    ...diffDirs(join(outRoot, CLIENT_DIR), join(root, "src", CLIENT_DIR), "src/client"),
    ...(readFileSync(join(outRoot, FRAMES_FILE), "utf8") ===
    (existsSync(join(root, "src", FRAMES_FILE)) ? readFileSync(join(root, "src", FRAMES_FILE), "utf8") : "")
      ? []
      : [`src/${FRAMES_FILE}: differs from frames.schema.json`]),
  ];
  rmSync(outRoot, { recursive: true, force: true });
  if (problems.length) {
    console.error("Generated code is stale (run `npm run gen` in frontend/ and commit):");
    for (const p of problems) console.error(`  ${p}`);
    process.exit(1);
  }
  console.log("Generated client and frame types are up to date.");
}
