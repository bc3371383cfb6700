/**
 * Whether two runs of the peer benchmarks agree (`npm run bench -- --compare A.json[,B.json]`):
 * every figure of the table (a row's median for one system) and every ratio ctnet/peer, run A
 * against run B, judged by the machine's noise as each run measured it.
 *
 * A figure's noise is the 95 % confidence interval of its median, taken from its own samples
 * without assuming a distribution (order statistics: the ranks n/2 ± 0.98·√n), or their whole
 * range below 6 samples. Two figures agree when their intervals overlap. A ratio's interval runs
 * from ctnet's low end over the peer's high end to ctnet's high end over the peer's low end; two
 * ratios agree when those intervals overlap. Tails (p99) are not compared: one run's tail is a
 * handful of samples.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { quantile, round } from "../bench-util.js";
import type { PeersResult } from "./report.js";
import type { SystemId } from "./systems.js";
import type { Row } from "./workloads.js";

export interface Interval {
  median: number;
  lo: number;
  hi: number;
  n: number;
}

/** The median and its 95 % confidence interval (the range below 6 samples); undefined without samples. */
export function medianInterval(samples: number[]): Interval | undefined {
  const s = [...samples].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return undefined;
  // The table's own median (nearest rank), so that both show the same figure.
  const median = quantile(s, 0.5);
  if (n < 6) return { median, lo: s[0] as number, hi: s[n - 1] as number, n };
  const half = 0.98 * Math.sqrt(n);
  const lo = Math.max(1, Math.floor(n / 2 - half));
  const hi = Math.min(n, Math.ceil(n / 2 + 1 + half));
  return { median, lo: s[lo - 1] as number, hi: s[hi - 1] as number, n };
}

export const overlap = (a: { lo: number; hi: number }, b: { lo: number; hi: number }): boolean =>
  a.lo <= b.hi && b.lo <= a.hi;

/** ctnet's interval over the peer's; undefined where a ratio means nothing (a bound at or below 0). */
export function ratioInterval(
  ctnet: Interval,
  peer: Interval,
): { lo: number; hi: number; value: number } | undefined {
  if (ctnet.lo <= 0 || peer.lo <= 0) return undefined;
  return { value: ctnet.median / peer.median, lo: ctnet.lo / peer.hi, hi: ctnet.hi / peer.lo };
}

export interface FigureCheck {
  group: string;
  row: string;
  system: SystemId;
  unit: Row["unit"];
  a: Interval;
  b: Interval;
  /** b's median over a's, less 1 */
  change: number;
  agrees: boolean;
}

export interface RatioCheck {
  row: string;
  peer: SystemId;
  a: number;
  b: number;
  agrees: boolean;
}

export interface Comparison {
  a: string;
  b: string;
  figures: FigureCheck[];
  ratios: RatioCheck[];
}

function intervals(res: PeersResult, row: Row): Map<SystemId, Interval> {
  const out = new Map<SystemId, Interval>();
  for (const { id } of res.systems) {
    const i = medianInterval(row.samples[id] ?? []);
    // A DNS latency's median is over every query of its rounds, its samples are the rounds' medians.
    const shown = row.results[id]?.median;
    if (i && shown !== undefined)
      out.set(id, { ...i, median: shown, lo: Math.min(i.lo, shown), hi: Math.max(i.hi, shown) });
    else if (i) out.set(id, i);
  }
  return out;
}

export function compareRuns(a: PeersResult, b: PeersResult): Comparison {
  const figures: FigureCheck[] = [];
  const ratios: RatioCheck[] = [];
  for (const rowA of a.rows) {
    const rowB = b.rows.find((r) => r.group === rowA.group && r.name === rowA.name);
    if (!rowB) continue;
    const ia = intervals(a, rowA);
    const ib = intervals(b, rowB);
    for (const [system, x] of ia) {
      const y = ib.get(system);
      if (!y) continue;
      figures.push({
        group: rowA.group,
        row: rowA.name,
        system,
        unit: rowA.unit,
        a: x,
        b: y,
        change: x.median === 0 ? 0 : y.median / x.median - 1,
        agrees: overlap(x, y),
      });
    }
    const ca = ia.get("ctnet");
    const cb = ib.get("ctnet");
    if (!ca || !cb) continue;
    for (const [peer, pa] of ia) {
      const pb = ib.get(peer);
      if (peer === "ctnet" || !pb) continue;
      const ra = ratioInterval(ca, pa);
      const rb = ratioInterval(cb, pb);
      if (!ra || !rb) continue;
      ratios.push({ row: rowA.name, peer, a: ra.value, b: rb.value, agrees: overlap(ra, rb) });
    }
  }
  return { a: a.date, b: b.date, figures, ratios };
}

