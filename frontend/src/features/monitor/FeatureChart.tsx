import { memo, useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { ActivationFrame } from "@/ws/frames.gen";
import { valueAt } from "./monitorStore";

const COLORS = ["#22d3ee", "#fbbf24", "#c084fc", "#4ade80", "#f87171", "#94a3b8"];

/** Columns for uPlot: x = token number, one series per feature (0 where it was not captured). */
export function chartData(tokens: ActivationFrame[], features: number[]): uPlot.AlignedData {
  const xs = tokens.map((_, i) => i);
  return [xs, ...features.map((f) => tokens.map((t) => valueAt(t, f)))];
}

function canvasWorks(): boolean {
  try {
    return !!document.createElement("canvas").getContext("2d");
  } catch {
    return false;
  }
}

/**
 * A live line chart (uPlot, canvas) of the charted features over the selected request's tokens. The chart is
 * built once per feature set and fed new data with setData, so a streaming request redraws cheaply.
 */
export const FeatureChart = memo(function FeatureChart({
  tokens,
  features,
  labels,
}: {
  tokens: ActivationFrame[];
  features: number[];
  labels: Record<number, string>;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const featureKey = features.join(",");
  const tokensRef = useRef(tokens);
  tokensRef.current = tokens;

  // biome-ignore lint/correctness/useExhaustiveDependencies: rebuilt only when the charted features change
  useEffect(() => {
    const el = box.current;
    if (!el || !canvasWorks()) return;
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth || 600),
      height: 200,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: false } },
      axes: [
        { stroke: "#94a3b8", grid: { stroke: "rgba(71,85,105,.3)" }, label: "token" },
        { stroke: "#94a3b8", grid: { stroke: "rgba(71,85,105,.3)" } },
      ],
      series: [
        { label: "token" },
        ...features.map((f, i) => ({
          label: `#${f}${labels[f] ? ` ${labels[f].slice(0, 24)}` : ""}`,
          stroke: COLORS[i % COLORS.length],
          width: 1.5,
          points: { show: false },
        })),
      ],
    };
    plot.current = new uPlot(opts, chartData(tokensRef.current, features), el);
    // Only a new width resizes the chart (the legend changing the box's height must not loop).
    let width = opts.width;
    const ro = new ResizeObserver((entries) => {
      const w = Math.max(200, Math.round(entries[0]?.contentRect.width ?? width));
      if (w === width) return;
      width = w;
      plot.current?.setSize({ width: w, height: 200 });
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [featureKey]);

  useEffect(() => {
    plot.current?.setData(chartData(tokens, features));
  }, [tokens, features]);

  return (
    <figure aria-label="Activation chart" className="min-h-[200px] w-full">
      <div ref={box} className="w-full" />
      <figcaption className="sr-only">
        Activations of {features.map((f) => `feature ${f}`).join(", ") || "no feature"} over {tokens.length}{" "}
        tokens.
      </figcaption>
    </figure>
  );
});
