import { describe, expect, it } from "vitest";
import { chatBody, type PlaygroundRequest, pyLiteral, shellQuote, toCurl, toPython } from "./exporters";

const req: PlaygroundRequest = {
  model: "millm-demo",
  prompt: 'It\'s a "test"\nline two',
  maxTokens: 32,
  temperature: 0.7,
  seed: 42,
  steering: { features: [{ index: 16, strength: 4 }], mode: "add" },
};

describe("exporters", () => {
  it("curl posts the chat body with the steering object, quoted for a POSIX shell", () => {
    const curl = toCurl(req, "http://127.0.0.1:8000/");
    expect(curl).toContain("curl 'http://127.0.0.1:8000/v1/chat/completions'");
    expect(curl).toContain("-H 'Content-Type: application/json'");
    expect(curl).not.toContain("Authorization");
    // The -d argument, unquoted the way a shell would, is exactly the JSON body.
    const arg = curl.slice(curl.indexOf("-d ") + 3);
    const unquoted = arg.slice(1, -1).replace(/'\\''/g, "'");
    expect(JSON.parse(unquoted)).toEqual(chatBody(req));
    expect(JSON.parse(unquoted).steering).toEqual({ features: [{ index: 16, strength: 4 }], mode: "add" });
  });

  it("curl reads the key from $MILLM_API_KEY when the server needs one (never prints the key)", () => {
    const curl = toCurl(req, "http://h:1", "secret-key");
    expect(curl).toContain("Authorization: Bearer $MILLM_API_KEY");
    expect(curl).not.toContain("secret-key");
  });

  it("Python uses the openai SDK with extra_body={'steering': ...}", () => {
    const py = toPython(req, "http://127.0.0.1:8000");
    expect(py).toContain("from openai import OpenAI");
    expect(py).toContain('client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="not-needed")');
    expect(py).toContain('model="millm-demo",');
    expect(py).toContain('"content": "It\'s a \\"test\\"\\nline two"');
    expect(py).toContain("seed=42,");
    expect(py).toMatch(/extra_body=\{\n\s+"steering": \{\n\s+"features": \[/);
    expect(py).toContain('"mode": "add"');
    expect(py.trim().endsWith("print(response.choices[0].message.content)")).toBe(true);
  });

  it("an unsteered request has no steering", () => {
    const plain = { ...req, steering: null };
    expect(toPython(plain, "http://x")).not.toContain("extra_body");
    expect(chatBody(plain)).not.toHaveProperty("steering");
  });

  it("pyLiteral writes Python literals", () => {
    expect(pyLiteral({ a: true, b: false, c: null, d: [1, 2.5], e: "x" })).toBe(
      '{\n    "a": True,\n    "b": False,\n    "c": None,\n    "d": [\n        1,\n        2.5,\n    ],\n    "e": "x",\n}',
    );
    expect(shellQuote("it's")).toBe("'it'\\''s'");
  });
});
