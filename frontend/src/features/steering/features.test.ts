import { describe, expect, it } from "vitest";
import {
  decodeRows,
  encodeRows,
  formatStrength,
  indexError,
  mergeApplied,
  parseFeatureList,
  parseStrength,
} from "./features";

describe("parseFeatureList", () => {
  it("reads index, index:strength and index=strength separated by commas, semicolons and new lines", () => {
    const { entries, errors } = parseFeatureList("16, 40:2.5, 7=-1\n#8;  9 : 0.25", 1536);
    expect(errors).toEqual([]);
    expect(entries).toEqual([
      { index: 16, strength: 1 },
      { index: 40, strength: 2.5 },
      { index: 7, strength: -1 },
      { index: 8, strength: 1 },
      { index: 9, strength: 0.25 },
    ]);
  });

  it("gives each bad entry its own error and keeps the good ones", () => {
    const { entries, errors } = parseFeatureList("16, 2000:1, abc, 5:x, 6:Infinity, 16:2, 1:2:3, 7:", 1536);
    expect(entries).toEqual([{ index: 16, strength: 1 }]);
    expect(errors.map((e) => e.entry)).toEqual(["2000:1", "abc", "5:x", "6:Infinity", "16:2", "1:2:3", "7:"]);
    expect(errors[0].message).toMatch(/out of range: this SAE has 1536 features/);
    expect(errors[1].message).toMatch(/not a feature index/);
    expect(errors[2].message).toMatch(/not a finite number/);
    expect(errors[3].message).toMatch(/not a finite number/);
    expect(errors[4].message).toMatch(/listed twice/);
    expect(errors[5].message).toMatch(/use index/);
    expect(errors[6].message).toMatch(/not a finite number/);
  });

  it("refuses an index equal to d_sae (indices run 0..d_sae-1)", () => {
    expect(parseFeatureList("1536", 1536).errors).toHaveLength(1);
    expect(parseFeatureList("1535", 1536).entries).toEqual([{ index: 1535, strength: 1 }]);
  });
});

describe("URL rows", () => {
  it("round-trip, muted rows marked with ~", () => {
    const rows = [
      { index: 16, strength: 4, muted: false },
      { index: 40, strength: -2.5, muted: true },
    ];
    expect(encodeRows(rows)).toBe("16:4,40:-2.5~");
    expect(decodeRows("16:4,40:-2.5~")).toEqual(rows);
  });

  it("drops malformed, non-finite and repeated parts", () => {
    expect(decodeRows("16:4,x:1,7:NaN,16:2,3:1e400,5:0.5")).toEqual([
      { index: 16, strength: 4, muted: false },
      { index: 5, strength: 0.5, muted: false },
    ]);
    expect(decodeRows(undefined)).toEqual([]);
  });

  it("merge: server strengths win, server-only features are appended, muted rows stay", () => {
    const rows = decodeRows("16:1,40:2~,7:3");
    expect(
      mergeApplied(rows, [
        { index: 16, strength: 5 },
        { index: 99, strength: -1 },
      ]),
    ).toEqual([
      { index: 16, strength: 5, muted: false },
      { index: 40, strength: 2, muted: true },
      { index: 7, strength: 3, muted: false },
      { index: 99, strength: -1, muted: false },
    ]);
  });
});

describe("inline checks", () => {
  it("index ≥ d_sae, not a number", () => {
    expect(indexError("16", 1536)).toBeNull();
    expect(indexError("1536", 1536)).toMatch(/less than 1536/);
    expect(indexError("-1", 1536)).toMatch(/whole number/);
    expect(indexError("", 1536)).toMatch(/Enter/);
  });
  it("strength must be finite", () => {
    expect(parseStrength("2.5")).toBe(2.5);
    expect(parseStrength("Infinity")).toMatch(/finite/);
    expect(parseStrength("abc")).toMatch(/finite/);
    expect(parseStrength("1e999")).toMatch(/finite/);
  });
  it("formats strengths signed with one decimal", () => {
    expect(formatStrength(5)).toBe("+5.0");
    expect(formatStrength(-2)).toBe("-2.0");
    expect(formatStrength(0)).toBe("0.0");
    expect(formatStrength(0.25)).toBe("+0.25");
  });
});
