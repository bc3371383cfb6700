/**
 * The workloads of the peer benchmarks. Every workload measures the systems interleaved — round r
 * runs each system once, in an order rotated by r (A B C D, B C D A, …) — so that the machine's
 * drift, and other work on it, hits all of them alike. A system that fails a step is dropped from
 * the rest of that workload and the failure is recorded; the other systems go on.
 *
 * WORKLOADS below lists them in the order they run.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { cpuTicks, dnsperf, machineTicks } from "../bench-dns.js";
import { quantile, round, settle } from "../bench-util.js";
import { neighbourOf, removeNeighbour, run } from "./host.js";
import { iperf } from "./iperf.js";
import { type MultiHostNote, multiHost } from "./multihost.js";
import type { Capability, PortRange, System, SystemId } from "./systems.js";

export interface PeerOptions {
  /** Rounds of the network, run, connect and API workloads. */
  rounds: number;
  /** Containers in the fill: ctnet's and the peers'. */
  ctnetFill: number;
  peerFill: number;
  /** Ports to reach: ctnet's and the peers'. */
  ctnetPorts: number;
  peerPorts: number;
  /** Probe containers per port milestone (each with and without -p). */
  portsProbes: number;
  dnsSeconds: number;
  dnsRounds: number;
  /** Queries/s of the paced DNS run. */
  dnsRate: number;
  /** Named containers to resolve. */
  dnsNames: number;
  iperfSeconds: number;
  iperfRounds: number;
  /** Hosts per system in the multi-host workload, and its convergence rounds. */
  multiHosts: number;
  multiRounds: number;
}

export interface Summary {
  n: number;
  median: number;
  p99: number;
  mean: number;
}

export interface Row {
  group: string;
  name: string;
  unit: "ms" | "q/s" | "Gbit/s";
  better: "lower" | "higher";
  results: Partial<Record<SystemId, Summary>>;
  samples: Partial<Record<SystemId, number[]>>;
}

export interface Failure {
  system: SystemId;
  workload: string;
  error: string;
}

export interface PortsMilestone {
  nth: number;
  /** Medians of the probes' `run -d` with and without -p, and their difference. */
  withPort: Partial<Record<SystemId, number>>;
  withoutPort: Partial<Record<SystemId, number>>;
  publishCost: Partial<Record<SystemId, number>>;
}

export interface DnsSeries {
  system: SystemId;
  mode: "max" | "paced";
  /** [latency ms, fraction of queries at or below it], for the distribution plot. */
  cdf: [number, number][];
  p50: number;
  p99: number;
  p999: number;
  queries: number;
  /** The resolver process's CPU time over the runs, in % of one core. */
  serverCpu: number;
  /** dnsperf's, the same way. */
  clientCpu: number;
}

export interface Context {
  systems: System[];
  o: PeerOptions;
  dir: string;
  /** The busybox image every system imports. */
  imageTar: string;
  rows: Row[];
  failures: Failure[];
  /** Per-container `run -d` times as the network filled, by system. */
  fill: Partial<Record<SystemId, number[]>>;
  ports: PortsMilestone[];
  dns: DnsSeries[];
  /** Machine load seen before each workload. */
  settled: Record<string, { waitedMs: number; busyPct: number }>;
  multihost?: MultiHostNote;
  /** What a workload had to clean up by force, by system. */
  forced: { system: SystemId; problems: string[] }[];
}

export function summary(samples: number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  return {
    n: s.length,
    median: round(quantile(s, 0.5), 3),
    p99: round(quantile(s, 0.99), 3),
    mean: round(s.reduce((a, b) => a + b, 0) / Math.max(1, s.length), 3),
  };
}

function rowOf(ctx: Context, group: string, name: string, unit: Row["unit"]): Row {
  let row = ctx.rows.find((r) => r.group === group && r.name === name);
  if (!row) {
    row = {
      group,
      name,
      unit,
      better: unit === "ms" ? "lower" : "higher",
      results: {},
      samples: {},
    };
    ctx.rows.push(row);
  }
  return row;
}

