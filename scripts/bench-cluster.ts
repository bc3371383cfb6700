/**
 * Multi-host benchmark (issue 5, "Speed"; part `cluster` of npm run bench, bench-results/cluster.json):
 * how soon a container started on one host answers from another, and what VXLAN costs in throughput.
 * Everything runs in labs (`ctnet lab up`) whose hosts are namespaces of this machine, so no packet
 * leaves it; the labs go at the end, on failure and on Ctrl-C.
 *
 * Convergence. An overlay network spans every host of the lab, with a "pinger" container on each
 * (so every host programs every new container, as in a cluster where the network is everywhere).
 * Each round starts a container on the next host in turn (POST /containers/create + /start on that
 * host's socket, timed in-process) while a pinger on another host pings its address; the figure is
 * the time from `start` returning to the first echo reply. The prober is fping at a 1 ms period
 * (`fping -l -p 1 -i 1 -D`), which keeps sending whatever is lost (iputils ping falls back to 10 ms
 * once a reply is missing), with fping's own receive timestamps (10 µs). So that the pinger's ARP
 * timer (1 s, at best one jiffy: 4 ms at HZ=250) stays out of the figure, the pinger holds a
 * permanent neighbour entry for the address, with the MAC ctnet derives from it as Docker does; the
 * first echo then passes as soon as the pinger's host has the forwarding entry, and the proxy-ARP
 * entry a real client would ask for follows with the next netlink call. Every round uses a fresh
 * address, so no cache of an earlier round helps or hurts. Where the time goes: an `etcdctl watch`
 * beside the etcd member says when the endpoint reached etcd's watchers, and `ip -ts monitor neigh`
 * on every host when each host's kernel got the container's entry.
 *
 * Throughput. iperf3 between the two hosts of a lab: container to container over the overlay
 * (VXLAN, MTU 1450), host namespace to host namespace over the underlay (the same veths and lab
 * bridge without VXLAN, MTU 1500), and container to container on one bridge network of one host for
 * reference; runs interleaved, median Gbit/s, with the offloads (ethtool -k) of the devices involved.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import os from "node:os";
import { createInterface } from "node:readline";
import { macFromIPv4 } from "../src/ipam/index.js";
import { type HostState, type LabState, loadLab, netnsPath } from "../src/lab/state.js";
import { CTNET } from "../test/helpers/daemon.js";
import { apiRequest } from "../test/helpers/http.js";
import { labLeftovers } from "../test/helpers/lab.js";
import { median, round, type Stat, settle, sleep, stat, writeResult } from "./bench-util.js";

export interface ClusterOptions {
  /** Lab sizes for the convergence rounds, e.g. [3, 10]. */
  hosts: number[];
  /** Convergence rounds per lab. */
  rounds: number;
  /** Time limit of one lab's rounds, in seconds. */
  seconds: number;
  /** A round without a reply after this many ms counts as failed. */
  roundTimeoutMs: number;
  iperfSeconds: number;
  iperfRuns: number;
}

/** One round; times in ms from the `run` call (POST /containers/create), null if never seen. */
export interface Round {
  host: string;
  pinger: string;
  /** create + start returned */
  runMs: number;
  /** the endpoint's key reached an etcd watcher */
  publishedMs: number | null;
  /** the pinger's host installed the container's neighbour entry */
  programmedMs: number | null;
  /** the first and the last of the other hosts did */
  firstProgrammedMs: number | null;
  allProgrammedMs: number | null;
  /** the first echo reply reached the pinger */
  replyMs: number | null;
}

export interface ConvergenceResult {
  hosts: number;
  rounds: number;
  /** rounds without a reply in time */
  failed: number;
  /** machine busy % (all CPUs) just before the rounds */
  busyPct: number;
  run: Stat;
  /** reply − run: from `run` returning to the first reply (negative: answered before it returned) */
  convergence: Stat;
  /** reply: from the `run` call to the first reply */
  reply: Stat;
  published: Stat;
  /** programmed − published: from etcd to the pinger's host's kernel */
  propagation: Stat;
  /** firstProgrammed − published and allProgrammed − published: to the first and the last other host */
  propagationFirst: Stat;
  propagationAll: Stat;
  samples: Round[];
}

