/**
 * The lab's wiring: a lab namespace holding the underlay bridge, and one namespace per host or
 * machine whose `eth0` is a veth to that bridge. Made with iproute2 (a handful of calls per
 * host, far from any hot path), and never a link in the machine's own namespace.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { SystemError } from "../errors.js";
import { type LabState, netnsPath, UNDERLAY_BRIDGE } from "./state.js";

const MTU = "1500";

function ip(args: string[]): void {
  const r = spawnSync("ip", args, { encoding: "utf8" });
  if (r.error) throw new SystemError(`ip ${args.join(" ")}: ${r.error.message}`);
  if (r.status !== 0) throw new SystemError(`ip ${args.join(" ")}: ${r.stderr.trim()}`);
}

/**
 * A fixed MAC per underlay address (02:64:40 = locally administered, 100.64), as a real machine
 * keeps its NIC's across a reboot: a host started again after `lab stop` is reached at once,
 * rather than after its neighbours' cached entry for its old MAC expires.
 */
function macOf(addr: string): string {
  const [, , k, octet] = addr.split(".").map(Number);
  return ["02", "64", "40", k, 0, octet].map((b) => b.toString(16).padStart(2, "0")).join(":");
}

/** The lab namespace with its bridge, addressed .254 on the underlay subnet. */
export function createUnderlay(lab: LabState): void {
  ip(["netns", "add", lab.netns]);
  const n = ["-n", lab.netns];
  ip([...n, "link", "set", "lo", "up"]);
  ip([...n, "link", "add", UNDERLAY_BRIDGE, "address", macOf(lab.labAddr), "mtu", MTU, "type", "bridge"]);
  ip([...n, "addr", "add", `${lab.labAddr}/24`, "dev", UNDERLAY_BRIDGE]);
  ip([...n, "link", "set", UNDERLAY_BRIDGE, "up"]);
}

/**
 * A namespace on the underlay: `eth0` inside, its peer (named after the member) a port of the
 * lab's bridge, `addr`/24 on eth0, loopback up. Used for hosts, machines, and a host started
 * again after `lab stop`.
 */
export function plugIn(lab: LabState, member: { name: string; netns: string; addr: string }): void {
  ip(["netns", "add", member.netns]);
  const n = ["-n", lab.netns];
  const m = ["-n", member.netns];
  ip([
    ...n,
    "link",
    "add",
    member.name,
    "mtu",
    MTU,
    "type",
    "veth",
    "peer",
    "name",
    "eth0",
    "address",
    macOf(member.addr),
    "mtu",
    MTU,
    "netns",
    member.netns,
  ]);
  ip([...n, "link", "set", member.name, "master", UNDERLAY_BRIDGE, "up"]);
  ip([...m, "addr", "add", `${member.addr}/24`, "dev", "eth0"]);
  ip([...m, "link", "set", "eth0", "up"]);
  ip([...m, "link", "set", "lo", "up"]);
}

export function netnsExists(netns: string): boolean {
  return existsSync(netnsPath(netns));
}

/**
 * Deletes a namespace and so every interface in it (a veth's peer on the bridge goes too).
 * Idempotent.
 */
export function deleteNetns(netns: string): void {
  if (!netnsExists(netns)) return;
  const r = spawnSync("ip", ["netns", "del", netns], { encoding: "utf8" });
  if (r.status !== 0 && netnsExists(netns))
    throw new SystemError(`ip netns del ${netns}: ${r.stderr.trim()}`);
}

/** The lab's namespaces present on the machine, found by name: what a lost state file would have listed. */
export function labNamespaces(lab: string): string[] {
  let names: string[];
  try {
    names = readdirSync("/run/netns");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  const own = new RegExp(`^ctlab-${lab}(-[a-z][a-z0-9_]*)?$`);
  return names.filter((n) => own.test(n));
}

/** The inode that names a network namespace, or undefined if `path` is gone. */
function netnsInode(path: string): number | undefined {
  try {
    return statSync(path).ino;
  } catch {
    return undefined;
  }
}

/**
 * Live processes whose network namespace is one of `paths` (bind-mounted namespace files), read
 * from /proc/PID/ns/net. Zombies are left out: they have left every namespace already.
 */
export function processesIn(paths: string[]): number[] {
  const inodes = new Set(paths.map(netnsInode).filter((i): i is number => i !== undefined));
  if (inodes.size === 0) return [];
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const m = /^net:\[(\d+)\]$/.exec(readlinkSync(`/proc/${entry}/ns/net`));
      if (m && inodes.has(Number(m[1]))) pids.push(pid);
    } catch {
      // exited meanwhile, or a kernel thread
    }
  }
  return pids;
}

/** Live processes whose command line mentions `text` (a lab's directory: its containers' runners). */
export function processesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(text) && !isZombie(Number(entry)))
        pids.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat[stat.lastIndexOf(")") + 2] === "Z";
  } catch {
    return true;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
  }
}

/** Waits until none of `pids` is alive (gone or a zombie); false if some still run at the deadline. */
export async function waitGone(pids: number[], ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = pids.filter((p) => !isZombie(p));
    if (left.length === 0) return true;
    if (Date.now() >= deadline) return false;
    await sleep(20);
  }
}

/**
 * Waits until none of `pids` exists any more, zombies included. A killed daemon's zombie still
 * answers kill(pid, 0), so a daemon started after it would take it for a live one holding its
 * exec root; orphans are reaped by PID 1, which may take a moment.
 */
export async function waitReaped(pids: number[], ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = pids.filter((p) => existsSync(`/proc/${p}`));
    if (left.length === 0) return;
    if (Date.now() >= deadline)
      throw new SystemError(`processes ${left.join(", ")} ended but were not reaped within ${ms / 1000} s`);
    await sleep(50);
  }
}

/** SIGTERM, then SIGKILL for whatever has not ended after `graceMs`; resolves when all are gone. */
export async function terminate(pids: number[], graceMs: number): Promise<void> {
  if (pids.length === 0) return;
  if (graceMs > 0) {
    for (const p of pids) signal(p, "SIGTERM");
    if (await waitGone(pids, graceMs)) return;
  }
  for (const p of pids) signal(p, "SIGKILL");
  if (!(await waitGone(pids, 5_000)))
    throw new SystemError(`processes ${pids.join(", ")} did not end after SIGKILL`);
}

/** Mount points at or under any of `dirs`, deepest first, from this process's mount table. */
export function mountsUnder(dirs: string[]): string[] {
  const points = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4])
    .filter((p): p is string => !!p)
    .map((p) => p.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))))
    .filter((p) => dirs.some((d) => p === d || p.startsWith(`${d}/`)));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

export function unmount(point: string): void {
  const r = spawnSync("umount", [point], { encoding: "utf8" });
  if (r.status === 0) return;
  // Busy (a process we could not end holds it): detach it, so the directory can still go.
  const lazy = spawnSync("umount", ["-l", point], { encoding: "utf8" });
  if (lazy.status !== 0) throw new SystemError(`umount ${point}: ${lazy.stderr.trim() || r.stderr.trim()}`);
}

/** Deletes the member's port on the bridge, and with it the veth's other end, at once. */
export function unlinkFromUnderlay(lab: LabState, member: { name: string }): void {
  const r = spawnSync("ip", ["-n", lab.netns, "link", "del", member.name], { encoding: "utf8" });
  if (r.status !== 0 && !/Cannot find device/.test(r.stderr))
    throw new SystemError(`ip -n ${lab.netns} link del ${member.name}: ${r.stderr.trim()}`);
}