function record(
  ctx: Context,
  group: string,
  name: string,
  s: System,
  value: number,
  unit: Row["unit"] = "ms",
) {
  const row = rowOf(ctx, group, name, unit);
  const list = row.samples[s.id] ?? [];
  list.push(round(value, 3));
  row.samples[s.id] = list;
}

/** Fills each row's summaries from its samples. */
export function summarise(ctx: Context): void {
  for (const row of ctx.rows)
    for (const [id, list] of Object.entries(row.samples))
      if (list && list.length > 0 && !row.results[id as SystemId])
        row.results[id as SystemId] = summary(list);
}

function rotate<T>(xs: T[], k: number): T[] {
  if (xs.length === 0) return [];
  const s = k % xs.length;
  return [...xs.slice(s), ...xs.slice(0, s)];
}

function failedIn(ctx: Context, workload: string, s: System): boolean {
  return ctx.failures.some((f) => f.system === s.id && f.workload === workload);
}

/**
 * Runs fn(system, round) for `rounds` rounds, rotating the systems' order each round (starting at
 * `offset`); a system whose step throws is skipped for the rest of the workload.
 */
async function interleave(
  ctx: Context,
  workload: string,
  systems: System[],
  rounds: number,
  fn: (s: System, r: number) => Promise<void>,
  offset = 0,
): Promise<void> {
  for (let r = 0; r < rounds; r++) {
    for (const s of rotate(systems, r + offset)) {
      if (failedIn(ctx, workload, s)) continue;
      try {
        await fn(s, r);
      } catch (err) {
        fail(ctx, s, workload, err);
      }
    }
  }
}

function fail(ctx: Context, s: System, workload: string, err: unknown): void {
  const error = err instanceof Error ? err.message : String(err);
  ctx.failures.push({ system: s.id, workload, error });
  console.error(`peers: ${s.id} failed in ${workload}: ${error}`);
}

function able(ctx: Context, cap: Capability): System[] {
  return ctx.systems.filter((s) => s.can.has(cap));
}

/** Runs `fn` on each system for set-up (not measured); a failure skips the system in the workload. */
async function each(ctx: Context, workload: string, systems: System[], fn: (s: System) => Promise<unknown>) {
  await interleave(ctx, workload, systems, 1, async (s) => {
    await fn(s);
  });
}

/**
 * Removes the workload's containers and networks from every system that took part, or with
 * `recycle` replaces the systems that can be by fresh ones.
 */
async function cleanUp(
  ctx: Context,
  workload: string,
  systems: System[],
  nets: string[],
  recycle = false,
): Promise<void> {
  const took: string[] = [];
  for (const s of systems) {
    const t0 = Date.now();
    try {
      if (recycle && s.recycle) {
        await s.recycle();
        took.push(`${s.id} recycled in ${round((Date.now() - t0) / 1000, 1)} s`);
        continue;
      }
      await s.removeAllContainers();
      for (const n of nets) await s.networkRm(n).catch(() => 0);
    } catch (err) {
      fail(ctx, s, `${workload} (clean-up)`, err);
    }
    took.push(`${s.id} ${round((Date.now() - t0) / 1000, 1)} s`);
  }
  console.error(`peers: ${workload} clean-up: ${took.join(", ")}`);
}

/** Network create and remove. */
async function networkWorkload(ctx: Context): Promise<void> {
  const systems = able(ctx, "network");
  await interleave(ctx, "network", systems, ctx.o.rounds, async (s, r) => {
    record(ctx, "network", "network create", s, await s.networkCreate(`pn${r}`, `10.201.${r % 250}.0/24`));
    record(ctx, "network", "network rm", s, await s.networkRm(`pn${r}`));
  });
}

