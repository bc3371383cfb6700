/**
 * The machine side of the peer benchmarks: running commands (timed), installing the peers' Debian
 * packages, the host namespaces the peers run in, a "neighbour" machine on a veth, and the
 * before/after picture of the machine's own network that proves the run left it as it found it.
 */
import { spawn, spawnSync } from "node:child_process";
import {
  existsSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { makeTestNetns, type TestNetns } from "../../test/helpers/netns.js";

export interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit. */
  ms: number;
}

/**
 * Runs a command without blocking the event loop (a daemon whose log pipe we read must not stall
 * while a client of it runs) and times it.
 */
export function run(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout?.setEncoding("utf8").on("data", (s: string) => {
      stdout += s;
    });
    child.stderr?.setEncoding("utf8").on("data", (s: string) => {
      stderr += s;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 120_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Like run() but throws, with the command's output, unless it exits 0. */
export async function must(cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<Ran> {
  const r = await run(cmd, args, opts);
  if (r.status !== 0)
    throw new Error(
      `${cmd} ${args.join(" ")} exited ${r.status}: ${(r.stderr + r.stdout).trim().slice(-1500)}`,
    );
  return r;
}

/** First line of a command's output, or "" when it is missing. */
export function versionOf(cmd: string, args: string[] = ["--version"]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return `${r.stdout ?? ""}${r.stderr ?? ""}`.trim().split("\n")[0] ?? "";
}

/** dpkg's status and version of a package ("" and "" when it is unknown). */
function dpkgQuery(pkg: string): { status: string; version: string } {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
  const r = spawnSync("dpkg-query", ["-W", "-f", "${Status}\t${Version}", pkg], { encoding: "utf8" });
  const [status = "", version = ""] = r.status === 0 ? r.stdout.split("\t") : [];
  return { status, version: version.trim() };
}

export function debVersion(pkg: string): string {
  return dpkgQuery(pkg).version;
}

/** The Debian packages the peer benchmarks use. */
export const PEER_PACKAGES = [
  "docker.io",
  "podman",
  "netavark",
  "aardvark-dns",
  "containernetworking-plugins",
  "runc",
  "iptables",
  "iperf3",
  "dnsperf",
  "fping",
  "busybox-static",
];

/**
 * Installs the missing packages. Debian starts a package's services on install (docker.io would
 * start dockerd in the machine's own namespace and change its firewall), so a policy-rc.d that
 * forbids it is put in place for the install when the machine has none.
 */
export async function ensurePackages(packages: string[]): Promise<string[]> {
  const missing = packages.filter((p) => !dpkgQuery(p).status.includes("install ok installed"));
  if (missing.length === 0) return [];
  console.error(`peers: installing ${missing.join(" ")}`);
  const policy = "/usr/sbin/policy-rc.d";
  const ownPolicy = !existsSync(policy);
  if (ownPolicy) writeFileSync(policy, "#!/bin/sh\nexit 101\n", { mode: 0o755 });
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    await must("apt-get", ["update", "-qq"], { env, timeoutMs: 600_000 });
    await must("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing], {
      env,
      timeoutMs: 900_000,
    });
  } finally {
    if (ownPolicy) rmSync(policy, { force: true });
  }
  return missing;
}

/** A host network namespace for one peer, with its loopback up as on a real host. */
export function hostNamespace(prefix: string): TestNetns {
  const ns = makeTestNetns(prefix);
  const r = ns.exec(["ip", "link", "set", "lo", "up"]);
  if (r.status !== 0) {
    ns.destroy();
    throw new Error(`lo up in ${ns.name}: ${r.stderr}`);
  }
  return ns;
}

const neighbours = new Set<TestNetns>();

/**
 * Another machine on a host namespace's link: a namespace joined to `host` by a veth ("pnb0" on
 * the host side, eth0 on the other), host 192.168.250.1, neighbour .2. Clients of published ports
 * run there, so their traffic arrives from outside as a remote client's would.
 */
export function neighbourOf(host: string): { ns: TestNetns; hostIp: string } {
  const ns = makeTestNetns("peer-nb");
  neighbours.add(ns);
  const steps: string[][] = [
    ["-n", host, "link", "add", "pnb0", "type", "veth", "peer", "name", "eth0", "netns", ns.name],
    ["-n", host, "addr", "add", "192.168.250.1/24", "dev", "pnb0"],
    ["-n", host, "link", "set", "pnb0", "up"],
    ["-n", ns.name, "addr", "add", "192.168.250.2/24", "dev", "eth0"],
    ["-n", ns.name, "link", "set", "eth0", "up"],
    ["-n", ns.name, "link", "set", "lo", "up"],
  ];
  for (const step of steps) {
    const r = spawnSync("ip", step, { encoding: "utf8" });
    if (r.status !== 0) {
      ns.destroy();
      throw new Error(`ip ${step.join(" ")}: ${r.stderr}`);
    }
  }
  return { ns, hostIp: "192.168.250.1" };
}

/** Removes the neighbour and its veth (deleting one end of a veth deletes both). */
export function removeNeighbour(n: { ns: TestNetns }): void {
  n.ns.destroy();
  neighbours.delete(n.ns);
}

/** Removes the neighbours still there (an interrupted run). */
export function removeAllNeighbours(): void {
  for (const ns of neighbours) removeNeighbour({ ns });
}

/** Pids of processes whose network namespace is the one at `nsPath`. */
export function processesInNetns(nsPath: string): number[] {
  if (!existsSync(nsPath)) return [];
  const ino = statSync(nsPath).ino;
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readlinkSync(`/proc/${entry}/ns/net`) === `net:[${ino}]`) out.push(Number(entry));
    } catch {
      // exited while we looked
    }
  }
  return out;
}

