/**
 * Port publishing benchmark (issue 3, "Speed"): how long it takes to publish the 1st, 100th, 1,000th
 * and 10,000th port.
 *
 * The ports are filled by "bulk" containers that publish many ports each (`-p
 * 0.0.0.0:10000-10099:1000-1099` and so on, on the default bridge so that they need no DNS
 * listeners). At each milestone N, with N-1 ports published, "probe" containers are started that
 * publish exactly one port (`-p 0.0.0.0:9xxx:80`) — the Nth — and are removed again, alternating
 * with the same container without `-p`: the difference is what publishing costs, whatever else a
 * start costs. `0.0.0.0` makes the daemon hold one reservation socket per port (an empty host IP
 * means IPv4 and IPv6: two), so 10,000 ports need ~10,000 descriptors; the host ports (9000-19999)
 * are below the kernel's ephemeral range.
 *
 * The daemon runs at log level debug, whose "container started" lines carry the start's phases in
 * ms: sandbox, endpoints, files (for these containers: the generated /etc files, the port
 * reservations and the firewall update) and process. TestDaemon starts its daemon at level info,
 * so the benchmark restarts it at level debug; at the end it removes its containers and
 * TestDaemon.destroy() checks that nothing leaked.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { TestDaemon } from "../test/helpers/daemon.js";
import {
  largestProfileSummary,
  median,
  openFileLimit,
  profilerImport,
  round,
  settle,
  sleep,
  writeResult,
} from "./bench-util.js";

export interface PortsOptions {
  /** Ports to reach (the last milestone). */
  total: number;
  /** Ports per bulk container. */
  perContainer: number;
  /** Probe containers per milestone (each with and without -p). */
  probes: number;
  /** Run the daemon under the V8 profiler (bench-results/profiles/ports/). */
  profile: boolean;
}

type Phases = Record<string, number>;

export interface Probe {
  withPort: boolean;
  createMs: number;
  startMs: number;
  phases: Phases;
}

export interface Milestone {
  /** The probe's port is the Nth published. */
  nth: number;
  probes: Probe[];
  /** Medians of the probes with -p. */
  withPort: { createMs: number; startMs: number; runMs: number; phases: Phases };
  /** Medians of the same probes without -p. */
  withoutPort: { createMs: number; startMs: number; runMs: number; phases: Phases };
  /** withPort.startMs - withoutPort.startMs, and the same for the files phase. */
  publishCostMs: number;
  filesPhaseCostMs: number;
}

export interface BulkStart {
  /** Ports published before this container. */
  before: number;
  ports: number;
  startMs: number;
  phases: Phases;
}

export interface PortsResult {
  options: PortsOptions;
  openFileLimit: number;
  daemonOpenFiles: number;
  mapElements: number;
  milestones: Milestone[];
  bulk: BulkStart[];
  /** 10,000th (or last) milestone's start time over the 1st's, with -p. */
  ratioLastToFirst: number;
  daemonProfileTopSelf?: ReturnType<typeof largestProfileSummary>;
}

const BULK_BASE = 10_000;
const PROBE_BASE = 9_000;

/**
 * Restarts the test daemon at log level debug (its "container started" lines carry phase timings),
 * optionally under the CPU profiler.
 */