/** `run -d` on a network, connect/disconnect of running containers, `rm -f`, the Engine API and the CLI floor. */
async function containersWorkload(ctx: Context): Promise<void> {
  const systems = able(ctx, "run");
  const nets = ["prun", "pextra"];
  await each(ctx, "containers", systems, async (s) => {
    await s.networkCreate("prun", "10.202.0.0/16");
    await s.networkCreate("pextra", "10.203.0.0/16");
    // The first starts run cold code paths (and fill page caches) in every system.
    for (let i = 0; i < 2; i++) {
      await s.run(`warm${i}`, "prun");
      await s.rm(`warm${i}`);
    }
  });
  await interleave(ctx, "containers", systems, ctx.o.rounds, async (s) => {
    record(ctx, "containers", "CLI floor (version; CNI: VERSION)", s, await s.floor());
  });
  await interleave(ctx, "containers", systems, ctx.o.rounds, async (s, r) => {
    record(ctx, "containers", "run -d on a network", s, await s.run(`r${r}`, "prun"));
  });
  const connectable = systems.filter((s) => s.can.has("connect"));
  await interleave(ctx, "containers", connectable, ctx.o.rounds, async (s, r) => {
    record(ctx, "containers", "network connect (attach)", s, await s.connect("pextra", `r${r}`));
    record(ctx, "containers", "network disconnect (detach)", s, await s.disconnect("pextra", `r${r}`));
  });
  await interleave(ctx, "containers", systems, ctx.o.rounds, async (s, r) => {
    record(ctx, "containers", "rm -f of a running container", s, await s.rm(`r${r}`));
  });
  await interleave(ctx, "containers", able(ctx, "api"), ctx.o.rounds, async (s, r) => {
    record(ctx, "containers", "Engine API: create + start", s, await s.apiRun(`a${r}`, "prun"));
  });
  await cleanUp(ctx, "containers", systems, nets);
}

/** Fills one network container by container; each `run -d` is timed. */
async function fillWorkload(ctx: Context): Promise<void> {
  const systems = able(ctx, "fill");
  await each(ctx, "fill", systems, (s) => s.networkCreate("pfill", "10.204.0.0/16"));
  const target = (s: System) => (s.id === "ctnet" ? ctx.o.ctnetFill : ctx.o.peerFill);
  const most = Math.max(0, ...systems.map(target));
  for (const s of systems) ctx.fill[s.id] = [];
  for (let i = 0; i < most; i++) {
    const due = systems.filter((s) => target(s) > i);
    await interleave(
      ctx,
      "fill",
      due,
      1,
      async (s) => {
        (ctx.fill[s.id] as number[]).push(round(await s.run(`f${i}`, "pfill"), 3));
      },
      i,
    );
    if (i % 100 === 99) console.error(`peers: fill ${i + 1}/${most}`);
  }
  const windows = new Set([50, ctx.o.peerFill, ctx.o.ctnetFill]);
  for (const end of [...windows].sort((a, b) => a - b)) {
    const start = Math.max(0, end - 50);
    for (const s of ctx.systems) {
      const series = ctx.fill[s.id];
      if (!series || series.length < end) continue;
      const row = rowOf(ctx, "fill", `fill: run -d of containers ${start + 1}–${end}`, "ms");
      row.samples[s.id] = series.slice(start, end);
    }
  }
  await cleanUp(ctx, "fill", systems, ["pfill"]);
}

/**
 * Publishing the 1st, 100th, 1,000th, 10,000th port. Bulk containers publish 100-port ranges to
 * reach N-1 ports; then probes publish exactly one port (the Nth), alternating with the same
 * container without -p: the difference of the medians is what publishing costs at that point.
 */
