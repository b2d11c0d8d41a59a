import { screen, waitFor, within } from "@testing-library/react";
import { HttpResponse, http } from "msw";
import { describe, expect, it } from "vitest";
import type { SteeringStateOut } from "@/client";
import { status } from "@/test/fixtures";
import { renderApp } from "@/test/render";
import { api, server } from "@/test/server";

function steeringServer(initial: SteeringStateOut) {
  let state = initial;
  const calls: { method: string; body: unknown }[] = [];
  server.use(
    http.get(api("/api/status"), () => HttpResponse.json(status({ steering: state }))),
    http.patch(api("/api/steering"), async ({ request }) => {
      const body = (await request.json()) as {
        features: { index: number; strength: number | null }[];
        mode: string | null;
      };
      calls.push({ method: "PATCH", body });
      const map = new Map(state.features.map((f) => [f.index, f]));
      for (const f of body.features) {
        if (f.strength === null) map.delete(f.index);
        else
          map.set(f.index, { index: f.index, strength: f.strength, label: f.index === 16 ? "CAPS" : null });
      }
      state = { ...state, mode: (body.mode as "add") ?? state.mode, features: [...map.values()] };
      return HttpResponse.json(state);
    }),
    http.post(api("/api/steering/disable"), () => {
      calls.push({ method: "disable", body: null });
      state = { ...state, enabled: false };
      return HttpResponse.json(state);
    }),
    http.post(api("/api/steering/enable"), () => {
      calls.push({ method: "enable", body: null });
      state = { ...state, enabled: true };
      return HttpResponse.json(state);
    }),
    http.get(api("/api/saes/attached/labels"), ({ request }) => {
      const q = new URL(request.url).searchParams.get("q") ?? "";
      const all = [
        { index: 16, label: "CAPS: all-caps shouting" },
        { index: 40, label: "weather words" },
      ];
      const data = all.filter(
        (l) => !q || l.label.toLowerCase().includes(q.toLowerCase()) || String(l.index) === q,
      );
      return HttpResponse.json({ data, count: data.length });
    }),
  );
  return { calls, get: () => state };
}

const off: SteeringStateOut = {
  enabled: true,
  mode: "add",
  normalize: false,
  steer_special_tokens: true,
  features: [],
  profile: null,
};

