/**
 * A lab of ctnet hosts for one integration test, driven through the real `ctnet lab` commands
 * under a unique name. `destroy()` runs `lab down` and then checks that nothing of the lab is
 * left: namespaces, links on the machine, mounts, processes, directories, its subnet claim.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type HostState, LAB_DATA_ROOT, LAB_RUN_ROOT, type LabState, loadLab } from "../../src/lab/state.js";
import { CTNET } from "./daemon.js";
import { type ApiResponse, apiRequest } from "./http.js";
import type { ExecResult } from "./netns.js";

export interface LabUpOptions {
  hosts: number;
  /** hosts 1..members run an etcd member (default 1) */
  members?: number;
  /** form the cluster (default true) */
  cluster?: boolean;
  logLevel?: string;
}

export interface LabMachine {
  name: string;
  addr: string;
  netns: string;
  /** Runs a command in the machine's namespace; never throws on a non-zero status. */
  exec(cmd: string[], timeout?: number): ExecResult;
}

/** Runs the ctnet CLI with `args`; never throws on a non-zero status. */
export function ctnet(args: string[], opts: { timeout?: number; env?: NodeJS.ProcessEnv } = {}): ExecResult {
  const r = spawnSync(CTNET, args, {
    encoding: "utf8",
    timeout: opts.timeout ?? 120_000,
    env: opts.env ?? process.env,
  });
  if (r.error) throw r.error;
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}

/** What of lab `name` is still on the machine; empty when it is all gone. */
export function labLeftovers(name: string, members: string[] = []): string[] {
  const found: string[] = [];
  const ns = existsSync("/run/netns") ? readdirSync("/run/netns") : [];
  const own = new RegExp(`^ctlab-${name}(-|$)`);
  const namespaces = ns.filter((n) => own.test(n));
  if (namespaces.length > 0) found.push(`namespaces: ${namespaces.join(", ")}`);
  const dirs = [join(LAB_RUN_ROOT, name), join(LAB_DATA_ROOT, name)];
  for (const d of dirs) if (existsSync(d)) found.push(`directory ${d}`);
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((p) => dirs.some((d) => p === d || p.startsWith(`${d}/`)));
  if (mounts.length > 0) found.push(`mounts: ${mounts.join(", ")}`);
  const procs: string[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      if (dirs.some((d) => cmdline.includes(`${d}/`)) || cmdline.includes(`/run/netns/ctlab-${name}`))
        procs.push(`${entry} (${cmdline.replaceAll("\0", " ").trim().slice(0, 120)})`);
    } catch {
      // exited while we looked
    }
  }
  if (procs.length > 0) found.push(`processes: ${procs.join("; ")}`);
  const claims = join(LAB_RUN_ROOT, ".subnets");
  if (existsSync(claims))
    for (const c of readdirSync(claims))
      if (readFileSync(join(claims, c), "utf8") === name) found.push(`subnet claim ${c}`);
  // The lab never makes a link in the machine's own namespace; one named like its ports would be a leak.
  const portNames = new Set(["underlay", ...members]);
  const links = spawnSync("ip", ["-o", "link"], { encoding: "utf8" })
    .stdout.split("\n")
    .map((l) => l.split(": ")[1]?.split("@")[0])
    .filter((l): l is string => !!l && portNames.has(l));
  if (links.length > 0) found.push(`links on the machine: ${links.join(", ")}`);
  return found;
}

export class TestLab {
  private constructor(readonly name: string) {}

  /** Brings up a lab named `t<6 hex digits>`; a failed `up` has cleaned up after itself. */
  static up(o: LabUpOptions): TestLab {
    const name = `t${randomBytes(3).toString("hex")}`;
    const args = ["lab", "up", "--name", name, "--hosts", String(o.hosts)];
    if (o.members !== undefined) args.push("--members", String(o.members));
    if (o.cluster === false) args.push("--no-cluster");
    if (o.logLevel) args.push("--log-level", o.logLevel);
    const r = ctnet(args);
    if (r.status !== 0) throw new Error(`ctnet ${args.join(" ")} exited ${r.status}: ${r.stderr}${r.stdout}`);
    return new TestLab(name);
  }

