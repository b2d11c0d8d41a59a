import { act, fireEvent, render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { KEY_COMMIT_DELAY_MS, StrengthControl, snapToDetent } from "./StrengthControl";

afterEach(() => vi.useRealTimers());

describe("StrengthControl", () => {
  it("is a labelled slider from -25 to +25 showing the signed value", () => {
    render(<StrengthControl index={16} value={4} onCommit={() => {}} />);
    const slider = screen.getByRole("slider", { name: "Strength of feature 16" });
    expect(slider).toHaveAttribute("aria-valuemin", "-25");
    expect(slider).toHaveAttribute("aria-valuemax", "25");
    expect(slider).toHaveAttribute("aria-valuenow", "4");
    expect(slider).toHaveAttribute("aria-valuetext", "+4.0");
    expect(screen.getByRole("textbox", { name: "Strength value of feature 16" })).toHaveValue("4");
  });

  it("keyboard: arrows step 0.1, Page Up steps 1, and one commit is sent ~150 ms after the last key", () => {
    vi.useFakeTimers();
    const onCommit = vi.fn();
    render(<StrengthControl index={16} value={0} onCommit={onCommit} />);
    const slider = screen.getByRole("slider", { name: "Strength of feature 16" });
    act(() => slider.focus());
    fireEvent.keyDown(slider, { key: "ArrowRight" });
    fireEvent.keyDown(slider, { key: "ArrowRight" });
    fireEvent.keyDown(slider, { key: "PageUp" });
    expect(slider).toHaveAttribute("aria-valuenow", "1.2");
    act(() => vi.advanceTimersByTime(KEY_COMMIT_DELAY_MS - 10));
    expect(onCommit).not.toHaveBeenCalled();
    fireEvent.keyDown(slider, { key: "ArrowLeft" });
    act(() => vi.advanceTimersByTime(KEY_COMMIT_DELAY_MS));
    expect(onCommit).toHaveBeenCalledTimes(1);
    expect(onCommit).toHaveBeenCalledWith(1.1);
  });

  it("pointer: nothing is sent while dragging, one commit on release, snapped to the 0 detent near 0", () => {
    const onCommit = vi.fn();
    const { container } = render(<StrengthControl index={7} value={3} onCommit={onCommit} />);
    const root = container.querySelector("[data-orientation=horizontal]") as HTMLElement;
    // A 200px wide track: x=0 is -25, x=100 is 0, x=200 is +25.
    root.getBoundingClientRect = () => ({
      left: 0,
      right: 200,
      width: 200,
      top: 0,
      bottom: 20,
      height: 20,
      x: 0,
      y: 0,
      toJSON: () => ({}),
    });
    root.hasPointerCapture = () => true;
    fireEvent.pointerDown(root, { pointerId: 1, clientX: 150, button: 0 });
    fireEvent.pointerMove(root, { pointerId: 1, clientX: 160 });
    fireEvent.pointerMove(root, { pointerId: 1, clientX: 101 }); // +0.25: inside the detent
    expect(onCommit).not.toHaveBeenCalled();
    fireEvent.pointerUp(root, { pointerId: 1, clientX: 101 });
    expect(onCommit).toHaveBeenCalledTimes(1);
    expect(onCommit).toHaveBeenCalledWith(0);
  });

  it("the number box takes any finite value on Enter and refuses non-finite input inline", async () => {
    const user = userEvent.setup();
    const onCommit = vi.fn();
    render(<StrengthControl index={16} value={1} onCommit={onCommit} />);
    const box = screen.getByRole("textbox", { name: "Strength value of feature 16" });
    await user.clear(box);
    await user.type(box, "Infinity{Enter}");
    expect(screen.getByRole("alert")).toHaveTextContent("finite number");
    expect(box).toHaveAttribute("aria-invalid", "true");
    expect(onCommit).not.toHaveBeenCalled();
    await user.clear(box);
    await user.type(box, "25.5{Enter}");
    expect(onCommit).toHaveBeenCalledWith(25.5);
    expect(screen.queryByRole("alert")).toBeNull();
  });

  it("snapToDetent", () => {
    expect(snapToDetent(0.2)).toBe(0);
    expect(snapToDetent(-0.74)).toBe(0);
    expect(snapToDetent(0.76)).toBe(0.8);
    expect(snapToDetent(-4.26)).toBe(-4.3);
  });
});
