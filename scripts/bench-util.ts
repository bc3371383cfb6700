/**
 * Small pieces shared by the benchmark scripts: summary statistics, timing of an API call, the
 * machine's description and writing a result file under bench-results/.
 */
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";

export interface Stat {
  name: string;
  n: number;
  median: number;
  p99: number;
  mean: number;
}

export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** The p-quantile (0..1) of an ascending array, nearest rank below; 0 for an empty one. */
export function quantile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
}

export function stat(name: string, samples: number[]): Stat {
  const s = [...samples].sort((a, b) => a - b);
  return {
    name,
    n: s.length,
    median: round(quantile(s, 0.5)),
    p99: round(quantile(s, 0.99)),
    mean: round(s.reduce((a, b) => a + b, 0) / Math.max(1, s.length)),
  };
}

export function median(samples: number[]): number {
  return quantile(
    [...samples].sort((a, b) => a - b),
    0.5,
  );
}

/** Milliseconds taken by fn; throws unless the API answered `expect`. */
export async function timed(
  fn: () => Promise<{ status: number; text: string }>,
  expect: number,
): Promise<number> {
  const t = process.hrtime.bigint();
  const r = await fn();
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.status !== expect) throw new Error(`unexpected ${r.status}: ${r.text}`);
  return ms;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface Machine {
  nproc: number;
  cpu: string;
  kernel: string;
  node: string;
  memGiB: number;
}

export function machine(): Machine {
  return {
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model ?? "unknown",
    kernel: os.release(),
    node: process.version,
    memGiB: round(os.totalmem() / 2 ** 30, 1),
  };
}

/** The process's soft limit on open files (`ulimit -n`), which the daemon inherits. */
export function openFileLimit(): number {
  const line = readFileSync("/proc/self/limits", "utf8")
    .split("\n")
    .find((l) => l.startsWith("Max open files"));
  return Number(line?.split(/\s+/)[3] ?? Number.NaN);
}

export function writeResult(file: string, data: unknown): string {
  mkdirSync("bench-results", { recursive: true });
  const path = `bench-results/${file}`;
  writeFileSync(
    path,
    `${JSON.stringify({ date: new Date().toISOString(), machine: machine(), ...(data as object) }, null, 2)}\n`,
  );
  return path;
}

/**
 * A module that profiles the process it is loaded into and writes `dir`/daemon-PID.cpuprofile at
 * exit. Node 20 refuses --cpu-prof in NODE_OPTIONS but allows --import, so a daemon started by a
 * helper we cannot change is profiled with NODE_OPTIONS=--import=<profilerImport(dir)>.
 */
export function profilerPreload(dir: string): string {
  return `
import { Session } from "node:inspector";
import { writeFileSync } from "node:fs";
const s = new Session();
s.connect();
s.post("Profiler.enable");
s.post("Profiler.start");
process.on("exit", () => {
  s.post("Profiler.stop", (err, r) => {
    if (!err) writeFileSync(${JSON.stringify(dir)} + "/daemon-" + process.pid + ".cpuprofile", JSON.stringify(r.profile));
  });
});`;
}

/** The functions with the most self time in a .cpuprofile. */
export function profileSummary(path: string, top = 15): { fn: string; selfMs: number; pct: number }[] {
  interface Node {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
  }
  const p = JSON.parse(readFileSync(path, "utf8")) as {
    nodes: Node[];
    samples: number[];
    timeDeltas: number[];
  };
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  p.samples.forEach((id, i) => {
    const n = byId.get(id);
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    total += dt;
    if (!n) return;
    const cf = n.callFrame;
    const where = cf.url ? `${cf.url.replace(/^.*\/(node_modules|dist)\//, "$1/")}:${cf.lineNumber + 1}` : "";
    const key = `${cf.functionName || "(anonymous)"} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
  });
  return [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([fn, ms]) => ({ fn, selfMs: round(ms, 0), pct: round((100 * ms) / total, 1) }));
}

/** The NODE_OPTIONS flag that loads profilerPreload(dir). */
export function profilerImport(dir: string): string {
  return `--import=data:text/javascript,${encodeURIComponent(profilerPreload(dir))}`;
}

/** The summary of the largest profile in `dir` (the daemon's), if any. */
export function largestProfileSummary(dir: string): ReturnType<typeof profileSummary> | undefined {
  const biggest = readdirSync(dir)
    .filter((f) => f.endsWith(".cpuprofile"))
    .map((f) => ({ f, size: statSync(join(dir, f)).size }))
    .sort((a, b) => b.size - a.size)[0];
  return biggest ? profileSummary(join(dir, biggest.f)) : undefined;
}

/**
 * Waits until the machine is quiet (all CPUs together under `busyPct` busy over one second), up to
 * `maxMs`: a previous part's namespaces are torn down by the kernel in the background (cleanup_net)
 * for a while after they are deleted, and would take CPU from the next measurement. Returns the
 * time waited and the last busy figure.
 */
export async function settle(busyPct = 15, maxMs = 120_000): Promise<{ waitedMs: number; busyPct: number }> {
  const ticks = () => {
    const f = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "")
      .trim()
      .split(/\s+/)
      .slice(1)
      .map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    return [total - (f[3] ?? 0) - (f[4] ?? 0), total] as const;
  };
  const t0 = Date.now();
  let busy = 100;
  while (Date.now() - t0 < maxMs) {
    const a = ticks();
    await sleep(1000);
    const b = ticks();
    busy = round((100 * (b[0] - a[0])) / Math.max(1, b[1] - a[1]), 1);
    if (busy < busyPct) break;
  }
  return { waitedMs: Date.now() - t0, busyPct: busy };
}
