import { act, render, screen, waitFor } from "@testing-library/react";
import { ws } from "msw";
import { describe, expect, it } from "vitest";
import { server } from "@/test/server";
import { backoffDelay, useWebSocket } from "./useWebSocket";

const link = ws.link("ws://localhost:3000/ws/test");

function Probe({ frames }: { frames: unknown[] }) {
  const state = useWebSocket<{ n: number }>({
    path: "/ws/test",
    onMessage: (f) => frames.push(f),
    baseDelayMs: 20,
    maxDelayMs: 40,
  });
  return <output aria-label="socket">{state}</output>;
}

describe("useWebSocket", () => {
  it("backs off exponentially with jitter, capped", () => {
    expect(backoffDelay(0, 500, 15_000, () => 0.5)).toBe(500);
    expect(backoffDelay(3, 500, 15_000, () => 0.5)).toBe(4000);
    expect(backoffDelay(10, 500, 15_000, () => 0.5)).toBe(15_000);
    expect(backoffDelay(0, 500, 15_000, () => 0)).toBe(400);
    expect(backoffDelay(0, 500, 15_000, () => 1)).toBe(600);
  });

  it("delivers parsed frames, ignores non-JSON, and reconnects after the server closes", async () => {
    let connections = 0;
    server.use(
      link.addEventListener("connection", ({ client }) => {
        connections += 1;
        client.send("not json");
        client.send(JSON.stringify({ n: connections }));
        if (connections === 1) setTimeout(() => client.close(), 10);
      }),
    );
    const frames: unknown[] = [];
    render(<Probe frames={frames} />);
    await waitFor(() => expect(connections).toBe(2));
    await waitFor(() => expect(frames).toEqual([{ n: 1 }, { n: 2 }]));
    await waitFor(() => expect(screen.getByRole("status", { name: "socket" })).toHaveTextContent("open"));
    await act(async () => {});
  });
});
