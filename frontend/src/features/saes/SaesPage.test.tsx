import { screen, waitFor, within } from "@testing-library/react";
import { HttpResponse, http } from "msw";
import { describe, expect, it } from "vitest";
import { cachedRepo, demoSae, envelope, status } from "@/test/fixtures";
import { renderApp } from "@/test/render";
import { api, server } from "@/test/server";

const noSae = () => status({ sae: null, steering: { ...status().steering, features: [] } });

describe("SAEs tab: attach picker", () => {
  it("offers only the model's layers, defaults to the SAE's own, and sends the chosen one", async () => {
    const bodies: unknown[] = [];
    server.use(
      http.get(api("/api/status"), () => HttpResponse.json(noSae())),
      http.post(api("/api/saes/attach"), async ({ request }) => {
        bodies.push(await request.json());
        return HttpResponse.json({ attached: { ...demoSae, layer: 3 } });
      }),
    );
    const source = "google/gemma-scope:layer_2/width_16k";
    const { user } = renderApp(`/saes?attach=${encodeURIComponent(source)}`);
    const dialog = await screen.findByRole("dialog", { name: "Attach SAE" });
    const picker = await within(dialog).findByRole("combobox", { name: "Layer of millm-demo" });
    expect(picker).toHaveTextContent("Layer 2 (the SAE's own)");
    await user.click(picker);
    const options = await screen.findAllByRole("option");
    // the SAE's own layer + layers 0..3 of the 4-layer demo model, nothing beyond
    expect(options.map((o) => o.textContent)).toEqual([
      "Layer 2 (the SAE's own)",
      "Layer 0",
      "Layer 1",
      "Layer 2",
      "Layer 3",
    ]);
    await user.click(screen.getByRole("option", { name: "Layer 3" }));
    await user.click(within(dialog).getByRole("button", { name: "Attach" }));
    await waitFor(() => expect(bodies).toEqual([{ source, layer: 3 }]));
    await waitFor(() => expect(screen.queryByRole("dialog", { name: "Attach SAE" })).not.toBeInTheDocument());
  });

  it("sends no layer when the SAE's own is kept, and shows an attach error inline with Retry", async () => {
    const bodies: unknown[] = [];
    server.use(
      http.get(api("/api/status"), () => HttpResponse.json(noSae())),
      http.post(api("/api/saes/attach"), async ({ request }) => {
        bodies.push(await request.json());
        return HttpResponse.json(
          envelope("the SAE expects d_in 2304, the model has 192", "sae_mismatch", "source"),
          {
            status: 400,
          },
        );
      }),
    );
    const { user } = renderApp("/saes?attach=millm-demo-sae");
    const dialog = await screen.findByRole("dialog", { name: "Attach SAE" });
    expect(await within(dialog).findByRole("combobox", { name: "Layer of millm-demo" })).toHaveTextContent(
      "The SAE's own layer (from its config)",
    );
    await user.click(within(dialog).getByRole("button", { name: "Attach" }));
    const alert = await within(dialog).findByRole("alert");
    expect(alert).toHaveTextContent("the SAE expects d_in 2304, the model has 192");
    expect(alert).toHaveTextContent("Pick an SAE trained for this model, or another layer.");
    expect(bodies).toEqual([{ source: "millm-demo-sae", layer: null }]);
    await user.click(within(dialog).getByRole("button", { name: "Retry" }));
    await waitFor(() => expect(bodies).toHaveLength(2));
  });

  it("lists cached SAE folders with their layer and opens the picker from Attach", async () => {
    server.use(
      http.get(api("/api/status"), () => HttpResponse.json(noSae())),
      http.get(api("/api/cache"), () =>
        HttpResponse.json({
          data: [
            cachedRepo({
              repo_id: "google/gemma-scope-2b-pt-res",
              name: "gemma-scope-2b-pt-res",
              kind: "sae",
              sae_paths: ["layer_1/width_16k/average_l0_40", "layer_3/width_16k/average_l0_60"],
            }),
          ],
          count: 1,
          size_bytes: 1,
        }),
      ),
    );
    const { user, router } = renderApp("/saes");
    const list = await screen.findByRole("list", { name: "SAEs in google/gemma-scope-2b-pt-res" });
    expect(within(list).getByText("layer 3")).toBeInTheDocument();
    await user.click(
      within(list).getByRole("button", {
        name: "Attach google/gemma-scope-2b-pt-res:layer_3/width_16k/average_l0_60",
      }),
    );
    const picker = await screen.findByRole("combobox", { name: "Layer of millm-demo" });
    expect(picker).toHaveTextContent("Layer 3 (the SAE's own)");
    expect(router.state.location.search).toEqual({
      attach: "google/gemma-scope-2b-pt-res:layer_3/width_16k/average_l0_60",
    });
  });
});

