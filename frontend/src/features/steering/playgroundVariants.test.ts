import { describe, expect, it } from "vitest";
import {
  columnTitles,
  DEFAULT_COLUMNS,
  decodeColumns,
  encodeColumns,
  toVariants,
} from "./playgroundVariants";

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

  it("round-trip through the URL, the default left out", () => {
    expect(encodeColumns(DEFAULT_COLUMNS)).toBeUndefined();
    expect(decodeColumns(undefined)).toEqual(DEFAULT_COLUMNS);
    const kinds = [
      { kind: "unsteered" as const },
      { kind: "profile" as const, profile: "yelling-demo" },
      { kind: "custom" as const, text: "16:4, 40=-2" },
      { kind: "current" as const },
    ];
    const text = encodeColumns(kinds);
    expect(text).toBe("u|p:yelling-demo|c:16:4;40=-2|s");
    expect(decodeColumns(text)).toEqual([
      { id: 0, kind: "unsteered" },
      { id: 1, kind: "profile", profile: "yelling-demo" },
      { id: 2, kind: "custom", text: "16:4, 40=-2" },
      { id: 3, kind: "current" },
    ]);
    expect(decodeColumns("x|p:|u|u|u|u|u|u|u|u|u")).toHaveLength(8); // junk dropped, at most 8
    expect(decodeColumns("junk")).toEqual(DEFAULT_COLUMNS);
  });
});