const num = (x: number) => String(Math.abs(x) >= 100 ? Math.round(x) : round(x, 2));
const pct = (x: number) => `${x >= 0 ? "+" : ""}${Math.round(100 * x)} %`;

/**
 * How far the machine moved between the runs, workload by workload: the median slow-down of B
 * against A over every figure in it, whichever system's (a time that grew, a rate that fell).
 * Interleaving makes the systems share it, so it cancels in the ratios but not in the figures.
 */
export function drift(c: Comparison): { group: string; median: number; lo: number; hi: number; n: number }[] {
  const groups = [...new Set(c.figures.map((f) => f.group))];
  return groups.map((group) => {
    // Oriented so that above 0 is slower in B, for times and rates alike.
    const changes = c.figures
      .filter((f) => f.group === group && f.a.median > 0 && f.b.median > 0)
      .map((f) => (f.unit === "ms" ? f.b.median / f.a.median : f.a.median / f.b.median) - 1)
      .sort((x, y) => x - y);
    return {
      group,
      median: quantile(changes, 0.5),
      lo: changes[0] ?? 0,
      hi: changes.at(-1) ?? 0,
      n: changes.length,
    };
  });
}

export function comparisonMarkdown(c: Comparison, labels: Record<string, string>): string {
  const label = (id: string) => labels[id] ?? id;
  const agreeing = c.figures.filter((f) => f.agrees).length;
  const ratiosAgreeing = c.ratios.filter((r) => r.agrees).length;
  const off = c.ratios.filter((r) => !r.agrees);
  const lines = [
    `Run A of ${c.a.slice(0, 16).replace("T", " ")} against run B of ${c.b.slice(0, 16).replace("T", " ")} (UTC): **${ratiosAgreeing} of ${c.ratios.length} ratios ctnet/peer and ${agreeing} of ${c.figures.length} figures agree within the noise each run measured.** A figure is a median with its 95 % confidence interval (from its samples, by order statistics; their range below 6 samples); figures agree when the intervals overlap, ratios when the intervals of ctnet's figure over the peer's overlap.`,
    "",
    off.length === 0
      ? "Every ratio ctnet/peer agrees."
      : `Ratios that do not agree: ${off.map((r) => `${r.row}, ctnet/${label(r.peer)} ${round(r.a, 2)} → ${round(r.b, 2)}`).join("; ")}.`,
    "",
    "Between the runs the machine itself moved. Per workload, how much slower run B was than run A over every figure in it (all systems: a time that grew or a rate that fell counts as slower; median and range) — the systems ran interleaved, so this drift cancels in the ratios but not in the figures:",
    "",
    "| workload | figures | B slower than A: median [range] |",
    "|---|---|---|",
    ...drift(c).map((d) => `| ${d.group} | ${d.n} | ${pct(d.median)} [${pct(d.lo)}, ${pct(d.hi)}] |`),
    "",
    "| workload | system | unit | run A: median [95 % interval] | run B | B/A | agrees |",
    "|---|---|---|---|---|---|---|",
    ...c.figures.map(
      (f) =>
        `| ${f.row} | ${label(f.system)} | ${f.unit} | ${num(f.a.median)} [${num(f.a.lo)}, ${num(f.a.hi)}] | ${num(f.b.median)} [${num(f.b.lo)}, ${num(f.b.hi)}] | ${pct(f.change)} | ${f.agrees ? "yes" : "**no**"} |`,
    ),
  ];
  return lines.join("\n");
}

const BEGIN = "<!-- rerun:begin -->";
const END = "<!-- rerun:end -->";

/** Replaces (or appends) the rerun section of docs/benchmarks.md. */
export function writeComparisonDocs(markdown: string): void {
  const path = "docs/benchmarks.md";
  const doc = existsSync(path) ? readFileSync(path, "utf8") : "# Benchmarks\n";
  const section = `${BEGIN}\n\n${markdown}\n\n${END}`;
  const a = doc.indexOf(BEGIN);
  const b = doc.indexOf(END);
  writeFileSync(
    path,
    a >= 0 && b > a
      ? `${doc.slice(0, a)}${section}${doc.slice(b + END.length)}`
      : `${doc.trimEnd()}\n\n### Does a rerun agree?\n\n${section}\n`,
  );
}

export function loadPeersResult(path: string): PeersResult {
  return JSON.parse(readFileSync(path, "utf8")) as PeersResult;
}