async function restartWithDebugLog(d: TestDaemon, profileDir?: string): Promise<void> {
  d.logLevel = "debug";
  if (profileDir)
    d.env = { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} ${profilerImport(profileDir)}`.trim() };
  await d.kill("SIGTERM");
  await d.spawnDaemon();
}

function daemonPid(d: TestDaemon): number {
  return Number(readFileSync(join(d.execRoot, "ctnet.pid"), "utf8").trim());
}

/** The phases of the last "container started" line for `name` (waits a little for the log). */
async function phasesOf(d: TestDaemon, name: string): Promise<Phases> {
  for (let i = 0; i < 50; i++) {
    const lines = d.log.split("\n");
    for (let k = lines.length - 1; k >= 0; k--) {
      const l = lines[k] as string;
      if (!l.includes('"container started"') || !l.includes(`"container":"${name}"`)) continue;
      const ms = (JSON.parse(l) as { ms: Phases }).ms;
      return Object.fromEntries(Object.entries(ms).map(([k2, v]) => [k2, round(v, 3)]));
    }
    await sleep(20);
  }
  return {};
}

function createBody(ports: [number, number][]): unknown {
  const exposed: Record<string, object> = {};
  const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const [host, container] of ports) {
    exposed[`${container}/tcp`] = {};
    bindings[`${container}/tcp`] = [{ HostIp: "0.0.0.0", HostPort: String(host) }];
  }
  return {
    Cmd: ["sleep", "1000"],
    ExposedPorts: exposed,
    HostConfig: { NetworkMode: "bridge", PortBindings: bindings },
  };
}

async function run(
  d: TestDaemon,
  name: string,
  body: unknown,
): Promise<{ createMs: number; startMs: number }> {
  const t0 = process.hrtime.bigint();
  const c = await d.api("POST", `/containers/create?name=${name}`, body);
  if (c.status !== 201) throw new Error(`create ${name}: ${c.text}`);
  const t1 = process.hrtime.bigint();
  const s = await d.api("POST", `/containers/${name}/start`);
  if (s.status !== 204) throw new Error(`start ${name}: ${s.text}`);
  const t2 = process.hrtime.bigint();
  return { createMs: Number(t1 - t0) / 1e6, startMs: Number(t2 - t1) / 1e6 };
}

async function remove(d: TestDaemon, name: string): Promise<void> {
  const r = await d.api("DELETE", `/containers/${name}?force=1`);
  if (r.status !== 204) throw new Error(`rm ${name}: ${r.text}`);
}

function medians(probes: Probe[]): Milestone["withPort"] {
  const keys = new Set(probes.flatMap((p) => Object.keys(p.phases)));
  return {
    createMs: round(median(probes.map((p) => p.createMs))),
    startMs: round(median(probes.map((p) => p.startMs))),
    runMs: round(median(probes.map((p) => p.createMs + p.startMs))),
    phases: Object.fromEntries(
      [...keys].map((k) => [k, round(median(probes.map((p) => p.phases[k] ?? 0)), 3)]),
    ),
  };
}

export async function benchPorts(o: PortsOptions): Promise<PortsResult> {
  if (o.total > 10_000 + 45_000) throw new Error("--ports-total: at most 55,000 host ports fit below 65536");
  const limit = openFileLimit();
  if (o.total + 1000 > limit) {
    throw new Error(
      `--ports-total ${o.total} needs about ${o.total + 1000} open files in the daemon; ulimit -n is ${limit}`,
    );
  }
  const milestones = [1, 100, 1000, 10_000].filter((n) => n < o.total);
  milestones.push(o.total);

  const profileDir = resolve("bench-results/profiles/ports");
  if (o.profile) {
    rmSync(profileDir, { recursive: true, force: true });
    mkdirSync(profileDir, { recursive: true });
  }
  const d = await TestDaemon.start("bports");
  const result: PortsResult = {
    options: o,
    openFileLimit: limit,
    daemonOpenFiles: 0,
    mapElements: 0,
    milestones: [],
    bulk: [],
    ratioLastToFirst: 0,
  };
  const bulkNames: string[] = [];
  try {
    await restartWithDebugLog(d, o.profile ? profileDir : undefined);

    const settled = await settle();
    console.error(`ports: machine settled after ${settled.waitedMs} ms (${settled.busyPct} % busy)`);
    // Warm-up (the daemon's first starts run cold code): started and removed, so that the 1st
    // port is measured with no port published, in a warm daemon.
    let probeSeq = 0;
    for (let i = 0; i < 3; i++) {
      for (const withPort of [true, false]) {
        const name = `warm${i}${withPort ? "p" : ""}`;
        await run(d, name, createBody(withPort ? [[PROBE_BASE + 999 - i, 80]] : []));
        await remove(d, name);
      }
    }
    let published = 0;
    for (const nth of milestones) {
      // Fill to nth - 1 with bulk containers.
      while (published < nth - 1) {
        const count = Math.min(o.perContainer, nth - 1 - published);
        const name = `bulk${bulkNames.length}`;
        const ports = Array.from(
          { length: count },
          (_, i) => [BULK_BASE + published + i, 1000 + i] as [number, number],
        );
        const t = await run(d, name, createBody(ports));
        bulkNames.push(name);
        result.bulk.push({
          before: published,
          ports: count,
          startMs: round(t.startMs),
          phases: await phasesOf(d, name),
        });
        published += count;
        // The log grows with every start; only recent lines are searched.
        d.log = d.log.slice(-100_000);
      }
      const probes: Probe[] = [];
      for (let i = 0; i < o.probes; i++) {
        for (const withPort of [true, false]) {
          const name = `probe${probeSeq}`;
          const port = PROBE_BASE + (probeSeq % 1000);
          probeSeq++;
          const t = await run(d, name, createBody(withPort ? [[port, 80]] : []));
          probes.push({
            withPort,
            createMs: round(t.createMs),
            startMs: round(t.startMs),
            phases: await phasesOf(d, name),
          });
          await remove(d, name);
        }
      }
      const withPort = medians(probes.filter((p) => p.withPort));
      const withoutPort = medians(probes.filter((p) => !p.withPort));
      const m: Milestone = {
        nth,
        probes,
        withPort,
        withoutPort,
        publishCostMs: round(withPort.startMs - withoutPort.startMs),
        filesPhaseCostMs: round((withPort.phases.files ?? 0) - (withoutPort.phases.files ?? 0), 3),
      };
      result.milestones.push(m);
      console.error(
        `ports: port #${nth}: start ${withPort.startMs} ms (without -p ${withoutPort.startMs} ms), files phase ${withPort.phases.files} ms (without -p ${withoutPort.phases.files} ms)`,
      );
    }
    // What the daemon holds at the end: one socket per bulk port, and the DNAT map's elements.
    result.daemonOpenFiles = readdirSync(`/proc/${daemonPid(d)}/fd`).length;
    const map = d.hostExec(["nft", "-j", "list", "map", "inet", "ctnet", "pub4_any"]);
    const listed = JSON.parse(map.stdout) as { nftables: { map?: { elem?: unknown[] } }[] };
    result.mapElements = listed.nftables.reduce((a, x) => a + (x.map?.elem?.length ?? 0), 0);
    const first = result.milestones[0]?.withPort.startMs ?? 0;
    const last = result.milestones[result.milestones.length - 1]?.withPort.startMs ?? 0;
    result.ratioLastToFirst = round(last / Math.max(first, 1e-9));

    for (const name of bulkNames) await remove(d, name);
  } finally {
    await d.destroy();
  }
  if (o.profile) {
    result.daemonProfileTopSelf = largestProfileSummary(profileDir);
    console.error("daemon CPU profile, top self time:");
    for (const p of result.daemonProfileTopSelf ?? [])
      console.error(`  ${String(p.pct).padStart(5)} %  ${p.fn}`);
  }
  writeResult("ports.json", result);
  return result;
}