export function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
}

/** Mount points (innermost first) at or under `dir`. */
export function mountsUnder(dir: string): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .reverse();
}

export function unmountAll(dir: string): string[] {
  const left = mountsUnder(dir);
  for (const m of left) spawnSync("umount", ["-l", m]);
  return left;
}

function cgroupRoots(): string[] {
  return existsSync("/sys/fs/cgroup/cgroup.controllers")
    ? ["/sys/fs/cgroup"]
    : readdirSync("/sys/fs/cgroup").map((c) => `/sys/fs/cgroup/${c}`);
}

export function cgroupExists(name: string): boolean {
  return cgroupRoots().some((r) => existsSync(`${r}/${name}`));
}

/** Pids in the cgroup `name` and its children, under every controller. */
export function cgroupProcs(name: string): number[] {
  const pids = new Set<number>();
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true }))
      if (e.isDirectory()) walk(`${dir}/${e.name}`);
      else if (e.name === "cgroup.procs")
        for (const l of readFileSync(`${dir}/${e.name}`, "utf8").split("\n"))
          if (l !== "") pids.add(Number(l));
  };
  for (const root of cgroupRoots()) if (existsSync(`${root}/${name}`)) walk(`${root}/${name}`);
  return [...pids];
}

/**
 * Removes cgroup directories named `name` under every controller (cgroup v1 mounts one tree per
 * controller; v2 one), children first: a cgroup is removed with rmdir, not by deleting its files.
 */
export function removeCgroups(name: string): string[] {
  const removed: string[] = [];
  const roots = cgroupRoots();
  const rmTree = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true }))
      if (e.isDirectory()) rmTree(`${dir}/${e.name}`);
    spawnSync("rmdir", [dir]);
  };
  for (const root of roots) {
    const dir = `${root}/${name}`;
    if (!existsSync(dir)) continue;
    rmTree(dir);
    removed.push(dir);
  }
  return removed;
}

/**
 * The machine's own network as a set of lines: links, addresses, routes and rules of the root
 * namespace, its nftables ruleset (which holds iptables-nft's tables too), forwarding sysctls,
 * and the named namespaces and mounts that belong to the peer benchmarks (`ctt-peer-*`, and
 * Podman's `netns-*`). Counters and neighbour state are left out: they change by themselves.
 */
export function networkPicture(): Map<string, string[]> {
  const cmd = (args: string[]) => {
    const r = spawnSync(args[0] as string, args.slice(1), { encoding: "utf8" });
    return (r.status === 0 ? r.stdout : `(${args.join(" ")} failed: ${r.stderr.trim()})`)
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "");
  };
  const sysctl = (k: string) => {
    try {
      return [`${k}=${readFileSync(`/proc/sys/${k.replaceAll(".", "/")}`, "utf8").trim()}`];
    } catch {
      return [];
    }
  };
  return new Map([
    ["links", cmd(["ip", "-o", "link", "show"]).map((l) => l.replace(/\\\s+link\/.*$/, ""))],
    ["addresses", cmd(["ip", "-o", "addr", "show"]).map((l) => l.replace(/\\\s+valid_lft.*$/, ""))],
    ["routes", cmd(["ip", "route", "show", "table", "all"])],
    ["routes6", cmd(["ip", "-6", "route", "show", "table", "all"])],
    ["rules", cmd(["ip", "rule", "show"])],
    ["nftables", cmd(["nft", "list", "ruleset"])],
    [
      "sysctls",
      [
        ...sysctl("net.ipv4.ip_forward"),
        ...sysctl("net.ipv6.conf.all.forwarding"),
        ...sysctl("net.ipv4.conf.all.route_localnet"),
        ...sysctl("net.bridge.bridge-nf-call-iptables"),
      ],
    ],
    ["namespaces", cmd(["ip", "netns", "list"]).filter((l) => /^(ctt-peer|netns-)/.test(l))],
    [
      "mounts",
      readFileSync("/proc/self/mountinfo", "utf8")
        .split("\n")
        .map((l) => l.split(" ")[4] ?? "")
        .filter((m) => /^\/run\/netns\/(ctt-peer|netns-)|^\/tmp\/ctnet-peers-/.test(m)),
    ],
  ]);
}

/** Lines that differ between two pictures, as "+ kind: line" (new) and "- kind: line" (gone). */
export function pictureDiff(before: Map<string, string[]>, after: Map<string, string[]>): string[] {
  const out: string[] = [];
  for (const [kind, lines] of before) {
    const now = after.get(kind) ?? [];
    const was = new Set(lines);
    const is = new Set(now);
    for (const l of lines) if (!is.has(l)) out.push(`- ${kind}: ${l}`);
    for (const l of now) if (!was.has(l)) out.push(`+ ${kind}: ${l}`);
  }
  return out;
}

/**
 * Paths outside their data directories that the peers create on first use whatever they are told
 * (dockerd's /etc/docker/key.json, containerd's shim sockets under /run/containerd, netavark's
 * /run/containers/networks, Podman's lock in /dev/shm). Those that did not exist before the run
 * are removed after it.
 */
export const STRAY_PATHS = [
  "/etc/docker/key.json",
  "/run/docker",
  "/run/containerd",
  "/run/containers",
  "/run/libpod",
  "/dev/shm/libpod_lock",
  "/var/lib/cni",
  "/run/cni",
];

export function existingPaths(paths: string[]): Set<string> {
  return new Set(paths.filter((p) => existsSync(p)));
}
