import { describe, expect, it } from "vitest";
import { parseRepoRef } from "./repoId";

describe("parseRepoRef", () => {
  it("accepts owner/name and Hub URLs", () => {
    expect(parseRepoRef("google/gemma-2-2b")).toEqual({ repoId: "google/gemma-2-2b" });
    expect(parseRepoRef("  https://huggingface.co/Qwen/Qwen2.5-0.5B/ ")).toEqual({
      repoId: "Qwen/Qwen2.5-0.5B",
    });
    expect(parseRepoRef("huggingface.co/google/gemma-scope-2b-pt-res?x=1")).toEqual({
      repoId: "google/gemma-scope-2b-pt-res",
    });
    expect(
      parseRepoRef("https://huggingface.co/google/gemma-scope-2b-pt-res/tree/main/layer_12/width_16k"),
    ).toEqual({
      repoId: "google/gemma-scope-2b-pt-res",
      path: "layer_12/width_16k",
    });
    expect(parseRepoRef("https://hf.co/a/b/tree/v1.0")).toEqual({ repoId: "a/b", revision: "v1.0" });
  });

  it("explains what is wrong", () => {
    expect(parseRepoRef("")).toHaveProperty("error");
    expect(parseRepoRef("gemma")).toEqual({
      error: "Use the form owner/name (or paste a huggingface.co link).",
    });
    expect(parseRepoRef("a/b/c")).toHaveProperty("error");
    expect(parseRepoRef("own er/name")).toHaveProperty("error");
    expect(parseRepoRef("owner/na--me")).toHaveProperty("error");
    expect(parseRepoRef("https://huggingface.co/datasets/x/y")).toEqual({
      error: "That is a dataset or Space, not a model repo.",
    });
    expect(parseRepoRef("https://huggingface.co/onlyowner")).toHaveProperty("error");
  });
});
