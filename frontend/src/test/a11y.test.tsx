/**
 * axe-core over each tab as rendered (jsdom): no serious or critical violation. Colour contrast needs
 * layout and is not computed in jsdom; the palette's contrast is set in styles.css (muted text lifted to
 * pass AA) and checked in the browser by the end-to-end run.
 */
import { screen, waitFor } from "@testing-library/react";
import axe from "axe-core";
import { HttpResponse, http } from "msw";
import { describe, expect, it } from "vitest";
import { estimate, job, modelPreview } from "./fixtures";
import { renderApp } from "./render";
import { api, server } from "./server";

async function violations() {
  const result = await axe.run(document.body, {
    rules: { "color-contrast": { enabled: false }, region: { enabled: false } },
    resultTypes: ["violations"],
  });
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}

describe("accessibility (axe)", () => {
  for (const path of ["/models", "/saes", "/steering", "/profiles", "/monitor"]) {
    it(`${path} has no serious or critical violations`, async () => {
      server.use(http.get(api("/api/downloads"), () => HttpResponse.json({ data: [job()], count: 1 })));
      renderApp(path);
      await screen.findByRole("heading", { level: 1 });
      await waitFor(() => expect(screen.getByText("Connected")).toBeInTheDocument());
      expect(await violations()).toEqual([]);
    });
  }

  it("the load dialog has no serious or critical violations", async () => {
    server.use(http.get(api("/api/models/estimate"), () => HttpResponse.json(estimate())));
    renderApp("/models?load=Qwen%2FQwen2.5-0.5B");
    await screen.findByRole("figure", { name: "Memory estimate" });
    expect(await violations()).toEqual([]);
  });

  it("the model preview dialog has no serious or critical violations", async () => {
    server.use(http.get(api("/api/hub/models/*"), () => HttpResponse.json(modelPreview())));
    renderApp("/models?preview=org%2Fcustom-7b");
    await screen.findByRole("radio", { name: "4-bit" });
    expect(await violations()).toEqual([]);
  });
});
