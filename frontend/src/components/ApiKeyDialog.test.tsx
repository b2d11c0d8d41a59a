import { screen, waitFor, within } from "@testing-library/react";
import { HttpResponse, http } from "msw";
import { describe, expect, it } from "vitest";
import { wsUrl } from "@/api/client";
import { envelope, status } from "@/test/fixtures";
import { renderApp } from "@/test/render";
import { api, server } from "@/test/server";

describe("API key", () => {
  it("asks for the key on a 401, stores it and sends it as a Bearer token from then on", async () => {
    const seen: { auth: string | null; client: string | null }[] = [];
    server.use(
      http.get(api("/api/status"), ({ request }) => {
        const auth = request.headers.get("Authorization");
        seen.push({ auth, client: request.headers.get("X-MiLLM-Client") });
        if (auth !== "Bearer s3cret")
          return HttpResponse.json(
            {
              error: {
                ...envelope("Invalid API key.", "invalid_api_key").error,
                type: "authentication_error",
              },
            },
            { status: 401 },
          );
        return HttpResponse.json(status());
      }),
    );
    const { user } = renderApp("/models");
    const dialog = await screen.findByRole("dialog", { name: "API key required" });
    expect(seen[0]).toEqual({ auth: null, client: "web" });
    await user.type(within(dialog).getByLabelText("API key"), "s3cret");
    await user.click(within(dialog).getByRole("button", { name: "Save key" }));
    await waitFor(() => expect(seen.at(-1)).toEqual({ auth: "Bearer s3cret", client: "web" }));
    expect(localStorage.getItem("millm.apiKey")).toBe("s3cret");
    expect(await screen.findByText("Serving")).toBeInTheDocument();
    expect(screen.queryByRole("dialog", { name: "API key required" })).not.toBeInTheDocument();
    // WebSockets cannot send headers: the key goes in the query string
    expect(new URL(wsUrl("/ws/monitor")).searchParams.get("api_key")).toBe("s3cret");
  });

  it("sends X-MiLLM-Client on state-changing requests without a key", async () => {
    let header: string | null = null;
    server.use(
      http.post(api("/api/saes/detach"), ({ request }) => {
        header = request.headers.get("X-MiLLM-Client");
        return HttpResponse.json({ attached: null });
      }),
    );
    const { user } = renderApp("/saes");
    await user.click(await screen.findByRole("button", { name: "Detach" }));
    await user.click(within(await screen.findByRole("alertdialog")).getByRole("button", { name: "Detach" }));
    await waitFor(() => expect(header).toBe("web"));
    expect(wsUrl("/ws/downloads")).toBe("ws://localhost:3000/ws/downloads");
  });

  it("toasts a failed mutation with the server's message and what to do next", async () => {
    server.use(
      http.post(api("/api/saes/detach"), () =>
        HttpResponse.json(envelope("No model is loaded.", "model_not_loaded"), { status: 503 }),
      ),
    );
    const { user } = renderApp("/saes");
    await user.click(await screen.findByRole("button", { name: "Detach" }));
    await user.click(within(await screen.findByRole("alertdialog")).getByRole("button", { name: "Detach" }));
    const toasts = await screen.findByRole("region", { name: /Notifications/ });
    expect(await within(toasts).findByText("Could not detach the SAE")).toBeInTheDocument();
    expect(
      within(toasts).getByText("No model is loaded. Load a model on the Models tab first."),
    ).toBeInTheDocument();
  });
});
