/**
 * Transfer speed and ETA of download jobs, estimated in the browser from successive job snapshots
 * (the server reports bytes, not rates). One tracker per page; `observe` every snapshot you receive.
 */
interface Sample {
  t: number; // ms
  bytes: number;
  speed: number | null; // bytes/s, smoothed
}

const SMOOTHING = 0.3; // weight of the newest rate in the moving average

export class SpeedTracker {
  private samples = new Map<string, Sample>();

  observe(job: { id: string; bytes_done: number; state: string }, now = Date.now()): void {
    const prev = this.samples.get(job.id);
    if (job.state !== "running") {
      if (job.state !== "queued") this.samples.delete(job.id);
      return;
    }
    if (!prev || job.bytes_done < prev.bytes) {
      this.samples.set(job.id, { t: now, bytes: job.bytes_done, speed: null });
      return;
    }
    const dt = (now - prev.t) / 1000;
    if (dt < 0.25) return; // too close to measure; keep the older sample
    const rate = (job.bytes_done - prev.bytes) / dt;
    const speed = prev.speed == null ? rate : SMOOTHING * rate + (1 - SMOOTHING) * prev.speed;
    this.samples.set(job.id, { t: now, bytes: job.bytes_done, speed });
  }

  /** Bytes per second, or null until two snapshots a moment apart were seen. */
  speed(id: string): number | null {
    return this.samples.get(id)?.speed ?? null;
  }

  /** Seconds left at the current speed, or null when unknown. */
  eta(job: { id: string; bytes_done: number; bytes_total: number }): number | null {
    const s = this.speed(job.id);
    if (!s || s <= 0 || job.bytes_total <= 0) return null;
    return Math.max(0, (job.bytes_total - job.bytes_done) / s);
  }
}

export const speedTracker = new SpeedTracker();
