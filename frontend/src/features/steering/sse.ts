/**
 * Server-sent events from a fetch body: yields each event's `data:` (several data lines joined by "\n").
 * Comments (": ping") and other fields are skipped. Used for POST streams the generated client returns as a
 * ReadableStream (`parseAs: "stream"`), so its errors still come back as ApiError with the server's message.
 */
export async function* sseData(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n?/g, "\n");
      let sep = buffer.indexOf("\n\n");
      while (sep !== -1) {
        const event = buffer.slice(0, sep);
        buffer = buffer.slice(sep + 2);
        const data = event
          .split("\n")
          .filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, ""));
        if (data.length) yield data.join("\n");
        sep = buffer.indexOf("\n\n");
      }
    }
    const tail = buffer
      .split("\n")
      .filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5).replace(/^ /, ""));
    if (tail.length) yield tail.join("\n");
  } finally {
    reader.releaseLock();
  }
}

/** The first index where two token sequences differ (the shorter length when one is a prefix); null if equal. */
export function divergesAt(a: number[], b: number[]): number | null {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? null : n;
}