  /** The lab's state file as `lab up`/`machine`/`start` last wrote it. */
  get state(): LabState {
    return loadLab(this.name);
  }

  host(name: string): HostState {
    const h = this.state.hosts.find((x) => x.name === name);
    if (!h) throw new Error(`lab ${this.name} has no host ${name}`);
    return h;
  }

  /** `ctnet lab <sub> --name LAB <args…>` */
  lab(sub: string, args: string[] = [], timeout?: number): ExecResult {
    return ctnet(["lab", sub, "--name", this.name, ...args], { timeout });
  }

  /** A command run on a host or machine through `ctnet lab exec`; never throws on a non-zero status. */
  exec(member: string, cmd: string[], timeout = 60_000): ExecResult {
    return this.lab("exec", [member, ...cmd], timeout);
  }

  /** The ctnet CLI on `host`, against that host's daemon. */
  ctnet(host: string, args: string[], timeout?: number): ExecResult {
    return this.exec(host, ["ctnet", ...args], timeout);
  }

  /** Like ctnet() but fails the test on a non-zero exit; returns trimmed stdout. */
  ok(host: string, args: string[]): string {
    const r = this.ctnet(host, args);
    if (r.status !== 0)
      throw new Error(`${host}: ctnet ${args.join(" ")} exited ${r.status}: ${r.stderr}${r.stdout}`);
    return r.stdout.trim();
  }

  docker(host: string, args: string[]): ExecResult {
    return this.exec(host, ["docker", ...args]);
  }

  /** One API call to a host's daemon over its socket. */
  api(host: string, method: string, path: string, body?: unknown): Promise<ApiResponse> {
    return apiRequest(this.host(host).socket, method, path, body);
  }

  /** A plain namespace on the underlay (`ctnet lab machine`), at the next free address. */
  machine(name: string): LabMachine {
    const r = this.lab("machine", [name]);
    if (r.status !== 0) throw new Error(`lab machine ${name}: ${r.stderr}`);
    const m = this.state.machines.find((x) => x.name === name);
    if (!m) throw new Error(`lab machine ${name} is not in the lab's state`);
    return {
      ...m,
      exec: (cmd, timeout) => this.exec(name, cmd, timeout),
    };
  }

  /** `lab stop HOST`: the host fails (its processes killed, its namespace deleted). */
  stop(host: string): void {
    const r = this.lab("stop", [host]);
    if (r.status !== 0) throw new Error(`lab stop ${host}: ${r.stderr}`);
  }

  start(host: string): void {
    const r = this.lab("start", [host]);
    if (r.status !== 0) throw new Error(`lab start ${host}: ${r.stderr}`);
  }

  /** The tail of every host's daemon log, for a failing test's message. */
  logs(chars = 3_000): string {
    let out = "";
    for (const h of this.state.hosts) {
      try {
        out += `--- ${h.name} ---\n${readFileSync(h.log, "utf8").slice(-chars)}\n`;
      } catch {
        out += `--- ${h.name}: no log ---\n`;
      }
    }
    return out;
  }

  /** `lab down`, then the leak check; throws if anything is left. */
  destroy(): void {
    let members: string[] = [];
    let logs = "";
    try {
      const s = this.state;
      members = [...s.hosts, ...s.machines].map((m) => m.name);
      logs = this.logs();
    } catch {
      // no state: down will say so
    }
    const problems: string[] = [];
    const down = this.lab("down");
    // Warnings say a daemon failed to remove a container, which down then did the hard way.
    if (down.status !== 0 || down.stderr.trim())
      problems.push(`lab down exited ${down.status}: ${down.stderr}`);
    problems.push(...labLeftovers(this.name, members));
    if (problems.length > 0)
      throw new Error(`lab ${this.name} cleanup found problems:\n${problems.join("\n")}\n${logs}`);
  }
}
