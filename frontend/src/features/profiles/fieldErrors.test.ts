import { describe, expect, it } from "vitest";
import { ApiError } from "@/api/errors";
import { errorsFor, parseFieldErrors } from "./fieldErrors";

const err = (message: string, param: string | null = null) =>
  new ApiError(message, { status: 400, param, code: "invalid_profile" });

describe("parseFieldErrors", () => {
  it("splits the server's list into one error per field path", () => {
    const e = err(
      "invalid profile (3 errors): features[0].index: 2000 is out of range: SAE 'millm-demo-sae' has d_sae 1536; features[1].strength: must be a finite number; name: string should match pattern",
      "features[0].index",
    );
    expect(parseFieldErrors(e)).toEqual([
      { path: "features[0].index", message: "2000 is out of range: SAE 'millm-demo-sae' has d_sae 1536" },
      { path: "features[1].strength", message: "must be a finite number" },
      { path: "name", message: "string should match pattern" },
    ]);
  });
  it("one error, and a message without paths", () => {
    expect(parseFieldErrors(err("invalid profile: sae.d_sae: field required"))).toEqual([
      { path: "sae.d_sae", message: "field required" },
    ]);
    expect(parseFieldErrors(err("profile 'x' already exists", "name"))).toEqual([
      { path: "name", message: "profile 'x' already exists" },
    ]);
  });
  it("errorsFor picks a field and its children", () => {
    const list = [
      { path: "features[0].index", message: "a" },
      { path: "featuresX", message: "b" },
      { path: "name", message: "c" },
    ];
    expect(errorsFor(list, "features").map((e) => e.message)).toEqual(["a"]);
  });
});