describe("SAEs tab: the cache list", () => {
  const scope = cachedRepo({
    repo_id: "google/gemma-scope-2b-pt-res",
    name: "gemma-scope-2b-pt-res",
    kind: "sae",
    size_bytes: 300 * 1024 ** 2,
    sae_paths: ["layer_1/width_16k/average_l0_40"],
  });

  it("says how to get an SAE when the cache has none, and shows a failed listing as an alert", async () => {
    server.use(http.get(api("/api/cache"), () => HttpResponse.json({ data: [], count: 0, size_bytes: 0 })));
    const first = renderApp("/saes");
    const list = await screen.findByRole("region", { name: "Your SAEs" });
    expect(await within(list).findByText(/No SAEs in the cache yet/)).toHaveTextContent("millm-demo-sae");
    first.unmount();
    server.use(
      http.get(api("/api/cache"), () =>
        HttpResponse.json(envelope("the cache folder cannot be read", "storage_error"), { status: 500 }),
      ),
    );
    renderApp("/saes");
    const failed = await screen.findByRole("region", { name: "Your SAEs" });
    expect(await within(failed).findByRole("alert")).toHaveTextContent("the cache folder cannot be read");
  });

  it("deletes a cached SAE repo after confirming, saying how much it removes", async () => {
    let deleted = "";
    server.use(
      http.get(api("/api/cache"), () =>
        HttpResponse.json({ data: [scope], count: 1, size_bytes: scope.size_bytes }),
      ),
      http.delete(api("/api/cache/*"), ({ request }) => {
        deleted = decodeURIComponent(new URL(request.url).pathname.slice("/api/cache/".length));
        return HttpResponse.json({ repo_id: deleted, revision: null, freed_bytes: scope.size_bytes });
      }),
    );
    const { user } = renderApp("/saes");
    const list = await screen.findByRole("region", { name: "Your SAEs" });
    await within(list).findByText("gemma-scope-2b-pt-res");
    await user.click(
      within(list).getByRole("button", { name: "Delete google/gemma-scope-2b-pt-res from the cache" }),
    );
    const dialog = await screen.findByRole("alertdialog", { name: "Delete google/gemma-scope-2b-pt-res?" });
    expect(dialog).toHaveTextContent("This removes all its SAEs (300.0 MB) from the server's cache.");
    await user.click(within(dialog).getByRole("button", { name: "Delete" }));
    await waitFor(() => expect(deleted).toBe("google/gemma-scope-2b-pt-res"));
    await waitFor(() => expect(screen.queryByRole("alertdialog")).not.toBeInTheDocument());
  });
});

describe("SAEs tab: attached SAE", () => {
  it("shows the metadata and asks before detaching, saying what is cleared", async () => {
    let detached = false;
    server.use(
      http.get(api("/api/status"), () => HttpResponse.json(status({ active_profile: "yelling" }))),
      http.post(api("/api/saes/detach"), () => {
        detached = true;
        return HttpResponse.json({ attached: null });
      }),
    );
    const { user } = renderApp("/saes");
    const card = await screen.findByRole("region", { name: "Attached SAE" });
    for (const text of ["millm-demo-sae", "blocks.0.hook_resid_post", "1,536", "standard", "saelens"]) {
      expect(within(card).getAllByText(text).length).toBeGreaterThan(0);
    }
    await user.click(within(card).getByRole("button", { name: "Detach" }));
    const dialog = await screen.findByRole("alertdialog", { name: "Detach millm-demo-sae?" });
    expect(dialog).toHaveTextContent("Steering is cleared (1 feature).");
    expect(dialog).toHaveTextContent("The profile yelling is deactivated.");
    await user.click(within(dialog).getByRole("button", { name: "Detach" }));
    await waitFor(() => expect(detached).toBe(true));
  });

  it("links each labelled feature to Neuronpedia when the SAE has a Neuronpedia id", async () => {
    server.use(
      http.get(api("/api/status"), () =>
        HttpResponse.json(
          status({ sae: { ...demoSae, neuronpedia_id: "gemma-2-2b/20-gemmascope-res-16k" } }),
        ),
      ),
      http.get(api("/api/saes/attached/labels"), ({ request }) => {
        const q = new URL(request.url).searchParams.get("q");
        const data = [
          { index: 16, label: "SHOUTING, all caps" },
          { index: 40, label: "French words" },
        ].filter((f) => !q || f.label.toLowerCase().includes(q.toLowerCase()));
        return HttpResponse.json({ data, count: data.length });
      }),
    );
    const { user } = renderApp("/saes");
    const link = await screen.findByRole("link", { name: "Feature 16 on Neuronpedia (opens in a new tab)" });
    expect(link).toHaveAttribute("href", "https://www.neuronpedia.org/gemma-2-2b/20-gemmascope-res-16k/16");
    await user.type(screen.getByRole("searchbox", { name: "Search feature labels" }), "french");
    await waitFor(() => expect(screen.queryByText("SHOUTING, all caps")).not.toBeInTheDocument());
    expect(screen.getByRole("cell", { name: "#40" })).toBeInTheDocument();
  });

  it("tells the user to load a model first when none is loaded", async () => {
    server.use(
      http.get(api("/api/status"), () =>
        HttpResponse.json(status({ status: "no_model", model: null, sae: null })),
      ),
    );
    renderApp("/saes");
    const card = await screen.findByRole("region", { name: "No SAE attached" });
    expect(within(card).getByRole("link", { name: "Go to Models" })).toHaveAttribute("href", "/models");
  });
});