describe("Steering tab", () => {
  it("shows the applied features with labels, and puts them in the URL", async () => {
    steeringServer({ ...off, features: [{ index: 16, strength: 4, label: "CAPS" }] });
    const { router, user } = renderApp("/steering");
    const row = await screen.findByRole("listitem", { name: "Feature 16" });
    expect(within(row).getByText("CAPS")).toBeInTheDocument();
    expect(within(row).getByRole("slider", { name: "Strength of feature 16" })).toHaveAttribute(
      "aria-valuenow",
      "4",
    );
    expect(screen.getByText(/Steering is ON: 1 feature applied/)).toBeInTheDocument();
    // A change writes the whole selection to the URL.
    await user.click(within(row).getByRole("switch", { name: "Apply feature 16" }));
    await waitFor(() => expect(router.state.location.search).toMatchObject({ features: "16:4~" }));
  });

  it("the playground's columns come from the URL and go back to it", async () => {
    steeringServer({ ...off, features: [{ index: 16, strength: 4, label: "CAPS" }] });
    const { router, user } = renderApp("/steering?columns=u%7Cs%7Cc%3A7%3A-3");
    expect(await screen.findByRole("region", { name: "Custom 7:-3 answer" })).toBeInTheDocument();
    expect(screen.getAllByRole("region", { name: /answer$/ })).toHaveLength(3);
    await user.click(screen.getByRole("button", { name: "Remove column Steered" }));
    await waitFor(() => expect(router.state.location.search).toMatchObject({ columns: "u|c:7:-3" }));
    expect(screen.queryByRole("region", { name: "Steered answer" })).toBeNull();
  });

  it("search the labels, add the CAPS feature, set its strength with the keyboard: PATCHes sent", async () => {
    const srv = steeringServer(off);
    const { user } = renderApp("/steering");
    await user.type(await screen.findByRole("searchbox", { name: "Search labels" }), "caps");
    await user.click(await screen.findByRole("button", { name: /^Add feature #16 CAPS/ }));
    const slider = await screen.findByRole("slider", { name: "Strength of feature 16" });
    await waitFor(() =>
      expect(srv.calls[0]).toEqual({
        method: "PATCH",
        body: { features: [{ index: 16, strength: 0 }], mode: null },
      }),
    );
    slider.focus();
    await user.keyboard("{PageUp}{PageUp}{PageUp}{ArrowRight}");
    await waitFor(() => expect(srv.get().features).toEqual([{ index: 16, strength: 3.1, label: "CAPS" }]));
    // One PATCH for the add, one for the whole key sequence (debounced).
    expect(srv.calls.filter((c) => c.method === "PATCH")).toHaveLength(2);
  });

  it("paste a list: good entries are added, each bad one gets an inline error", async () => {
    const srv = steeringServer(off);
    const { user } = renderApp("/steering");
    const box = await screen.findByRole("textbox", { name: "Paste a list" });
    await user.type(box, "16, 40:2.5, 2000:1, 7=abc");
    await user.click(screen.getByRole("button", { name: "Add list" }));
    expect(
      await screen.findByText(/index 2000 is out of range: this SAE has 1536 features/),
    ).toBeInTheDocument();
    expect(screen.getByText(/strength “abc” is not a finite number/)).toBeInTheDocument();
    await waitFor(() =>
      expect(srv.calls[0].body).toEqual({
        features: [
          { index: 16, strength: 1 },
          { index: 40, strength: 2.5 },
        ],
        mode: null,
      }),
    );
    expect(box).toHaveValue("2000:1, 7=abc");
    expect(await screen.findByRole("listitem", { name: "Feature 40" })).toBeInTheDocument();
  });

  it("add by index refuses an index ≥ d_sae inline", async () => {
    const srv = steeringServer(off);
    const { user } = renderApp("/steering");
    await user.type(await screen.findByRole("textbox", { name: /Feature index/ }), "1536");
    await user.click(screen.getByRole("button", { name: "Add feature" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("less than 1536");
    expect(srv.calls).toHaveLength(0);
  });

  it("the Steering switch turns server-wide steering off and on", async () => {
    const srv = steeringServer({ ...off, features: [{ index: 16, strength: 4, label: "CAPS" }] });
    const { user } = renderApp("/steering");
    const sw = await screen.findByRole("switch", { name: "Steering" });
    expect(sw).toHaveAttribute("aria-checked", "true");
    await user.click(sw);
    await waitFor(() => expect(sw).toHaveAttribute("aria-checked", "false"));
    expect(screen.getByText(/Steering is OFF/)).toBeInTheDocument();
    await user.click(sw);
    await waitFor(() => expect(sw).toHaveAttribute("aria-checked", "true"));
    expect(srv.calls.map((c) => c.method)).toEqual(["disable", "enable"]);
  });

  it("remove sends strength null; a server error is toasted with its message", async () => {
    const srv = steeringServer({ ...off, features: [{ index: 16, strength: 4, label: "CAPS" }] });
    const { user } = renderApp("/steering");
    await user.click(await screen.findByRole("button", { name: "Remove feature 16" }));
    await waitFor(() =>
      expect(srv.calls[0].body).toEqual({ features: [{ index: 16, strength: null }], mode: null }),
    );
    server.use(
      http.patch(api("/api/steering"), () =>
        HttpResponse.json(
          {
            error: {
              message: "feature 40 is out of range",
              type: "invalid_request_error",
              param: "features[0].index",
              code: null,
            },
          },
          { status: 400 },
        ),
      ),
    );
    await user.type(screen.getByRole("textbox", { name: /Feature index/ }), "40");
    await user.click(screen.getByRole("button", { name: "Add feature" }));
    expect(await screen.findByText(/feature 40 is out of range/)).toBeInTheDocument();
  });
});
