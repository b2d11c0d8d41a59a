/**
 * The playground's request as code a user can paste: curl and the openai Python SDK (steering goes in
 * `extra_body`). Pure functions of one request description, tested in exporters.test.ts.
 */

export interface PlaygroundRequest {
  model: string;
  prompt: string;
  maxTokens: number;
  temperature: number;
  seed: number;
  steering: { features: { index: number; strength: number }[]; mode: "add" | "clamp" } | null;
}

/** The /v1/chat/completions body for the steered request. */
export function chatBody(req: PlaygroundRequest): Record<string, unknown> {
  const body: Record<string, unknown> = {
    model: req.model,
    messages: [{ role: "user", content: req.prompt }],
    max_tokens: req.maxTokens,
    temperature: req.temperature,
    seed: req.seed,
  };
  if (req.steering) body.steering = req.steering;
  return body;
}

/** Quote for a POSIX shell: single quotes, with ' written as '\''. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function toCurl(req: PlaygroundRequest, baseUrl: string, apiKey?: string | null): string {
  const lines = [`curl ${shellQuote(`${baseUrl.replace(/\/$/, "")}/v1/chat/completions`)}`];
  lines.push(`  -H 'Content-Type: application/json'`);
  if (apiKey) lines.push(`  -H "Authorization: Bearer $MILLM_API_KEY"`);
  lines.push(`  -d ${shellQuote(JSON.stringify(chatBody(req), null, 2))}`);
  return lines.join(" \\\n");
}

/** A Python literal for JSON data (True/False/None, double-quoted strings with JSON escapes). */
export function pyLiteral(value: unknown, indent = 0): string {
  const pad = "    ";
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return Number.isFinite(value) ? String(value) : "None";
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    const inner = value.map((v) => `${pad.repeat(indent + 1)}${pyLiteral(v, indent + 1)}`);
    return `[\n${inner.join(",\n")},\n${pad.repeat(indent)}]`;
  }
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length === 0) return "{}";
  const inner = entries.map(
    ([k, v]) => `${pad.repeat(indent + 1)}${JSON.stringify(k)}: ${pyLiteral(v, indent + 1)}`,
  );
  return `{\n${inner.join(",\n")},\n${pad.repeat(indent)}}`;
}

export function toPython(req: PlaygroundRequest, baseUrl: string, apiKey?: string | null): string {
  const key = apiKey ? `os.environ["MILLM_API_KEY"]` : `"not-needed"`;
  const lines = [
    ...(apiKey ? ["import os", ""] : []),
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${JSON.stringify(`${baseUrl.replace(/\/$/, "")}/v1`)}, api_key=${key})`,
    "response = client.chat.completions.create(",
    `    model=${JSON.stringify(req.model)},`,
    `    messages=${pyLiteral([{ role: "user", content: req.prompt }], 1)},`,
    `    max_tokens=${req.maxTokens},`,
    `    temperature=${req.temperature},`,
    `    seed=${req.seed},`,
  ];
  if (req.steering) lines.push(`    extra_body=${pyLiteral({ steering: req.steering }, 1)},`);
  lines.push(")", "print(response.choices[0].message.content)");
  return lines.join("\n");
}