export interface ThroughputResult {
  seconds: number;
  runs: number;
  paths: { name: string; mtu: number; gbps: number[]; median: number; retransmits: number[] }[];
  /** overlay / underlay, medians */
  ratio: number;
  /** ethtool -k of the devices on the overlay path */
  offloads: Record<string, Record<string, string>>;
}

export interface ClusterResult {
  convergence: ConvergenceResult[];
  throughput: ThroughputResult | undefined;
}

const NET = "bcov";
const SUBNET = "10.77.0.0/16";
const BRIDGE_NET = "bcbr";
const IPERF_PORT = 5201;
const PROBE = ["fping", "-l", "-p", "1", "-i", "1", "-t", "50", "-D", "-e"];
const FEATURES = [
  "tcp-segmentation-offload",
  "generic-segmentation-offload",
  "generic-receive-offload",
  "tx-udp_tnl-segmentation",
  "rx-udp-gro-forwarding",
];

/** Labs up or coming up, and processes running, for the clean-up on a signal. */
const liveLabs = new Set<string>();
const children = new Set<ChildProcess>();

function track(p: ChildProcess): ChildProcess {
  children.add(p);
  p.once("exit", () => children.delete(p));
  return p;
}

interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const p = track(spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] }));
    let stdout = "";
    let stderr = "";
    p.stdout?.on("data", (c: Buffer) => {
      stdout += c;
    });
    p.stderr?.on("data", (c: Buffer) => {
      stderr += c;
    });
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.on("error", reject);
    p.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