export function portsTables(r: PortsResult): string {
  const ph = (p: Phases) =>
    Object.entries(p)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ");
  const rows = r.milestones.map(
    (m) =>
      `| ${m.nth} | ${m.withPort.startMs} | ${m.withPort.runMs} | ${ph(m.withPort.phases)} | ${m.withoutPort.startMs} | ${m.withoutPort.phases.files ?? "–"} | ${m.publishCostMs} |`,
  );
  const bulk = r.bulk.filter(
    (_, i) => i % Math.max(1, Math.floor(r.bulk.length / 10)) === 0 || i === r.bulk.length - 1,
  );
  return [
    `Probe containers (median of ${r.options.probes}): start of a container publishing the Nth port, ms`,
    "",
    "| Nth port | start | create + start | its phases (ms) | start without -p | files phase without -p | publish cost |",
    "|---|---|---|---|---|---|---|",
    ...rows,
    "",
    `10,000th (last) port over the 1st: ${r.ratioLastToFirst}× (target ≤ 2×). Daemon descriptors at the end: ${r.daemonOpenFiles}; pub4_any map elements: ${r.mapElements}.`,
    "",
    "| bulk container | ports before | ports | start ms | files phase ms |",
    "|---|---|---|---|---|",
    ...bulk.map(
      (b) => `| ${r.bulk.indexOf(b)} | ${b.before} | ${b.ports} | ${b.startMs} | ${b.phases.files ?? "–"} |`,
    ),
  ].join("\n");
}
