/**
 * Embedded DNS benchmark (issue 3, "Speed"): dnsperf inside a container's namespaces against the
 * resolver at 127.0.0.11, with (a) local names only and (b) 80 % local / 20 % forwarded names.
 * Forwarded names are answered by the test stub (test/helpers/dns-stub.ts) on 127.0.0.1:53 of the
 * daemon's own namespace, which is every test daemon's only upstream: nothing leaves the
 * benchmark's namespaces.
 *
 * Each mix is run three times:
 * - `max`: as fast as dnsperf can (`-q` queries outstanding), for queries/s and dnsperf's average;
 * - `max -v`: the same with dnsperf's per-query report (`-v`), parsed for p50/p99/p99.9;
 * - `paced`: a fixed rate (`-Q`), to see the resolver's own latency when it is not saturated.
 * Under saturation the latency is mostly queueing (Little: outstanding / rate), so both are given.
 *
 * The daemon's CPU time during each run is read from /proc, so a saturated daemon (one Node event
 * loop at ~100 % of a core) is visible. With `--dns-profile` the daemon runs under the V8 profiler
 * (bench-results/profiles/dns/) and the functions with the most self time are summarised.
 */
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { CTNET, TestDaemon } from "../test/helpers/daemon.js";
import { startDnsStub } from "../test/helpers/dns-stub.js";
import { largestProfileSummary, profilerImport, quantile, round, settle, writeResult } from "./bench-util.js";

export interface DnsOptions {
  /** Seconds per dnsperf run (dnsperf -l). */
  seconds: number;
  /** Named containers to resolve (besides the client). */
  names: number;
  /** Queries outstanding (dnsperf -q). */
  outstanding: number;
  /** dnsperf clients (-c, one UDP socket each). */
  clients: number;
  /** Rate of the paced run (dnsperf -Q). */
  rate: number;
  /** Run the daemon with --cpu-prof and summarise where its time went. */
  profile: boolean;
}

export interface DnsRun {
  mix: string;
  mode: string;
  seconds: number;
  sent: number;
  completed: number;
  lost: number;
  rcodes: string;
  qps: number;
  avgMs: number;
  maxMs: number;
  p50Ms?: number;
  p99Ms?: number;
  p999Ms?: number;
  /** The daemon's CPU time over the run, in % of one core. */
  daemonCpu: number;
  /** dnsperf's CPU time over the run, in % of one core (it runs two threads). */
  clientCpu: number;
  /** All CPUs together, in % of the machine, and the part of it stolen by the hypervisor. */
  machineCpu: number;
  stealCpu: number;
}

export interface PerfOut {
  sent: number;
  completed: number;
  lost: number;
  rcodes: string;
  qps: number;
  avgMs: number;
  maxMs: number;
  latencies: number[];
  clientCpuSeconds: number;
}

/** User + system seconds of the children from the last line of `times` ("0m1.50s 0m2.25s"). */
function childCpuSeconds(stderr: string): number {
  const line = stderr.trim().split("\n").pop() ?? "";
  const secs = [...line.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]));
  return secs.length === 2 ? (secs[0] as number) + (secs[1] as number) : Number.NaN;
}

function field(text: string, label: string): string {
  const m = new RegExp(`${label}:\\s+(.*)`).exec(text);
  if (!m?.[1]) throw new Error(`dnsperf printed no "${label}":\n${text.slice(-2000)}`);
  return m[1].trim();
}

/**
 * Runs dnsperf against `server` where `prefix` runs it (`ctnet exec CONTAINER`, or `nsenter
 * --net=PATH` for a container of another system), streaming -v lines into a latency list.
 */