async function portsWorkload(ctx: Context): Promise<void> {
  const systems = able(ctx, "ports");
  await each(ctx, "ports", systems, async (s) => {
    await s.networkCreate("pports", "10.206.0.0/16");
    await s.run("pwarm", "pports", [{ host: 8999, container: 80, count: 1 }]);
    await s.rm("pwarm");
  });
  const target = (s: System) => (s.id === "ctnet" ? ctx.o.ctnetPorts : ctx.o.peerPorts);
  const milestones = [...new Set([1, 100, 1000, 10_000, ...systems.map(target)])]
    .filter((m) => systems.some((s) => target(s) >= m))
    .sort((a, b) => a - b);
  const published = new Map<SystemId, number>(systems.map((s) => [s.id, 0]));
  /** Each system's full (100-port) bulk containers, newest last. */
  const full = new Map<SystemId, { name: string; ports: PortRange }[]>(systems.map((s) => [s.id, []]));
  let bulk = 0;
  let seq = 0;
  for (const nth of milestones) {
    const due = systems.filter((s) => target(s) >= nth);
    const behind = () =>
      due.filter((s) => !failedIn(ctx, "ports", s) && (published.get(s.id) ?? 0) < nth - 1);
    while (behind().length > 0) {
      const name = `bulk${bulk}`;
      await interleave(
        ctx,
        "ports",
        behind(),
        1,
        async (s) => {
          const have = published.get(s.id) ?? 0;
          const count = Math.min(100, nth - 1 - have);
          const ports: PortRange = { host: 10_000 + have, container: 1000, count };
          const ms = await s.run(name, "pports", [ports]);
          if (count === 100) {
            record(ctx, "ports", "run -d -p with a 100-port range (bulk)", s, ms);
            full.get(s.id)?.push({ name, ports });
          }
          published.set(s.id, have + count);
        },
        bulk,
      );
      bulk++;
    }
    const withName = `run -d -p, port #${nth.toLocaleString("en")}`;
    const withoutName = `run -d, no -p (${(nth - 1).toLocaleString("en")} ports published)`;
    await interleave(ctx, "ports", due, ctx.o.portsProbes, async (s) => {
      const port: PortRange = { host: 9000 + (seq++ % 1000), container: 80, count: 1 };
      record(ctx, "ports", withName, s, await s.run("probe", "pports", [port]));
      await s.rm("probe");
      record(ctx, "ports", withoutName, s, await s.run("probe", "pports"));
      await s.rm("probe");
    });
    // Unpublishing costs too: the newest bulk container is removed (timed) and started again.
    if (nth >= 1000)
      await interleave(ctx, "ports", due, 2, async (s) => {
        const last = full.get(s.id)?.at(-1);
        if (!last) return;
        record(
          ctx,
          "ports",
          `rm -f of a 100-port container (${nth.toLocaleString("en")} ports published)`,
          s,
          await s.rm(last.name),
        );
        record(
          ctx,
          "ports",
          "run -d -p with a 100-port range (bulk)",
          s,
          await s.run(last.name, "pports", [last.ports]),
        );
      });
    const m: PortsMilestone = { nth, withPort: {}, withoutPort: {}, publishCost: {} };
    const w = ctx.rows.find((r) => r.name === withName);
    const wo = ctx.rows.find((r) => r.name === withoutName);
    for (const s of due) {
      if (failedIn(ctx, "ports", s)) continue;
      const a = w?.samples[s.id];
      const b = wo?.samples[s.id];
      if (!a || !b) continue;
      m.withPort[s.id] = summary(a).median;
      m.withoutPort[s.id] = summary(b).median;
      m.publishCost[s.id] = round(summary(a).median - summary(b).median, 3);
    }
    ctx.ports.push(m);
    console.error(
      `peers: ports #${nth}: ${JSON.stringify(m.withPort)} (without -p ${JSON.stringify(m.withoutPort)})`,
    );
  }
  await cleanUp(ctx, "ports", systems, ["pports"], true);
}

function cdfOf(sorted: number[]): [number, number][] {
  const qs = [0.001, 0.005, ...Array.from({ length: 99 }, (_, i) => (i + 1) / 100), 0.995, 0.999];
  return qs.map((q) => [round(quantile(sorted, q), 4), q]);
}