async function must(cmd: string, args: string[], timeoutMs?: number): Promise<string> {
  const r = await run(cmd, args, timeoutMs);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Installs the Debian packages the benchmark uses, if missing (setup.sh does not: only the bench needs them). */
function ensurePackages(packages: string[]): void {
  const installed = (p: string) =>
    spawnSync("dpkg-query", ["-W", `-f=\${Status}`, p], { encoding: "utf8" }).stdout.includes(
      "install ok installed",
    );
  const missing = packages.filter((p) => !installed(p));
  if (missing.length === 0) return;
  console.error(`cluster: installing ${missing.join(" ")}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  for (const args of [
    ["update", "-qq"],
    ["install", "-y", "-qq", "--no-install-recommends", ...missing],
  ]) {
    const r = spawnSync("apt-get", args, { env, encoding: "utf8", timeout: 600_000 });
    if (r.status !== 0) throw new Error(`apt-get ${args.join(" ")}: ${r.stderr}`);
  }
}

/**
 * Wall-clock milliseconds with sub-millisecond precision, comparable with fping's and ip's
 * timestamps (CLOCK_REALTIME). Date.now() alone has 1 ms steps; calibrate() catches the instant
 * it steps and ties it to the monotonic clock, so the offset is exact to a few µs.
 */
export class WallClock {
  private offset = Date.now() - performance.now();

  calibrate(): void {
    const start = Date.now();
    let now = start;
    while (now === start) now = Date.now();
    this.offset = now - performance.now();
  }

  now(): number {
    return this.offset + performance.now();
  }
}

interface Inspect {
  State: { Pid: number };
  NetworkSettings: { Networks: Record<string, { IPAddress: string }> };
}

/** A lab brought up and taken down through the real `ctnet lab` commands. */
export class Lab {
  private constructor(
    readonly name: string,
    public state: LabState,
  ) {}

  static async up(hosts: number): Promise<Lab> {
    const name = `bc${randomBytes(3).toString("hex")}`;
    liveLabs.add(name);
    try {
      await must(CTNET, ["lab", "up", "--name", name, "--hosts", String(hosts)], 300_000);
    } catch (err) {
      // A failed up cleans up after itself, unless it was killed on its time limit.
      await run(CTNET, ["lab", "down", "--name", name], 180_000);
      liveLabs.delete(name);
      throw err;
    }
    return new Lab(name, loadLab(name));
  }

  get hosts(): HostState[] {
    return this.state.hosts;
  }

  /** `lab machine`: a plain namespace on the lab's underlay; returns its namespace path and address. */
  async machine(name: string): Promise<{ nsPath: string; addr: string }> {
    await must(CTNET, ["lab", "machine", "--name", this.name, name]);
    this.state = loadLab(this.name);
    const m = this.state.machines.find((x) => x.name === name);
    if (!m) throw new Error(`lab ${this.name} has no machine ${name}`);
    return { nsPath: netnsPath(m.netns), addr: m.addr };
  }

  async call(host: HostState, method: string, path: string, body: unknown, expect: number): Promise<unknown> {
    const r = await apiRequest(host.socket, method, path, body);
    if (r.status !== expect) throw new Error(`${host.name}: ${method} ${path}: ${r.status} ${r.text}`);
    return r.body;
  }

  /**
   * Creates a global network on the first host and waits until every host has heard of it: the
   * others learn it from their etcd watch, a moment after the create returns.
   */
  async createOverlay(name: string, subnet: string): Promise<void> {
    const body = { Name: name, Driver: "overlay", IPAM: { Config: [{ Subnet: subnet }] } };
    await this.call(this.hosts[0] as HostState, "POST", "/networks/create", body, 201);
    for (const h of this.hosts) {
      for (let i = 0; (await apiRequest(h.socket, "GET", `/networks/${name}`)).status !== 200; i++) {
        if (i === 100) throw new Error(`${h.name} has not heard of network ${name}`);
        await sleep(20);
      }
    }
  }

  /** `run -d` through the API; returns the container's pid (for nsenter) and its address on `net`. */
  async runContainer(
    host: HostState,
    name: string,
    net: string,
    cmd: string[],
  ): Promise<{ pid: number; ip: string }> {
    await this.call(
      host,
      "POST",
      `/containers/create?name=${name}`,
      { Cmd: cmd, HostConfig: { NetworkMode: net } },
      201,
    );
    await this.call(host, "POST", `/containers/${name}/start`, undefined, 204);
    const c = (await this.call(host, "GET", `/containers/${name}/json`, undefined, 200)) as Inspect;
    return { pid: c.State.Pid, ip: c.NetworkSettings.Networks[net]?.IPAddress ?? "" };
  }

  /** `lab down`; returns what was left behind (nothing, normally). */
  async down(): Promise<string[]> {
    const members = [...this.state.hosts, ...this.state.machines].map((m) => m.name);
    const r = await run(CTNET, ["lab", "down", "--name", this.name], 180_000);
    liveLabs.delete(this.name);
    const problems = labLeftovers(this.name, members);
    if (r.status !== 0) problems.unshift(`lab down exited ${r.status}: ${r.stderr}`);
    return problems;
  }
}

/**
 * Runs fn in a new lab of `hosts` hosts and takes the lab down after it, also when fn fails; a
 * lab that leaves anything behind fails the benchmark.
 */
async function withLab<T>(hosts: number, fn: (lab: Lab) => Promise<T>): Promise<T> {
  const lab = await Lab.up(hosts);
  let result: T;
  try {
    result = await fn(lab);
  } catch (err) {
    for (const left of await lab.down()) console.error(`cluster: lab ${lab.name} left ${left}`);
    throw err;
  }
  const left = await lab.down();
  if (left.length > 0) throw new Error(`lab ${lab.name} left:\n${left.join("\n")}`);
  return result;
}

/** Removes every lab still up and ends the process: Ctrl-C or a kill in the middle of a run. */
function onSignal(signal: NodeJS.Signals): void {
  for (const p of children) p.kill("SIGKILL");
  for (const name of liveLabs) {
    console.error(`cluster: ${signal}: removing lab ${name}`);
    spawnSync(CTNET, ["lab", "down", "--name", name], { stdio: "inherit", timeout: 180_000 });
  }
  process.exit(128 + (os.constants.signals[signal] ?? 0));
}

/** The address of round r: fresh each round, away from the pingers' (10.77.0.x). */
function roundAddress(r: number): string {
  return `10.77.${1 + Math.floor(r / 250)}.${2 + (r % 250)}`;
}

/**
 * fping from inside a container's namespace at a 1 ms period; `replyAt` resolves with the
 * wall-clock time (ms) of the first echo reply, `sending` once it has printed anything (a timeout
 * after 50 ms), which proves it is sending.
 */
export function probe(
  pid: number,
  ip: string,
): { sending: Promise<void>; replyAt: Promise<number>; stop(): void } {
  const p = track(
    spawn("nsenter", ["-t", String(pid), "-n", ...PROBE, ip], { stdio: ["ignore", "pipe", "pipe"] }),
  );
  let onLine: () => void = () => {};
  const sending = new Promise<void>((r) => {
    onLine = r;
  });
  const replyAt = new Promise<number>((resolve, reject) => {
    const lines = createInterface({ input: p.stdout as NodeJS.ReadableStream });
    lines.on("line", (line) => {
      onLine();
      const m = /^\[(\d+\.\d+)\] \S+ : \[\d+\], \d+ bytes/.exec(line);
      if (m) resolve(Number(m[1]) * 1000);
    });
    let err = "";
    p.stderr?.on("data", (c: Buffer) => {
      err += c;
    });
    p.on("exit", (code, signal) =>
      reject(new Error(`fping ended (${code ?? signal}) without a reply: ${err}`)),
    );
  });
  replyAt.catch(() => {});
  return { sending, replyAt, stop: () => p.kill("SIGKILL") };
}

/** Lines of a process's stdout as they come, with the wall-clock time they came. */
function follow(args: string[], onLine: (line: string) => void): ChildProcess {
  const p = track(spawn("nsenter", args, { stdio: ["ignore", "pipe", "ignore"] }));
  createInterface({ input: p.stdout as NodeJS.ReadableStream }).on("line", onLine);
  return p;
}

interface Watchers {
  /** address → when an etcd watcher heard of its endpoint (wall-clock ms) */
  published: Map<string, number>;
  /** host → address → when the host installed its neighbour entry on an overlay device */
  programmed: Map<string, Map<string, number>>;
  stop(): void;
}

/**
 * `etcdctl watch` on the cluster's endpoint keys (from host1, beside the etcd member), and
 * `ip -ts monitor neigh` on every host.
 */
function watch(lab: Lab, clock: WallClock): Watchers {
  const procs: ChildProcess[] = [];
  const published = new Map<string, number>();
  const programmed = new Map<string, Map<string, number>>();
  const first = lab.hosts[0] as HostState;
  const etcd = lab.state.clusterAddr ?? "";
  let expect: "key" | "value" | "" = "";
  procs.push(
    follow(
      [
        `--net=${netnsPath(first.netns)}`,
        "etcdctl",
        `--endpoints=${etcd.includes("://") ? etcd : `http://${etcd}`}`,
        "watch",
        "--prefix",
        "/ctnet/endpoints/",
      ],
      (line) => {
        const at = clock.now();
        if (line === "PUT") expect = "key";
        else if (expect === "key") expect = "value";
        else if (expect === "value") {
          expect = "";
          const ip = (JSON.parse(line) as { ipv4?: string }).ipv4;
          if (ip && !published.has(ip)) published.set(ip, at);
        }
      },
    ),
  );
  for (const h of lab.hosts) {
    const mine = new Map<string, number>();
    programmed.set(h.name, mine);
    procs.push(
      follow([`--net=${netnsPath(h.netns)}`, "ip", "-ts", "monitor", "neigh"], (line) => {
        const m = /^\[(\S+?)(\.\d+)?\] (\S+) dev ctvx\d+ lladdr \S+ PERMANENT/.exec(line);
        if (!m?.[1] || !m[3] || mine.has(m[3])) return;
        // ip prints local time without a zone: read it as local time, then add the microseconds.
        mine.set(m[3], new Date(m[1]).getTime() + Number(m[2] ?? 0) * 1000);
      }),
    );
  }
  return {
    published,
    programmed,
    stop: () => {
      for (const p of procs) p.kill("SIGKILL");
    },
  };
}

async function convergence(hosts: number, o: ClusterOptions): Promise<ConvergenceResult> {
  console.error(`cluster: convergence with ${hosts} hosts`);
  const samples: Round[] = [];
  let busyPct = 0;
  let failed = 0;
  await withLab(hosts, async (lab) => {
    const clock = new WallClock();
    let watchers: Watchers | undefined;
    try {
      await lab.createOverlay(NET, SUBNET);
      const pingers = [];
      for (const h of lab.hosts)
        pingers.push(await lab.runContainer(h, `pinger-${h.name}`, NET, ["sleep", "1d"]));
      watchers = watch(lab, clock);
      busyPct = (await settle(15, 10_000)).busyPct;
      /** per round: its address and when its `run` was called (wall-clock ms) */
      const calls: { ip: string; t0: number }[] = [];
      const deadline = Date.now() + o.seconds * 1000;
      for (let r = 0; r < o.rounds && Date.now() < deadline; r++) {
        const t = r % hosts;
        const p = (t + 1 + (Math.floor(r / hosts) % (hosts - 1))) % hosts;
        const target = lab.hosts[t] as HostState;
        const pinger = pingers[p] as { pid: number };
        const ip = roundAddress(r);
        const name = `c${r}`;
        const inPinger = ["-t", String(pinger.pid), "-n", "ip", "neigh"];
        const mac = macFromIPv4(ip);
        await must("nsenter", [...inPinger, "replace", ip, "lladdr", mac, "dev", "eth0", "nud", "permanent"]);
        const prober = probe(pinger.pid, ip);
        try {
          await prober.sending;
          clock.calibrate();
          const t0 = clock.now();
          await lab.call(
            target,
            "POST",
            `/containers/create?name=${name}`,
            {
              Cmd: ["sleep", "1d"],
              HostConfig: { NetworkMode: NET },
              NetworkingConfig: { EndpointsConfig: { [NET]: { IPAMConfig: { IPv4Address: ip } } } },
            },
            201,
          );
          await lab.call(target, "POST", `/containers/${name}/start`, undefined, 204);
          const runMs = clock.now() - t0;
          const reply = await Promise.race([prober.replyAt, sleep(o.roundTimeoutMs).then(() => undefined)]);
          if (reply === undefined) failed++;
          calls.push({ ip, t0 });
          samples.push({
            host: target.name,
            pinger: (lab.hosts[p] as HostState).name,
            runMs: round(runMs, 3),
            publishedMs: null,
            programmedMs: null,
            firstProgrammedMs: null,
            allProgrammedMs: null,
            replyMs: reply === undefined ? null : round(reply - t0, 3),
          });
        } finally {
          prober.stop();
          await must("nsenter", [...inPinger, "del", ip, "dev", "eth0"]);
        }
        await lab.call(target, "DELETE", `/containers/${name}?force=1`, undefined, 204);
        // The other hosts drop the container's entries meanwhile, outside the next round.
        await sleep(50);
      }
      // The watchers' last lines may still be in their pipes.
      await sleep(200);
      samples.forEach((sample, i) => {
        const { ip = "", t0 = 0 } = calls[i] ?? {};
        const published = watchers?.published.get(ip);
        const programmed = watchers?.programmed.get(sample.pinger)?.get(ip);
        if (published !== undefined) sample.publishedMs = round(published - t0, 3);
        if (programmed !== undefined) sample.programmedMs = round(programmed - t0, 3);
        const others = lab.hosts
          .filter((h) => h.name !== sample.host)
          .map((h) => watchers?.programmed.get(h.name)?.get(ip));
        if (others.every((x) => x !== undefined)) {
          sample.firstProgrammedMs = round(Math.min(...(others as number[])) - t0, 3);
          sample.allProgrammedMs = round(Math.max(...(others as number[])) - t0, 3);
        }
      });
    } finally {
      watchers?.stop();
    }
  });
  const seen = (f: (s: Round) => number | null) =>
    samples.map(f).filter((x): x is number => x !== null && Number.isFinite(x));
  return {
    hosts,
    rounds: samples.length,
    failed,
    busyPct,
    run: stat(
      "run (create + start)",
      samples.map((s) => s.runMs),
    ),
    convergence: stat(
      "run returned → first echo reply on another host",
      seen((s) => (s.replyMs === null ? null : s.replyMs - s.runMs)),
    ),
    reply: stat(
      "run called → first echo reply on another host",
      seen((s) => s.replyMs),
    ),
    published: stat(
      "run called → endpoint heard from etcd",
      seen((s) => s.publishedMs),
    ),
    propagation: stat(
      "endpoint heard from etcd → neighbour entry on the pinger's host",
      seen((s) =>
        s.programmedMs === null || s.publishedMs === null ? null : s.programmedMs - s.publishedMs,
      ),
    ),
    propagationFirst: stat(
      "endpoint heard from etcd → neighbour entry on the first other host",
      seen((s) =>
        s.firstProgrammedMs === null || s.publishedMs === null ? null : s.firstProgrammedMs - s.publishedMs,
      ),
    ),
    propagationAll: stat(
      "endpoint heard from etcd → neighbour entry on every other host",
      seen((s) =>
        s.allProgrammedMs === null || s.publishedMs === null ? null : s.allProgrammedMs - s.publishedMs,
      ),
    ),
    samples,
  };
}

/** nsenter arguments into a container's (by pid) or a host's (by namespace name) network namespace. */
type Ns = string[];
const containerNs = (pid: number): Ns => ["-t", String(pid), "-n"];
const hostNs = (h: HostState): Ns => [`--net=${netnsPath(h.netns)}`];

async function waitListening(ns: Ns, port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await run("nsenter", [...ns, "ss", "-Hltn", `sport = :${port}`]);
    if (r.stdout.trim() !== "") return;
    await sleep(50);
  }
  throw new Error(`nothing listens on port ${port}`);
}

async function iperf(
  client: Ns,
  target: string,
  secs: number,
): Promise<{ gbps: number; retransmits: number }> {
  const out = await must(
    "nsenter",
    [...client, "iperf3", "-c", target, "-p", String(IPERF_PORT), "-t", String(secs), "-J"],
    (secs + 30) * 1000,
  );
  const r = JSON.parse(out) as {
    end?: { sum_received?: { bits_per_second: number }; sum_sent?: { retransmits?: number } };
  };
  const bps = r.end?.sum_received?.bits_per_second;
  if (!bps) throw new Error(`iperf3 gave no result: ${out.slice(0, 500)}`);
  return { gbps: round(bps / 1e9), retransmits: r.end?.sum_sent?.retransmits ?? 0 };
}

async function mtuOf(ns: Ns, dev: string): Promise<number> {
  const [link] = JSON.parse(await must("nsenter", [...ns, "ip", "-j", "link", "show", "dev", dev])) as {
    mtu: number;
  }[];
  return link?.mtu ?? 0;
}

async function offloads(ns: Ns, dev: string): Promise<Record<string, string>> {
  const out = await must("nsenter", [...ns, "ethtool", "-k", dev]);
  const features: Record<string, string> = {};
  for (const line of out.split("\n")) {
    const [k, v] = line.trim().split(": ");
    if (k && v && FEATURES.includes(k)) features[k] = v;
  }
  return features;
}

async function throughput(o: ClusterOptions): Promise<ThroughputResult> {
  console.error("cluster: throughput");
  return withLab(2, async (lab) => {
    let underlayServer: ChildProcess | undefined;
    try {
      const [h1, h2] = lab.hosts as [HostState, HostState];
      const iperfServer = ["iperf3", "-s", "-p", String(IPERF_PORT)];
      await lab.createOverlay(NET, SUBNET);
      const ovServer = await lab.runContainer(h1, "ov-server", NET, iperfServer);
      const ovClient = await lab.runContainer(h2, "ov-client", NET, ["sleep", "1d"]);
      await lab.call(
        h1,
        "POST",
        "/networks/create",
        { Name: BRIDGE_NET, IPAM: { Config: [{ Subnet: "10.78.0.0/24" }] } },
        201,
      );
      const brServer = await lab.runContainer(h1, "br-server", BRIDGE_NET, iperfServer);
      const brClient = await lab.runContainer(h1, "br-client", BRIDGE_NET, ["sleep", "1d"]);
      underlayServer = track(spawn("nsenter", [...hostNs(h1), ...iperfServer], { stdio: "ignore" }));
      await waitListening(hostNs(h1), IPERF_PORT);
      await waitListening(containerNs(ovServer.pid), IPERF_PORT);
      await waitListening(containerNs(brServer.pid), IPERF_PORT);
      const net = (await lab.call(h1, "GET", `/networks/${NET}`, undefined, 200)) as {
        Options: Record<string, string>;
      };
      const vxlan = `ctvx${net.Options["com.docker.network.driver.overlay.vxlanid_list"]}`;
      const paths = [
        {
          name: "overlay: container → container across hosts (VXLAN)",
          client: containerNs(ovClient.pid),
          target: ovServer.ip,
          mtu: await mtuOf(containerNs(ovClient.pid), "eth0"),
        },
        {
          name: "underlay: host → host (same veths and lab bridge, no VXLAN)",
          client: hostNs(h2),
          target: h1.addr,
          mtu: await mtuOf(hostNs(h2), "eth0"),
        },
        {
          name: "bridge: container → container on one host (reference)",
          client: containerNs(brClient.pid),
          target: brServer.ip,
          mtu: await mtuOf(containerNs(brClient.pid), "eth0"),
        },
      ].map((p) => ({ ...p, gbps: [] as number[], retransmits: [] as number[] }));
      await settle(15, 10_000);
      for (let i = 0; i < o.iperfRuns; i++) {
        for (const p of paths) {
          const r = await iperf(p.client, p.target, o.iperfSeconds);
          p.gbps.push(r.gbps);
          p.retransmits.push(r.retransmits);
        }
      }
      const result = paths.map((p) => ({
        name: p.name,
        mtu: p.mtu,
        gbps: p.gbps,
        median: round(median(p.gbps)),
        retransmits: p.retransmits,
      }));
      return {
        seconds: o.iperfSeconds,
        runs: o.iperfRuns,
        paths: result,
        ratio: round((result[0]?.median ?? 0) / (result[1]?.median || 1), 3),
        offloads: {
          "container eth0 (overlay)": await offloads(containerNs(ovClient.pid), "eth0"),
          [`host ${vxlan} (VXLAN)`]: await offloads(hostNs(h2), vxlan),
          "host eth0 (underlay)": await offloads(hostNs(h2), "eth0"),
        },
      };
    } finally {
      underlayServer?.kill("SIGKILL");
    }
  });
}

export async function benchCluster(o: ClusterOptions): Promise<ClusterResult> {
  for (const h of o.hosts)
    if (!Number.isInteger(h) || h < 2) throw new Error("--cluster-hosts: a lab needs at least 2 hosts");
  ensurePackages(["fping", "iperf3", "ethtool"]);
  const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const s of signals) process.on(s, onSignal);
  const result: ClusterResult = { convergence: [], throughput: undefined };
  const started = Date.now();
  try {
    for (const h of o.hosts) result.convergence.push(await convergence(h, o));
    if (o.iperfRuns > 0) result.throughput = await throughput(o);
  } finally {
    for (const s of signals) process.off(s, onSignal);
    for (const p of children) p.kill("SIGKILL");
  }
  writeResult("cluster.json", {
    options: o,
    wallSeconds: Math.round((Date.now() - started) / 1000),
    loadavg: os.loadavg().map((x) => round(x)),
    method: {
      convergence:
        "POST /containers/create + /start on one host's socket, timed in-process; then the time to the first echo reply seen by fping -l -p 1 (1 ms period, receive timestamps) in a container on another host, which holds a permanent neighbour entry for the new address (MAC derived from it), so the pinger's ARP timer is not measured. Sample times are ms from the create call; published = an etcdctl watch beside the etcd member heard the endpoint; programmed = `ip -ts monitor neigh` on the pinger's host (first/all: on the first/last other host)",
      throughput:
        "iperf3 -t N, one TCP stream, runs interleaved over the three paths; median of received Gbit/s",
    },
    ...result,
  });
  return result;
}

const ms = (x: number) => x.toFixed(1);

export function clusterTables(r: ClusterResult): string {
  const mp = (x: Stat) => `${ms(x.median)} / ${ms(x.p99)}`;
  const lines = [
    "| hosts | rounds (failed) | run | run → reply (convergence) | call → reply | call → in etcd | etcd → pinger's host | etcd → first / all other hosts (median) |",
    "|---|---|---|---|---|---|---|---|",
    ...r.convergence.map(
      (c) =>
        `| ${c.hosts} | ${c.rounds} (${c.failed}) | ${mp(c.run)} | ${mp(c.convergence)} | ${mp(c.reply)} | ${mp(c.published)} | ${mp(c.propagation)} | ${ms(c.propagationFirst.median)} / ${ms(c.propagationAll.median)} |`,
    ),
    "",
    "(ms, median / p99)",
  ];
  if (r.throughput) {
    lines.push(
      "",
      "| path | MTU | Gbit/s (runs) | median Gbit/s |",
      "|---|---|---|---|",
      ...r.throughput.paths.map((p) => `| ${p.name} | ${p.mtu} | ${p.gbps.join(", ")} | ${p.median} |`),
      "",
      `overlay / underlay: ${(100 * r.throughput.ratio).toFixed(0)}%`,
    );
  }
  return lines.join("\n");
}
