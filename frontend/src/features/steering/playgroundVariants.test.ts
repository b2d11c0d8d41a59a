import { describe, expect, it } from "vitest";
import { columnTitles, DEFAULT_COLUMNS, toVariants } from "./playgroundVariants";

const current = { features: [{ index: 16, strength: 8 }], mode: "add" as const };

describe("playground columns", () => {
  it("default to unsteered and the current steering, named as before", () => {
    expect(toVariants(DEFAULT_COLUMNS, current, 1536)).toEqual({
      variants: [
        { label: "Unsteered", steering: null },
        { label: "Steered", steering: current },
      ],
      error: null,
    });
  });

  it("turn profiles and custom lists into variants, with unique titles", () => {
    const specs = [
      ...DEFAULT_COLUMNS,
      { id: 2, kind: "profile" as const, profile: "yelling-demo" },
      { id: 3, kind: "custom" as const, text: "16:4, 40=-2" },
      { id: 4, kind: "unsteered" as const },
    ];
    expect(columnTitles(specs)).toEqual([
      "Unsteered",
      "Steered",
      "Profile yelling-demo",
      "Custom 16:4, 40=-2",
      "Unsteered (2)",
    ]);
    const { variants, error } = toVariants(specs, current, 1536);
    expect(error).toBeNull();
    expect(variants.map((v) => v.steering)).toEqual([
      null,
      current,
      { profile: "yelling-demo" },
      {
        features: [
          { index: 16, strength: 4 },
          { index: 40, strength: -2 },
        ],
        mode: "add",
      },
      null,
    ]);
  });

  it("a custom list that does not parse is an error naming the column", () => {
    const specs = [...DEFAULT_COLUMNS, { id: 2, kind: "custom" as const, text: "16:4, 9999" }];
    const { variants, error } = toVariants(specs, current, 1536);
    expect(variants).toEqual([]);
    expect(error).toMatch(/^Column 3: 9999: index 9999 is out of range/);
  });
});