/** dnsperf inside a container against each system's embedded resolver, at full speed and paced. */
async function dnsWorkload(ctx: Context): Promise<void> {
  const systems = able(ctx, "dns");
  const names = Array.from({ length: ctx.o.dnsNames }, (_, i) => `svc${i}`);
  const file = join(ctx.dir, "dns-names.txt");
  writeFileSync(file, `${names.map((n) => `${n} A`).join("\n")}\n`);
  const client = new Map<SystemId, { ns: string; server: string }>();
  await each(ctx, "dns", systems, async (s) => {
    await s.networkCreate("pdns", "10.205.0.0/24");
    for (const n of [...names, "dnsclient"]) await s.run(n, "pdns");
    const ns = await s.netnsOf("dnsclient");
    const server = await s.dnsServer("pdns");
    // Every name must resolve to its container's address (NOERROR with no answer would be cheap).
    for (const n of names) {
      const want = await s.ipOf(n, "pdns");
      const r = await run("nsenter", [`--net=${ns}`, "--", "busybox", "nslookup", n, server]);
      if (!r.stdout.includes(`Address: ${want}`))
        throw new Error(`${n} does not resolve to ${want} through ${server}: ${r.stdout}${r.stderr}`);
    }
    const w = await dnsperf(
      ["nsenter", `--net=${ns}`, "--"],
      process.env,
      server,
      ["-d", file, "-l", "2", "-q", "10"],
      30_000,
    );
    if (!/^NOERROR \d+ \(100\.00%\)$/.test(w.rcodes) || w.lost > 0)
      throw new Error(`warm-up: ${w.rcodes}, ${w.lost} lost`);
    client.set(s.id, { ns, server });
  });
  const latencies = new Map<string, number[]>();
  /** Each round's median latency: the spread between rounds is the figure's noise. */
  const roundMedians = new Map<string, number[]>();
  const cpu = new Map<string, { server: number; client: number; wall: number }>();
  const modes: ["max" | "paced", string[]][] = [
    ["max", ["-q", "100"]],
    ["paced", ["-q", "100", "-Q", String(ctx.o.dnsRate)]],
  ];
  for (const [mode, extra] of modes) {
    await interleave(ctx, "dns", systems, ctx.o.dnsRounds, async (s) => {
      const c = client.get(s.id);
      if (!c) throw new Error("no DNS client");
      const pid = s.dnsServerPid();
      const cpu0 = pid ? cpuTicks(pid) : 0;
      const m0 = machineTicks();
      const t0 = Date.now();
      const r = await dnsperf(
        ["nsenter", `--net=${c.ns}`, "--"],
        process.env,
        c.server,
        ["-d", file, "-l", String(ctx.o.dnsSeconds), "-c", "1", "-v", ...extra],
        (ctx.o.dnsSeconds + 60) * 1000,
      );
      const wall = (Date.now() - t0) / 1000;
      const m1 = machineTicks();
      if (r.lost > r.sent / 100) throw new Error(`dnsperf lost ${r.lost} of ${r.sent} queries`);
      const key = `${s.id} ${mode}`;
      latencies.set(key, [...(latencies.get(key) ?? []), ...r.latencies]);
      const sorted = [...r.latencies].sort((a, b) => a - b);
      roundMedians.set(key, [...(roundMedians.get(key) ?? []), round(quantile(sorted, 0.5), 3)]);
      const was = cpu.get(key) ?? { server: 0, client: 0, wall: 0 };
      cpu.set(key, {
        server: was.server + (pid ? cpuTicks(pid) - cpu0 : Number.NaN),
        client: was.client + 100 * r.clientCpuSeconds,
        wall: was.wall + wall,
      });
      if (mode === "max") record(ctx, "dns", "DNS queries/s at full speed (dnsperf -q 100)", s, r.qps, "q/s");
      console.error(
        `peers: dns ${key}: ${Math.round(r.qps)} q/s, machine ${round((100 * (m1[0] - m0[0])) / Math.max(1, m1[1] - m0[1]), 1)} % busy`,
      );
    });
  }
  for (const s of systems) {
    for (const [mode] of modes) {
      const key = `${s.id} ${mode}`;
      const lat = (latencies.get(key) ?? []).sort((a, b) => a - b);
      const c = cpu.get(key);
      if (lat.length === 0 || !c) continue;
      const label =
        mode === "max"
          ? "DNS latency at full speed"
          : `DNS latency paced at ${ctx.o.dnsRate.toLocaleString("en")} q/s`;
      const row = rowOf(ctx, "dns", label, "ms");
      row.samples[s.id] = roundMedians.get(key) ?? [];
      row.results[s.id] = {
        n: lat.length,
        median: round(quantile(lat, 0.5), 3),
        p99: round(quantile(lat, 0.99), 3),
        mean: round(lat.reduce((a, b) => a + b, 0) / lat.length, 3),
      };
      ctx.dns.push({
        system: s.id,
        mode,
        cdf: cdfOf(lat),
        p50: round(quantile(lat, 0.5), 3),
        p99: round(quantile(lat, 0.99), 3),
        p999: round(quantile(lat, 0.999), 3),
        queries: lat.length,
        serverCpu: round(c.server / c.wall, 1),
        clientCpu: round(c.client / c.wall, 1),
      });
    }
  }
  await cleanUp(ctx, "dns", systems, ["pdns"]);
}

