/**
 * A ctnet daemon for one integration test: its own host network namespace, data and exec roots
 * and socket, all under a fresh temporary directory. `destroy()` removes every container and
 * network it made, stops the daemon, deletes the namespace and checks that nothing is left.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type ApiResponse, apiRequest } from "./http.js";
import { type ExecResult, makeTestNetns, type TestNetns } from "./netns.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const CTNET = join(ROOT, "bin", "ctnet");
const MAIN = join(ROOT, "dist", "cli", "main.js");

/** Pids whose command line mentions `text` (a test's directory: its daemon's containers). */
export function processesMentioning(text: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(text)) out.push(Number(entry));
    } catch {
      // exited while we looked
    }
  }
  return out;
}

/**
 * The upstream resolver of every test daemon: 127.0.0.1 of its own host namespace, where a test
 * may start a stub. Containers never fall back to the machine's real resolver.
 */
export const TEST_UPSTREAM = "127.0.0.1";

export class TestDaemon {
  private proc: ChildProcess | undefined;
  readonly dataRoot: string;
  readonly execRoot: string;
  readonly socket: string;
  readonly host: string;
  log = "";
  /** The daemon's log level and extra environment, from its next (re)start on. */
  logLevel = "info";
  env: NodeJS.ProcessEnv = {};
  /** Extra daemon flags, from its next (re)start on. */
  args: string[] = [];

  private constructor(
    readonly ns: TestNetns,
    readonly dir: string,
  ) {
    this.dataRoot = join(dir, "data");
    this.execRoot = join(dir, "exec");
    this.socket = join(dir, "ctnet.sock");
    this.host = `unix://${this.socket}`;
  }

