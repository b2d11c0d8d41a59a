import { screen, waitFor } from "@testing-library/react";
import { HttpResponse, http } from "msw";
import { describe, expect, it } from "vitest";
import { status } from "@/test/fixtures";
import { renderApp } from "@/test/render";
import { api, server } from "@/test/server";

describe("/", () => {
  it("opens Steering when a model and an SAE are ready", async () => {
    const { router } = renderApp("/");
    await waitFor(() => expect(router.state.location.pathname).toBe("/steering"));
    expect(await screen.findByRole("heading", { level: 1, name: "Steering" })).toBeInTheDocument();
    expect(screen.getByRole("link", { name: "Steering" })).toHaveAttribute("aria-current", "page");
  });

  it("opens Models when no model is loaded, and the other tabs say where to fix it", async () => {
    server.use(
      http.get(api("/api/status"), () =>
        HttpResponse.json(status({ status: "no_model", model: null, sae: null, device: null })),
      ),
    );
    const { router, user } = renderApp("/");
    await waitFor(() => expect(router.state.location.pathname).toBe("/models"));
    await user.click(await screen.findByRole("link", { name: "Monitor" }));
    await screen.findByRole("heading", { level: 1, name: "Monitor" });
    expect(await screen.findByRole("region", { name: "No model loaded" })).toHaveTextContent(
      "A model must be loaded to watch feature activations.",
    );
    await user.click(screen.getByRole("link", { name: "Go to Models" }));
    await waitFor(() => expect(router.state.location.pathname).toBe("/models"));
  });

  it("shows the SAE notice on a tab that needs one when only a model is loaded", async () => {
    server.use(http.get(api("/api/status"), () => HttpResponse.json(status({ sae: null }))));
    renderApp("/steering");
    const notice = await screen.findByRole("region", { name: "No SAE attached" });
    expect(screen.getByRole("link", { name: "Go to SAEs" })).toHaveAttribute("href", "/saes");
    expect(notice).toHaveTextContent("An SAE must be attached to millm-demo to steer features.");
  });
});
