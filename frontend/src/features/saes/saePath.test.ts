import { describe, expect, it } from "vitest";
import { layerFromPath, saeSource } from "./saePath";

describe("layerFromPath", () => {
  it("reads the layer from common SAE folder names", () => {
    expect(layerFromPath("layer_12/width_16k/average_l0_82")).toBe(12);
    expect(layerFromPath("blocks.8.hook_resid_post")).toBe(8);
    expect(layerFromPath("l20r_8x")).toBe(20);
    expect(layerFromPath("layers.3")).toBe(3);
    expect(layerFromPath("")).toBeNull();
    expect(layerFromPath("width_16k")).toBeNull();
  });
  it("builds attach sources", () => {
    expect(saeSource("google/gemma-scope", "layer_1/width_16k")).toBe("google/gemma-scope:layer_1/width_16k");
    expect(saeSource("me/sae", "")).toBe("me/sae");
  });
});
