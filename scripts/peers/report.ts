/**
 * The peer benchmarks' report: the section of docs/benchmarks.md between the `peers:begin` and
 * `peers:end` markers (replaced on every run, the rest of the file is left alone) and its SVG
 * plots under docs/benchmarks/.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import type { Machine } from "../bench-util.js";
import { median, round } from "../bench-util.js";
import type { MultiHostNote } from "./multihost.js";
import { COLORS, lineChart, type Series } from "./svg.js";
import type { SystemId } from "./systems.js";
import type { DnsSeries, Failure, PeerOptions, PortsMilestone, Row } from "./workloads.js";

export interface PeersResult {
  date: string;
  machine: Machine;
  durationS: number;
  options: PeerOptions;
  systems: { id: SystemId; label: string }[];
  versions: Record<string, string>;
  installed: string[];
  settled: Record<string, { waitedMs: number; busyPct: number }>;
  rows: Row[];
  fill: Partial<Record<SystemId, number[]>>;
  ports: PortsMilestone[];
  dns: DnsSeries[];
  cannot: { system: string; what: string; why: string }[];
  multihost?: MultiHostNote;
  failures: Failure[];
  host: {
    unchanged: boolean;
    differences: string[];
    removedStrayPaths: string[];
    forcedCleanup: { system: SystemId; problems: string[] }[];
  };
}

const BEGIN = "<!-- peers:begin -->";
const END = "<!-- peers:end -->";

function cell(r: Row, id: SystemId): string {
  const s = r.results[id];
  if (!s) return "–";
  const v = (x: number) => (r.unit === "q/s" ? Math.round(x).toLocaleString("en") : String(round(x, 2)));
  return r.unit === "ms" ? `${v(s.median)} (${v(s.p99)})` : v(s.median);
}

function ratio(r: Row, peer: SystemId): string {
  const a = r.results.ctnet?.median;
  const b = r.results[peer]?.median;
  // A time that can be negative (an answer before `run` returned) has no meaningful ratio.
  if (a === undefined || b === undefined || a <= 0 || b <= 0) return "–";
  const x = a / b;
  return String(x < 0.1 ? Number(x.toPrecision(2)) : round(x, 2));
}

export function mainTable(res: PeersResult): string {
  const peers = res.systems.filter((s) => s.id !== "ctnet");
  const head = [
    "workload",
    "unit",
    ...res.systems.map((s) => s.label),
    ...peers.map((p) => `ctnet/${p.label}`),
  ];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const r of res.rows) {
    lines.push(
      `| ${r.name} | ${r.unit} | ${res.systems.map((s) => cell(r, s.id)).join(" | ")} | ${peers.map((p) => ratio(r, p.id)).join(" | ")} |`,
    );
  }
  return lines.join("\n");
}

function portsTable(res: PeersResult): string {
  const ids = res.systems.filter((s) => res.ports.some((m) => m.withPort[s.id] !== undefined));
  const head = ["Nth port", ...ids.map((s) => `${s.label}: with -p / without / cost`)];
  return [
    `| ${head.join(" | ")} |`,
    `|${head.map(() => "---").join("|")}|`,
    ...res.ports.map(
      (m) =>
        `| ${m.nth.toLocaleString("en")} | ${ids
          .map((s) =>
            m.withPort[s.id] === undefined
              ? "–"
              : `${round(m.withPort[s.id] as number, 1)} / ${round(m.withoutPort[s.id] as number, 1)} / ${round(m.publishCost[s.id] as number, 1)}`,
          )
          .join(" | ")} |`,
    ),
  ].join("\n");
}

function dnsTable(res: PeersResult): string {
  const qps = res.rows.find((r) => r.group === "dns" && r.unit === "q/s");
  const lines = [
    "| system | q/s at full speed (median of rounds) | full speed: p50 / p99 / p99.9 ms | resolver CPU | dnsperf CPU | paced: p50 / p99 / p99.9 ms | resolver CPU |",
    "|---|---|---|---|---|---|---|",
  ];
  for (const s of res.systems) {
    const max = res.dns.find((d) => d.system === s.id && d.mode === "max");
    const paced = res.dns.find((d) => d.system === s.id && d.mode === "paced");
    if (!max || !paced) continue;
    const q = qps?.results[s.id]?.median;
    lines.push(
      `| ${s.label} | ${q === undefined ? "–" : Math.round(q).toLocaleString("en")} | ${max.p50} / ${max.p99} / ${max.p999} | ${max.serverCpu} % | ${max.clientCpu} % | ${paced.p50} / ${paced.p99} / ${paced.p999} | ${paced.serverCpu} % |`,
    );
  }
  return lines.join("\n");
}

function rollingMedian(xs: number[], window: number): [number, number][] {
  return xs.map((_, i) => [i + 1, median(xs.slice(Math.max(0, i - window + 1), i + 1))]);
}

export function plots(res: PeersResult): Record<string, string> {
  const label = (id: string) => res.systems.find((s) => s.id === id)?.label ?? id;
  const fill: Series[] = Object.entries(res.fill)
    .filter(([, xs]) => xs && xs.length > 0)
    .map(([id, xs]) => ({
      name: label(id),
      color: COLORS[id] ?? "black",
      points: rollingMedian(xs as number[], 10),
    }));
  const dns: Series[] = res.dns.map((d) => ({
    name: `${label(d.system)}, ${d.mode === "max" ? "full speed" : "paced"}`,
    color: COLORS[d.system] ?? "black",
    dashed: d.mode === "max",
    points: d.cdf.map(([ms, q]) => [ms, 100 * q]),
  }));
  const out: Record<string, string> = {};
  if (fill.length > 0)
    out["fill.svg"] = lineChart({
      title: "run -d as one network fills (rolling median of 10)",
      xLabel: "containers on the network",
      yLabel: "ms per run -d (CNI: netns + ADD)",
      series: fill,
    });
  if (dns.length > 0)
    out["dns-latency.svg"] = lineChart({
      title: `Embedded DNS latency (dnsperf; paced = ${res.options.dnsRate.toLocaleString("en")} q/s)`,
      xLabel: "latency, ms (log scale)",
      yLabel: "queries answered within (%)",
      series: dns,
      logX: true,
      yMin: 0,
      yMax: 100,
      yTick: (y) => `${y} %`,
    });
  return out;
}

function multiHostSection(res: PeersResult): string[] {
  const m = res.multihost;
  if (!m) return [];
  const label = (id: string) => res.systems.find((s) => s.id === id)?.label ?? id;
  const each = (x: Partial<Record<SystemId, number>>) =>
    Object.entries(x)
      .map(([id, v]) => `${label(id)} ${v}`)
      .join(", ");
  return [
    "#### Multi-host",
    "",
    `The multihost rows run in one lab (\`ctnet lab up\`): ${m.hosts} hosts with ctnet daemons in a cluster and ${m.hosts} machines on the same underlay bridge with dockerd in a swarm (an attachable overlay network). Each round starts a container with a fresh address on the next host in turn (Engine API create + start) while a container on another host pings that address with fping at a 1 ms period, holding a permanent neighbour entry for it, so the figure is the time until the pinger's host can forward to the new container; ctnet and Docker alternate round by round. "run returned → first echo reply" is negative when the container answered before \`run\` returned (no ratio then). Rounds without a reply within 5 s: ${each(m.unanswered)}. Container MTU on the overlay: ${each(m.mtu)}. iperf3 runs from a container on the second host to one on the first, and host to host over the underlay for reference.`,
    "",
  ];
}

export function peersMarkdown(res: PeersResult, plotFiles: string[]): string {
  const m = res.machine;
  const o = res.options;
  const versions = Object.entries(res.versions)
    .map(([k, v]) => `${k} ${v}`)
    .join(", ");
  const settled = Object.entries(res.settled)
    .map(([w, s]) => `${w} ${s.busyPct} %`)
    .join(", ");
  const out = [
    BEGIN,
    "",
    `### Run of ${res.date.slice(0, 10)} (\`npm run bench -- --peers\`)`,
    "",
    `Machine: ${m.nproc} × ${m.cpu}, ${m.memGiB} GiB, kernel ${m.kernel}, Node ${m.node}. Versions: ${versions}.`,
    "",
    `Options: \`--peer-rounds ${o.rounds} --fill ${o.ctnetFill} --peer-fill ${o.peerFill} --ports-total ${o.ctnetPorts} --peer-ports-total ${o.peerPorts} --peer-ports-probes ${o.portsProbes} --peer-dns-seconds ${o.dnsSeconds} --peer-dns-rounds ${o.dnsRounds} --peer-dns-rate ${o.dnsRate} --peer-iperf-seconds ${o.iperfSeconds} --peer-iperf-rounds ${o.iperfRounds} --peer-multi-hosts ${o.multiHosts} --peer-multi-rounds ${o.multiRounds}\`. ` +
      `Comparison part: ${round(res.durationS / 60, 1)} min${res.installed.length > 0 ? ` (with installing ${res.installed.join(", ")})` : ""}. Machine busy before each workload (all CPUs): ${settled}.`,
    "",
    res.host.unchanged
      ? "The machine's network after the run was as before it: links, addresses, routes and rules of the root namespace, its nftables ruleset (iptables-nft's tables included), forwarding sysctls, and no namespace or mount of the run left."
      : `**The machine's network differed after the run:**\n\n\`\`\`\n${res.host.differences.join("\n")}\n\`\`\``,
    "",
    "Cells are `median (p99)` for times, medians for rates; ratios are ctnet's median over the peer's: **below 1 means ctnet is faster for times (ms), above 1 means ctnet is faster for q/s and Gbit/s**. Every figure is the command a user types (`docker …` against ctnet or dockerd, `podman …`), CLI start-up included; the CLI floor row is that start-up alone, and the Engine API row is `POST /containers/create` + `/start` without any CLI.",
    "",
    mainTable(res),
    "",
    "#### Published ports",
    "",
    "Median `run -d` (ms) of probe containers publishing exactly the Nth port, of the same container without `-p`, and the difference (what publishing the Nth port costs). Ports are filled by bulk containers publishing 100-port ranges (`-p 0.0.0.0:A-B:1000-1099`).",
    "",
    portsTable(res),
    "",
    "#### Embedded DNS",
    "",
    `dnsperf in a container's network namespace (\`nsenter --net\`, dnsperf from the host), ${o.dnsNames} container names, ${o.dnsRounds} rounds of ${o.dnsSeconds} s per mode: full speed (\`-q 100\`) and paced (\`-Q ${o.dnsRate}\`). Latency quantiles are over every query of the rounds (dnsperf \`-v\`). CPU is % of one core over the runs: the resolver process (ctnet's daemon, dockerd, aardvark-dns) and dnsperf.`,
    "",
    dnsTable(res),
    "",
    ...plotFiles.map((f) => `![${f}](benchmarks/${f})\n`),
    "#### How the peers were run, what they cannot do here, and where a workload was cut",
    "",
    ...res.cannot.map((c) => `- **${c.system}**, ${c.what}: ${c.why}`),
    "",
    ...multiHostSection(res),
  ];
  if (res.failures.length > 0) {
    out.push("#### Failures in this run", "");
    for (const f of res.failures)
      out.push(`- ${f.system}, ${f.workload}: ${f.error.replace(/\n/g, " ").slice(0, 300)}`);
    out.push("");
  }
  out.push(END);
  return out.join("\n");
}

/** Writes the plots and replaces (or appends) the marked section of docs/benchmarks.md. */
export function writeDocs(res: PeersResult): void {
  mkdirSync("docs/benchmarks", { recursive: true });
  const files = plots(res);
  for (const [name, svg] of Object.entries(files)) writeFileSync(`docs/benchmarks/${name}`, svg);
  const section = peersMarkdown(res, Object.keys(files));
  const path = "docs/benchmarks.md";
  const doc = existsSync(path) ? readFileSync(path, "utf8") : "# Benchmarks\n";
  const a = doc.indexOf(BEGIN);
  const b = doc.indexOf(END);
  const next =
    a >= 0 && b > a
      ? `${doc.slice(0, a)}${section}${doc.slice(b + END.length)}`
      : `${doc.trimEnd()}\n\n## Side by side with Docker, Podman and the CNI bridge plugin\n\n${section}\n`;
  writeFileSync(path, next);
}