export function dnsperf(
  prefix: string[],
  env: NodeJS.ProcessEnv,
  server: string,
  args: string[],
  timeoutMs: number,
): Promise<PerfOut> {
  return new Promise((resolvePerf, reject) => {
    // `times` (POSIX sh) reports dnsperf's CPU time on stderr, to tell whether the client saturated.
    const script = 'dnsperf -s "$0" "$@"; rc=$?; times >&2; exit $rc';
    const child = spawn(prefix[0] as string, [...prefix.slice(1), "sh", "-c", script, server, ...args], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const latencies: number[] = [];
    let rest = "";
    let summary = "";
    let stderr = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop() ?? "";
      for (const line of lines) {
        if (line.startsWith("> ")) {
          // "> NOERROR name A 0.000123" (seconds); "> T …" is a timeout.
          const s = Number(line.slice(line.lastIndexOf(" ") + 1));
          if (!line.startsWith("> T ") && Number.isFinite(s)) latencies.push(s * 1000);
        } else summary += `${line}\n`;
      }
    });
    child.stderr.on("data", (b: Buffer) => {
      stderr += b.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      summary += rest;
      if (code !== 0) {
        reject(new Error(`dnsperf exited ${code}: ${stderr}${summary.slice(-2000)}`));
        return;
      }
      try {
        const num = (label: string) => Number(field(summary, label).split(/\s/)[0]);
        const avg = /Average Latency \(s\):\s+([\d.]+) \(min [\d.]+, max ([\d.]+)\)/.exec(summary);
        resolvePerf({
          sent: num("Queries sent"),
          completed: num("Queries completed"),
          lost: num("Queries lost"),
          rcodes: field(summary, "Response codes"),
          qps: num("Queries per second"),
          avgMs: Number(avg?.[1] ?? Number.NaN) * 1000,
          maxMs: Number(avg?.[2] ?? Number.NaN) * 1000,
          latencies,
          clientCpuSeconds: childCpuSeconds(stderr),
        });
      } catch (err) {
        reject(err);
      }
    });
  });
}

/** utime + stime of a process, in clock ticks (100 per second on Linux). */
export function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]);
}

/** [busy, total, steal] jiffies of all CPUs (busy includes steal: time another VM had our CPU). */
export function machineTicks(): [number, number, number] {
  const f = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "")
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return [total - idle, total, f[7] ?? 0];
}