  /** `args` are extra daemon flags, e.g. `--node-name host1`. */
  static async start(prefix: string, args: string[] = []): Promise<TestDaemon> {
    const ns = makeTestNetns(prefix);
    // A real host has its loopback up; a fresh namespace does not.
    ns.exec(["ip", "link", "set", "lo", "up"]);
    const dir = mkdtempSync(`/tmp/ctnet-test-${prefix}-`);
    const d = new TestDaemon(ns, dir);
    d.args = args;
    try {
      await d.spawnDaemon();
    } catch (err) {
      d.ns.destroy();
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    return d;
  }

  /** Starts (or restarts) the daemon process and waits until it answers. */
  async spawnDaemon(): Promise<void> {
    const args = [
      `--net=${this.ns.path}`,
      "--",
      process.execPath,
      MAIN,
      "daemon",
      "--data-root",
      this.dataRoot,
      "--exec-root",
      this.execRoot,
      "-H",
      this.host,
      "--dns",
      TEST_UPSTREAM,
      "--log-level",
      this.logLevel,
      ...this.args,
    ];
    const proc = spawn("nsenter", args, {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, ...this.env },
    });
    this.proc = proc;
    proc.stderr?.on("data", (b: Buffer) => {
      this.log += b.toString();
    });
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`daemon exited (${proc.exitCode}):\n${this.log}`);
      try {
        const r = await this.api("GET", "/_ping");
        if (r.status === 200) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`daemon did not answer within 15 s:\n${this.log}`);
  }

  /** Kills the daemon the hard way (a crash); containers keep running. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill(signal);
    await exited;
    this.proc = undefined;
  }

  api(method: string, path: string, body?: unknown): Promise<ApiResponse> {
    return apiRequest(this.socket, method, path, body);
  }

  /** Runs the ctnet CLI against this daemon (from outside its namespace, as a user on the host would). */
  cli(args: string[], opts: { input?: string; timeout?: number } = {}): ExecResult {
    const r = spawnSync(CTNET, args, {
      encoding: "utf8",
      env: { ...process.env, CTNET_HOST: this.host },
      timeout: opts.timeout ?? 60_000,
      input: opts.input,
    });
    return { stdout: r.stdout, stderr: r.stderr, status: r.status };
  }

  /** Like cli() but fails the test on a non-zero exit. */
  ok(args: string[]): string {
    const r = this.cli(args);
    if (r.status !== 0) throw new Error(`ctnet ${args.join(" ")} exited ${r.status}: ${r.stderr}${r.stdout}`);
    return r.stdout.trim();
  }

  /** Runs a command inside a running container's namespaces. */
  exec(container: string, cmd: string[], timeout = 20_000): ExecResult {
    return this.cli(["exec", container, ...cmd], { timeout });
  }

  /**
   * Another machine on the host's link: a namespace joined to the daemon's host namespace by a
   * veth ("uplink" on the host side, eth0 on the other), addressed from `subnet` (.1 the host,
   * .2 the peer). Returns the peer namespace; the caller destroys it.
   */
  addNeighbour(prefix: string, subnet24: string): { ns: TestNetns; hostIp: string; peerIp: string } {
    const ns = makeTestNetns(prefix);
    const base = subnet24.replace(/\.0\/24$/, "");
    const hostIp = `${base}.1`;
    const peerIp = `${base}.2`;
    const steps: [TestNetns, string[]][] = [
      [this.ns, ["ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", ns.name]],
      [this.ns, ["ip", "addr", "add", `${hostIp}/24`, "dev", "uplink"]],
      [this.ns, ["ip", "link", "set", "uplink", "up"]],
      [ns, ["ip", "addr", "add", `${peerIp}/24`, "dev", "eth0"]],
      [ns, ["ip", "link", "set", "eth0", "up"]],
      [ns, ["ip", "link", "set", "lo", "up"]],
    ];
    for (const [where, cmd] of steps) {
      const r = where.exec(cmd);
      if (r.status !== 0) {
        ns.destroy();
        throw new Error(`${cmd.join(" ")}: ${r.stderr}`);
      }
    }
    return { ns, hostIp, peerIp };
  }

  /** The real docker CLI against this daemon. */
  docker(args: string[]): ExecResult {
    const r = spawnSync("docker", args, {
      encoding: "utf8",
      env: { ...process.env, DOCKER_HOST: this.host },
      timeout: 30_000,
    });
    return { stdout: r.stdout, stderr: r.stderr, status: r.status };
  }

  /** Runs a command in the daemon's host namespace. */
  hostExec(cmd: string[]): ExecResult {
    return this.ns.exec(cmd);
  }

  /**
   * Removes everything, then checks for leaks: no sandbox mounts under the test's directory, no
   * container processes left. Throws if something leaked.
   */
  async destroy(): Promise<void> {
    const problems: string[] = [];
    try {
      if (!this.proc) await this.spawnDaemon();
      const list = await this.api("GET", "/containers/json?all=1");
      for (const c of (list.body as { Id: string }[]) ?? []) {
        const r = await this.api("DELETE", `/containers/${c.Id}?force=1`);
        if (r.status !== 204 && r.status !== 404) problems.push(`rm ${c.Id}: ${r.text}`);
      }
      const nets = await this.api("GET", "/networks");
      for (const n of (nets.body as { Id: string; Name: string; Scope: string }[]) ?? []) {
        if (["bridge", "host", "none"].includes(n.Name)) continue;
        const r = await this.api("DELETE", `/networks/${n.Id}`);
        // A global network still used on another host is removed by the last host to go.
        if (r.status === 403 && n.Scope === "global") continue;
        if (r.status !== 204 && r.status !== 404) problems.push(`network rm ${n.Name}: ${r.text}`);
      }
      // A host in a cluster leaves it, which stops the etcd member it may run.
      const cluster = await this.api("GET", "/ctnet/cluster");
      if ((cluster.body as { Role?: string }).Role !== "none") {
        const r = await this.api("POST", "/ctnet/cluster/leave");
        if (r.status !== 200) problems.push(`cluster leave: ${r.text}`);
      }
    } catch (err) {
      problems.push(`cleanup through the API failed: ${(err as Error).message}`);
    }
    await this.kill("SIGTERM");
    const stray = processesMentioning(this.dir);
    if (stray.length > 0) {
      problems.push(`processes left: ${stray.join(", ")}`);
      for (const pid of stray) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // gone meanwhile
        }
      }
    }
    const mounts = readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .filter((l) => l.includes(this.dir));
    if (mounts.length > 0) {
      problems.push(`mounts left: ${mounts.join("; ")}`);
      for (const l of mounts) spawnSync("umount", ["-l", l.split(" ")[4] ?? ""]);
    }
    this.ns.destroy();
    if (existsSync(this.dir)) rmSync(this.dir, { recursive: true, force: true });
    if (problems.length > 0)
      throw new Error(
        `test daemon cleanup found problems:\n${problems.join("\n")}\n--- daemon log ---\n${this.log.slice(-4000)}`,
      );
  }
}