/** iperf3 between two containers on one bridge, and from a neighbour machine through a published port. */
async function iperfWorkload(ctx: Context): Promise<void> {
  const systems = able(ctx, "iperf");
  const setup = new Map<
    SystemId,
    { a: string; b: string; ipA: string; nb: ReturnType<typeof neighbourOf> }
  >();
  await each(ctx, "iperf", systems, async (s) => {
    await s.networkCreate("piperf", "10.207.0.0/24");
    await s.run("ipa", "piperf", [{ host: 15201, container: 5201, count: 1 }]);
    await s.run("ipb", "piperf");
    const nb = neighbourOf(s.hostNs());
    setup.set(s.id, {
      a: await s.netnsOf("ipa"),
      b: await s.netnsOf("ipb"),
      ipA: await s.ipOf("ipa", "piperf"),
      nb,
    });
  });
  try {
    await interleave(ctx, "iperf", systems, ctx.o.iperfRounds, async (s) => {
      const x = setup.get(s.id);
      if (!x) throw new Error("no iperf set-up");
      const secs = ctx.o.iperfSeconds;
      record(
        ctx,
        "iperf",
        "iperf3 container → container, same bridge",
        s,
        await iperf(x.a, x.b, x.ipA, 5201, secs),
        "Gbit/s",
      );
      record(
        ctx,
        "iperf",
        "iperf3 neighbour → published port (DNAT)",
        s,
        await iperf(x.a, x.nb.ns.path, x.nb.hostIp, 15201, secs),
        "Gbit/s",
      );
    });
  } finally {
    for (const x of setup.values()) removeNeighbour(x.nb);
  }
  await cleanUp(ctx, "iperf", systems, ["piperf"]);
}

/**
 * ctnet's overlay against Docker's swarm overlay, each on its own hosts of one lab
 * (scripts/peers/multihost.ts); Podman and the CNI plugins have no multi-host network here.
 */
async function multiHostWorkload(ctx: Context): Promise<void> {
  const systems = new Map(ctx.systems.map((s) => [s.id, s]));
  const { note, forced } = await multiHost(
    join(ctx.dir, "multihost"),
    ctx.imageTar,
    systems.has("docker"),
    {
      hosts: ctx.o.multiHosts,
      rounds: ctx.o.multiRounds,
      roundTimeoutMs: 5000,
      iperfSeconds: ctx.o.iperfSeconds,
      iperfRounds: ctx.o.iperfRounds,
    },
    {
      record: (name, id, value, unit) => {
        const s = systems.get(id);
        if (s) record(ctx, "multihost", name, s, value, unit);
      },
      fail: (id, err) => {
        const s = systems.get(id);
        if (s) fail(ctx, s, "multihost", err);
      },
    },
  );
  ctx.multihost = note;
  ctx.forced.push(...forced);
}

export const WORKLOADS: { id: string; run: (ctx: Context) => Promise<void> }[] = [
  { id: "network", run: networkWorkload },
  { id: "containers", run: containersWorkload },
  { id: "fill", run: fillWorkload },
  { id: "ports", run: portsWorkload },
  { id: "dns", run: dnsWorkload },
  { id: "iperf", run: iperfWorkload },
  { id: "multihost", run: multiHostWorkload },
];

export async function runWorkloads(ctx: Context, only: Set<string>): Promise<void> {
  for (const w of WORKLOADS) {
    if (!only.has(w.id)) continue;
    ctx.settled[w.id] = await settle(25, 10_000);
    const t0 = Date.now();
    console.error(`peers: ${w.id} (machine ${ctx.settled[w.id]?.busyPct} % busy before)`);
    await w.run(ctx);
    console.error(`peers: ${w.id} took ${round((Date.now() - t0) / 1000, 1)} s`);
  }
  summarise(ctx);
}