export async function benchDns(o: DnsOptions): Promise<{ runs: DnsRun[]; file: string }> {
  const profileDir = resolve("bench-results/profiles/dns");
  const savedNodeOptions = process.env.NODE_OPTIONS;
  if (o.profile) {
    rmSync(profileDir, { recursive: true, force: true });
    mkdirSync(profileDir, { recursive: true });
    // Only the daemon inherits the variable: it is restored as soon as the daemon has started.
    process.env.NODE_OPTIONS = `${savedNodeOptions ?? ""} ${profilerImport(profileDir)}`.trim();
  }
  let d: TestDaemon;
  try {
    d = await TestDaemon.start("bdns");
  } finally {
    if (savedNodeOptions === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = savedNodeOptions;
  }
  const daemonPid = Number(readFileSync(join(d.execRoot, "ctnet.pid"), "utf8").trim());
  const forwarded = Array.from({ length: 50 }, (_, i) => `ext${i}.upstream.test`);
  const stub = await startDnsStub(
    d.ns.path,
    Object.fromEntries(forwarded.map((n, i) => [n, `192.0.2.${i + 1}`])),
  );
  const runs: DnsRun[] = [];
  const perf = (args: string[], timeoutMs: number) =>
    dnsperf([CTNET, "exec", "client"], { ...process.env, CTNET_HOST: d.host }, "127.0.0.11", args, timeoutMs);
  let profile: ReturnType<typeof largestProfileSummary>;
  try {
    const net = await d.api("POST", "/networks/create", {
      Name: "dnsb",
      IPAM: { Config: [{ Subnet: "10.210.0.0/16" }] },
    });
    if (net.status !== 201) throw new Error(`network create: ${net.text}`);
    const names = Array.from({ length: o.names }, (_, i) => `svc${i}`);
    for (const name of [...names, "client"]) {
      const c = await d.api("POST", `/containers/create?name=${name}`, {
        Cmd: ["sleep", "1000"],
        HostConfig: { NetworkMode: "dnsb" },
      });
      if (c.status !== 201) throw new Error(`create ${name}: ${c.text}`);
      const s = await d.api("POST", `/containers/${name}/start`);
      if (s.status !== 204) throw new Error(`start ${name}: ${s.text}`);
    }

    // The files live in the test's directory, which the container sees (no image: the host's tree).
    const local = names.flatMap((n) => [`${n} A`, `${n}.dnsb A`]);
    const mixed: string[] = [];
    for (let i = 0; mixed.length < 1000; i++) {
      for (let k = 0; k < 8; k++) mixed.push(local[(i * 8 + k) % local.length] as string);
      for (let k = 0; k < 2; k++) mixed.push(`${forwarded[(i * 2 + k) % forwarded.length]} A`);
    }
    const files = { local: join(d.dir, "local.txt"), "80/20 local/forwarded": join(d.dir, "mixed.txt") };
    writeFileSync(files.local, `${local.join("\n")}\n`);
    writeFileSync(files["80/20 local/forwarded"], `${mixed.join("\n")}\n`);

    // A short warm-up that also checks every name answers NOERROR.
    for (const file of Object.values(files)) {
      const w = await perf(["-d", file, "-l", "2", "-q", "10"], 30_000);
      if (!/^NOERROR \d+ \(100\.00%\)$/.test(w.rcodes) || w.lost > 0)
        throw new Error(`warm-up with ${file}: ${w.rcodes}, ${w.lost} lost`);
    }

    const settled = await settle();
    console.error(`dns: machine settled after ${settled.waitedMs} ms (${settled.busyPct} % busy)`);
    const secs = String(o.seconds);
    const common = ["-l", secs, "-c", String(o.clients)];
    for (const [mix, file] of Object.entries(files)) {
      const modes: [string, string[]][] = [
        ["max", ["-q", String(o.outstanding)]],
        ["max -v", ["-q", String(o.outstanding), "-v"]],
        [`paced ${o.rate}/s -v`, ["-q", String(o.outstanding), "-Q", String(o.rate), "-v"]],
      ];
      for (const [mode, extra] of modes) {
        const cpu0 = cpuTicks(daemonPid);
        const m0 = machineTicks();
        const t0 = Date.now();
        const r = await perf(["-d", file, ...common, ...extra], (o.seconds + 60) * 1000);
        const wall = (Date.now() - t0) / 1000;
        const m1 = machineTicks();
        const lat = r.latencies.sort((a, b) => a - b);
        const run: DnsRun = {
          mix,
          mode,
          seconds: o.seconds,
          sent: r.sent,
          completed: r.completed,
          lost: r.lost,
          rcodes: r.rcodes,
          qps: Math.round(r.qps),
          avgMs: round(r.avgMs, 3),
          maxMs: round(r.maxMs, 3),
          // Ticks are 1/100 s, so ticks per second is % of one core. The exec's own start-up
          // (~0.3 s of a ~10 s run) is inside both windows: a slight underestimate.
          daemonCpu: round((cpuTicks(daemonPid) - cpu0) / wall, 1),
          clientCpu: round((100 * r.clientCpuSeconds) / wall, 1),
          machineCpu: round((100 * (m1[0] - m0[0])) / Math.max(1, m1[1] - m0[1]), 1),
          stealCpu: round((100 * (m1[2] - m0[2])) / Math.max(1, m1[1] - m0[1]), 1),
        };
        if (lat.length > 0) {
          run.p50Ms = round(quantile(lat, 0.5), 3);
          run.p99Ms = round(quantile(lat, 0.99), 3);
          run.p999Ms = round(quantile(lat, 0.999), 3);
        }
        runs.push(run);
        console.error(
          `dns ${mix} ${mode}: ${run.qps} q/s, avg ${run.avgMs} ms, p50 ${run.p50Ms ?? "-"} p99 ${run.p99Ms ?? "-"} ms, daemon ${run.daemonCpu} % cpu, dnsperf ${run.clientCpu} %, machine ${run.machineCpu} %`,
        );
      }
    }
  } finally {
    stub.kill("SIGTERM");
    await d.destroy();
  }
  // The daemon's profile is the largest; the CLI's start-ups are not profiled (the variable was restored).
  if (o.profile) profile = largestProfileSummary(profileDir);
  const file = writeResult("dns.json", {
    options: o,
    targets: { localQps: 80_000, p99Ms: 2 },
    runs,
    ...(profile ? { daemonProfileTopSelf: profile } : {}),
  });
  if (profile) {
    console.error("daemon CPU profile, top self time:");
    for (const p of profile) console.error(`  ${String(p.pct).padStart(5)} %  ${p.fn}`);
  }
  return { runs, file };
}

export function dnsTable(runs: DnsRun[]): string {
  const rows = runs.map(
    (r) =>
      `| ${r.mix} | ${r.mode} | ${r.qps} | ${r.avgMs} | ${r.p50Ms ?? "–"} | ${r.p99Ms ?? "–"} | ${r.maxMs} | ${r.lost} | ${r.daemonCpu} % | ${r.clientCpu} % |`,
  );
  return [
    "| names | dnsperf run | queries/s | avg ms | p50 ms | p99 ms | max ms | lost | daemon CPU | dnsperf CPU |",
    "|---|---|---|---|---|---|---|---|---|---|",
    ...rows,
  ].join("\n");
}
