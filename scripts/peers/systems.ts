/**
 * The systems compared by the peer benchmarks, behind one interface: ctnet (a test daemon driven by
 * the real docker CLI), Docker (Debian's dockerd), Podman (netavark/aardvark-dns) and the CNI
 * bridge plugin (run by hand, as a runtime would). Each lives in its own host network namespace and
 * its own directory, and `destroy()` removes everything it made and reports what it had to clean
 * by force.
 *
 * Timed operations return the wall time of the command a user would type (docker/podman CLI), so
 * the CLI's own start-up is inside every figure; `apiRun` times the Engine API calls alone, for the
 * two systems that serve it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { processesMentioning, TestDaemon } from "../../test/helpers/daemon.js";
import { startDnsStub } from "../../test/helpers/dns-stub.js";
import { makeTestNetns, type TestNetns } from "../../test/helpers/netns.js";
import {
  cgroupExists,
  cgroupProcs,
  debVersion,
  hostNamespace,
  killAll,
  must,
  processesInNetns,
  type Ran,
  removeCgroups,
  run,
  unmountAll,
  versionOf,
} from "./host.js";

export type SystemId = "ctnet" | "docker" | "podman" | "cni";

/** What a system can be measured on; the rest is said in `cannot`. */
export type Capability = "network" | "run" | "connect" | "api" | "fill" | "ports" | "dns" | "iperf";

/** `count` consecutive ports from `host` published to `container` onwards (tcp, 0.0.0.0). */
export interface PortRange {
  host: number;
  container: number;
  count: number;
}

export interface System {
  readonly id: SystemId;
  readonly label: string;
  readonly can: ReadonlySet<Capability>;
  /** Why a capability is missing, or how it differs from the others'. */
  readonly notes: Partial<Record<Capability, string>>;
  /** Name (under /run/netns) of the namespace that is this system's host. */
  hostNs(): string;
  versions(): Record<string, string>;
  /** Starts the system and imports the busybox archive as its image. */
  start(imageTar: string): Promise<void>;
  /** Removes everything the system made; returns what it had to clean up by force. */
  destroy(): Promise<string[]>;
  /** A client command that does nothing: the floor under every CLI figure. */
  floor(): Promise<number>;
  networkCreate(name: string, subnet: string): Promise<number>;
  networkRm(name: string): Promise<number>;
  run(name: string, net: string, ports?: PortRange[]): Promise<number>;
  rm(name: string): Promise<number>;
  connect(net: string, name: string): Promise<number>;
  disconnect(net: string, name: string): Promise<number>;
  /** POST /containers/create + /start through the Engine API (Docker and ctnet). */
  apiRun(name: string, net: string): Promise<number>;
  /** A path to the container's network namespace, for nsenter. */
  netnsOf(name: string): Promise<string>;
  ipOf(name: string, net: string): Promise<string>;
  /** The resolver address containers on `net` use, when the system has one. */
  dnsServer(net: string): Promise<string>;
  /** The process that answers containers' DNS queries, for its CPU use. */
  dnsServerPid(): number | undefined;
  /** Removes every container (not timed). */
  removeAllContainers(): Promise<void>;
  /** Replaces the system by a fresh one, where that is much faster than removing its containers. */
  recycle?(): Promise<void>;
}

interface ApiAnswer {
  status: number;
  text: string;
}

/** One Engine API request over a unix socket. */
export function engineApi(socket: string, method: string, path: string, body?: unknown): Promise<ApiAnswer> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      { socketPath: socket, method, path, headers: data ? { "Content-Type": "application/json" } : {} },
      (res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (c: string) => {
          text += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}

async function timedApiRun(
  api: (method: string, path: string, body?: unknown) => Promise<ApiAnswer>,
  name: string,
  net: string,
  image: string,
): Promise<number> {
  const t0 = process.hrtime.bigint();
  const c = await api("POST", `/containers/create?name=${name}`, {
    Image: image,
    Cmd: ["sleep", "1000"],
    HostConfig: { NetworkMode: net },
  });
  if (c.status !== 201) throw new Error(`create ${name}: ${c.status} ${c.text}`);
  const s = await api("POST", `/containers/${name}/start`);
  if (s.status !== 204) throw new Error(`start ${name}: ${s.status} ${s.text}`);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/** Runs `fn` over `items`, `width` at a time (cleanup that is not measured). */
async function eachLimited<T>(items: T[], width: number, fn: (x: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

function portFlags(ports: PortRange[] = []): string[] {
  return ports.flatMap((p) =>
    p.count === 1
      ? ["-p", `0.0.0.0:${p.host}:${p.container}`]
      : ["-p", `0.0.0.0:${p.host}-${p.host + p.count - 1}:${p.container}-${p.container + p.count - 1}`],
  );
}

/** What the docker and podman CLIs share. */
abstract class CliEngine {
  protected abstract readonly image: string;
  protected readonly runFlags: string[] = [];
  protected readonly rmFlags: string[] = ["-f"];
  abstract cli(args: string[], timeoutMs?: number): Promise<Ran>;

  protected async timed(args: string[]): Promise<number> {
    const r = await this.cli(args);
    if (r.status !== 0) throw new Error(`${args.join(" ")}: ${(r.stderr + r.stdout).trim().slice(-1000)}`);
    return r.ms;
  }

  protected async out(args: string[]): Promise<string> {
    const r = await this.cli(args);
    if (r.status !== 0) throw new Error(`${args.join(" ")}: ${(r.stderr + r.stdout).trim().slice(-1000)}`);
    return r.stdout.trim();
  }

  networkCreate(name: string, subnet: string): Promise<number> {
    return this.timed(["network", "create", "--subnet", subnet, name]);
  }

  networkRm(name: string): Promise<number> {
    return this.timed(["network", "rm", name]);
  }

  run(name: string, net: string, ports?: PortRange[]): Promise<number> {
    return this.timed([
      "run",
      "-d",
      "--net",
      net,
      "--name",
      name,
      ...portFlags(ports),
      ...this.runFlags,
      this.image,
      "sleep",
      "1000",
    ]);
  }

  rm(name: string): Promise<number> {
    return this.timed(["rm", ...this.rmFlags, name]);
  }

  connect(net: string, name: string): Promise<number> {
    return this.timed(["network", "connect", net, name]);
  }

  disconnect(net: string, name: string): Promise<number> {
    return this.timed(["network", "disconnect", net, name]);
  }

  async netnsOf(name: string): Promise<string> {
    const pid = await this.out(["inspect", "-f", "{{.State.Pid}}", name]);
    if (!/^[1-9]\d*$/.test(pid)) throw new Error(`${name} has no process (pid "${pid}")`);
    return `/proc/${pid}/ns/net`;
  }

  async ipOf(name: string, net: string): Promise<string> {
    const ip = await this.out([
      "inspect",
      "-f",
      `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`,
      name,
    ]);
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(ip)) throw new Error(`${name} has no address on ${net}: "${ip}"`);
    return ip;
  }
}

export class CtnetSystem extends CliEngine implements System {
  readonly id = "ctnet";
  readonly label = "ctnet";
  readonly can: ReadonlySet<Capability> = new Set<Capability>([
    "network",
    "run",
    "connect",
    "api",
    "fill",
    "ports",
    "dns",
    "iperf",
  ]);
  readonly notes = {};
  protected readonly image = "local/busybox";
  private d: TestDaemon | undefined;

  private daemon(): TestDaemon {
    if (!this.d) throw new Error("ctnet is not started");
    return this.d;
  }

  hostNs(): string {
    return this.daemon().ns.name;
  }

  versions(): Record<string, string> {
    const head = versionOf("git", ["rev-parse", "--short", "HEAD"]);
    const cli = /version ([\d.]+)/.exec(versionOf("docker", ["--version"]))?.[1] ?? "";
    return { ctnet: `0.1.0 (git ${head})`, "docker CLI": cli };
  }

  async start(imageTar: string): Promise<void> {
    this.d = await TestDaemon.start("peer-ctnet");
    await this.timed(["import", imageTar, "local/busybox"]);
  }

  cli(args: string[], timeoutMs?: number): Promise<Ran> {
    return run("docker", args, { env: { ...process.env, DOCKER_HOST: this.daemon().host }, timeoutMs });
  }

  floor(): Promise<number> {
    return this.timed(["version"]);
  }

  apiRun(name: string, net: string): Promise<number> {
    const d = this.daemon();
    return timedApiRun((m, p, b) => d.api(m, p, b), name, net, this.image);
  }

  async dnsServer(): Promise<string> {
    return "127.0.0.11";
  }

  dnsServerPid(): number | undefined {
    const file = join(this.daemon().execRoot, "ctnet.pid");
    return existsSync(file) ? Number(readFileSync(file, "utf8").trim()) : undefined;
  }

  async removeAllContainers(): Promise<void> {
    const d = this.daemon();
    const list = await d.api("GET", "/containers/json?all=1");
    for (const c of JSON.parse(list.text) as { Id: string }[])
      await d.api("DELETE", `/containers/${c.Id}?force=1`);
  }

  async destroy(): Promise<string[]> {
    if (!this.d) return [];
    try {
      await this.d.destroy();
      return [];
    } catch (err) {
      return [(err as Error).message.split("\n--- daemon log ---")[0] ?? ""];
    }
  }
}

export class DockerSystem extends CliEngine implements System {
  readonly id = "docker";
  readonly label = "Docker";
  readonly can: ReadonlySet<Capability> = new Set<Capability>([
    "network",
    "run",
    "connect",
    "api",
    "fill",
    "ports",
    "dns",
    "iperf",
  ]);
  readonly notes = {
    ports:
      "userland proxy on (Docker's default): one docker-proxy process per published port. Docker unpublishes one iptables call at a time (see the rm -f row), so after the ports workload it is replaced by a fresh instance (its namespace deleted) rather than emptied",
  };
  protected readonly image = "local/busybox";
  static readonly CGROUP = "ctnet-peers-docker";
  private ns: TestNetns | undefined;
  private proc: ChildProcess | undefined;
  private stub: ChildProcess | undefined;
  private readonly socket: string;
  private imageTar = "";

  constructor(private readonly dir: string) {
    super();
    this.socket = join(dir, "docker.sock");
  }

  hostNs(): string {
    if (!this.ns) throw new Error("docker is not started");
    return this.ns.name;
  }

  versions(): Record<string, string> {
    return {
      "docker.io": debVersion("docker.io"),
      containerd: debVersion("containerd"),
      runc: debVersion("runc"),
      iptables: debVersion("iptables"),
    };
  }

  cli(args: string[], timeoutMs?: number): Promise<Ran> {
    return run("docker", args, { env: { ...process.env, DOCKER_HOST: `unix://${this.socket}` }, timeoutMs });
  }

  async start(imageTar: string): Promise<void> {
    this.imageTar = imageTar;
    this.ns = hostNamespace("peer-docker");
    // --dns: containers' upstream is a stub in Docker's own namespace, never the machine's resolver.
    this.stub = await startDnsStub(this.ns.path, {});
    this.proc = await startDockerd(this.dir, this.ns.path, DockerSystem.CGROUP);
    await this.timed(["import", imageTar, "local/busybox"]);
  }

  floor(): Promise<number> {
    return this.timed(["version"]);
  }

  apiRun(name: string, net: string): Promise<number> {
    return timedApiRun((m, p, b) => engineApi(this.socket, m, p, b), name, net, this.image);
  }

  async dnsServer(): Promise<string> {
    return "127.0.0.11";
  }

  dnsServerPid(): number | undefined {
    return this.proc?.pid;
  }

  async removeAllContainers(): Promise<void> {
    const list = await engineApi(this.socket, "GET", "/containers/json?all=1");
    const ids = (JSON.parse(list.text) as { Id: string }[]).map((c) => c.Id);
    await eachLimited(ids, 4, (id) => engineApi(this.socket, "DELETE", `/containers/${id}?force=1`));
  }

  async destroy(): Promise<string[]> {
    const problems: string[] = [];
    const proc = this.proc;
    if (proc && proc.exitCode === null) {
      try {
        await this.removeAllContainers();
        await this.cli(["network", "prune", "-f"]);
      } catch (err) {
        problems.push(`docker cleanup through the API: ${(err as Error).message}`);
      }
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
      await exited;
      clearTimeout(timer);
    }
    await stopChild(this.stub);
    problems.push(...forceClean(this.dir, this.ns, DockerSystem.CGROUP));
    removeCgroups(DockerSystem.CGROUP);
    return problems;
  }

  /**
   * Replaces this Docker by a fresh one without going through its API. Docker releases published
   * ports one iptables call at a time (minutes for 1,000 ports on this machine), while deleting
   * its namespace drops them all at once: its processes (dockerd, containerd, shims, docker-proxy,
   * the containers' by their cgroup), mounts, directory and namespace are removed directly.
   */
  async recycle(): Promise<void> {
    const proc = this.proc;
    if (proc && proc.exitCode === null) {
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGKILL");
      await exited;
    }
    await stopChild(this.stub);
    forceClean(this.dir, this.ns, DockerSystem.CGROUP);
    removeCgroups(DockerSystem.CGROUP);
    await this.start(this.imageTar);
  }
}

/**
 * Starts dockerd in the network namespace at `nsPath` (through nsenter: `ip netns exec` would hide
 * the cgroup mounts) with its data, exec root, socket (`<dir>/docker.sock`) and log under `dir`,
 * containers under the cgroup `/<cgroup>`, and `--dns 127.0.0.1` so that no container's queries
 * leave the namespace; resolves once it answers `/_ping`.
 */
export async function startDockerd(dir: string, nsPath: string, cgroup: string): Promise<ChildProcess> {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "daemon.json"), "{}\n");
  const logFile = join(dir, "dockerd.log");
  const socket = join(dir, "docker.sock");
  const log = openSync(logFile, "a");
  const proc = spawn(
    "nsenter",
    [
      `--net=${nsPath}`,
      "--",
      "dockerd",
      "--config-file",
      join(dir, "daemon.json"),
      "--data-root",
      join(dir, "data"),
      "--exec-root",
      join(dir, "exec"),
      "-H",
      `unix://${socket}`,
      "--pidfile",
      join(dir, "docker.pid"),
      "--dns",
      "127.0.0.1",
      "--exec-opt",
      "native.cgroupdriver=cgroupfs",
      "--cgroup-parent",
      `/${cgroup}`,
      "--log-level",
      "warn",
    ],
    { stdio: ["ignore", log, log] },
  );
  closeSync(log);
  const tail = () => (existsSync(logFile) ? readFileSync(logFile, "utf8").slice(-2000) : "");
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`dockerd exited: ${tail()}`);
    const ping = await engineApi(socket, "GET", "/_ping").catch(() => undefined);
    if (ping?.status === 200) return proc;
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`dockerd did not answer within 60 s: ${tail()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Stops a helper process we started and waits for it to be gone. */
export async function stopChild(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

/**
 * Kills what is left of a system (processes in its namespace, naming its directory or in its
 * cgroup), unmounts and removes its directory and deletes its namespace. Returns what had to be
 * cleaned this way.
 */
export function forceClean(dir: string, ns: TestNetns | undefined, cgroup?: string): string[] {
  const problems: string[] = [];
  const stray = [
    ...new Set([
      ...processesMentioning(dir),
      ...(ns ? processesInNetns(ns.path) : []),
      ...(cgroup ? cgroupProcs(cgroup) : []),
    ]),
  ];
  if (stray.length > 0) {
    problems.push(
      `processes left: ${stray.map((p) => `${p} ${readComm(p)}`).join(", ")}`.replace(/\s+$/, ""),
    );
    killAll(stray);
  }
  const mounts = unmountAll(dir);
  if (mounts.length > 0) problems.push(`mounts left: ${mounts.join(", ")}`);
  rmSync(dir, { recursive: true, force: true });
  ns?.destroy();
  return problems;
}

function readComm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "";
  }
}

export class PodmanSystem extends CliEngine implements System {
  readonly id = "podman";
  readonly label = "Podman";
  readonly can: ReadonlySet<Capability> = new Set<Capability>([
    "network",
    "run",
    "connect",
    "fill",
    "ports",
    "dns",
    "iperf",
  ]);
  readonly notes = {
    api: "Podman is measured through its CLI only (its REST service is not what its users run)",
    ports: "netavark writes one iptables rule per port range, so a 100-port -p range costs one rule",
  };
  protected readonly image = "localhost/local/busybox";
  protected override readonly runFlags = ["--pull=never"];
  // Without -t 0 `rm -f` waits 10 s for sleep (PID 1, no SIGTERM handler) to stop.
  protected override readonly rmFlags = ["-f", "-t", "0"];
  static readonly CGROUP = "libpod_parent";
  private ns: TestNetns | undefined;
  /** Podman's cgroup parent is fixed; it is removed afterwards only when this run made it. */
  private ownsCgroup = false;
  private readonly conf: string;

  constructor(private readonly dir: string) {
    super();
    this.conf = join(dir, "containers.conf");
  }

  hostNs(): string {
    if (!this.ns) throw new Error("podman is not started");
    return this.ns.name;
  }

  versions(): Record<string, string> {
    return {
      podman: debVersion("podman"),
      netavark: debVersion("netavark"),
      "aardvark-dns": debVersion("aardvark-dns"),
      conmon: debVersion("conmon"),
      runc: debVersion("runc"),
    };
  }

  /** Every podman command runs in Podman's host namespace: netavark works where it is called. */
  cli(args: string[], timeoutMs?: number): Promise<Ran> {
    if (!this.ns) throw new Error("podman is not started");
    return run(
      "nsenter",
      [
        `--net=${this.ns.path}`,
        "--",
        "podman",
        "--root",
        join(this.dir, "storage"),
        "--runroot",
        join(this.dir, "run"),
        "--storage-driver",
        "overlay",
        ...args,
      ],
      { env: { ...process.env, CONTAINERS_CONF: this.conf }, timeoutMs },
    );
  }

  async start(imageTar: string): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    // The machine's hard limit on open files is below Podman's default; crun does not run on this
    // hybrid cgroup layout, runc does.
    writeFileSync(
      this.conf,
      [
        "[containers]",
        'default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]',
        "[network]",
        'network_backend = "netavark"',
        `network_config_dir = "${join(this.dir, "networks")}"`,
        "[engine]",
        'runtime = "runc"',
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        `events_logfile_path = "${join(this.dir, "events.log")}"`,
        `tmp_dir = "${join(this.dir, "tmp")}"`,
        "",
      ].join("\n"),
    );
    this.ownsCgroup = !cgroupExists(PodmanSystem.CGROUP);
    this.ns = hostNamespace("peer-podman");
    await this.timed(["import", imageTar, "local/busybox"]);
  }

  floor(): Promise<number> {
    return this.timed(["version"]);
  }

  apiRun(): Promise<number> {
    throw new Error("not measured for Podman");
  }

  async dnsServer(net: string): Promise<string> {
    return this.out(["network", "inspect", "-f", "{{range .Subnets}}{{.Gateway}}{{end}}", net]);
  }

  dnsServerPid(): number | undefined {
    if (!this.ns) return undefined;
    return processesInNetns(this.ns.path).find((p) => readComm(p) === "aardvark-dns");
  }

  async removeAllContainers(): Promise<void> {
    await this.cli(["rm", "-a", "-f", "-t", "0"], 600_000);
  }

  async destroy(): Promise<string[]> {
    const problems: string[] = [];
    if (this.ns) {
      try {
        await this.removeAllContainers();
        const nets = (await this.out(["network", "ls", "--format", "{{.Name}}"])).split("\n");
        for (const n of nets.filter((x) => x !== "" && x !== "podman"))
          await this.cli(["network", "rm", "-f", n]);
        await this.cli(["rmi", "-a", "-f"]);
      } catch (err) {
        problems.push(`podman cleanup: ${(err as Error).message}`);
      }
    }
    problems.push(...forceClean(this.dir, this.ns));
    if (this.ownsCgroup) removeCgroups(PodmanSystem.CGROUP);
    return problems;
  }
}

interface CniAttachment {
  net: string;
  ifname: string;
  ip: string;
  ports: PortRange[];
  result: unknown;
}

/**
 * The CNI bridge plugin (with portmap for published ports) called by hand as a runtime would:
 * a "container" is a network namespace made with `ip netns add`, and its network is one ADD per
 * plugin. CNI has no daemon, no names and no DNS; a network is a configuration file, so creating
 * one costs nothing until the first ADD makes its bridge.
 */
export class CniSystem implements System {
  readonly id = "cni";
  readonly label = "CNI bridge";
  readonly can: ReadonlySet<Capability> = new Set<Capability>(["run", "connect", "fill", "ports", "iperf"]);
  readonly notes = {
    network: "a CNI network is a configuration file: nothing to create until the first ADD",
    run: "network part only: ip netns add + bridge ADD (+ portmap ADD); no process, no image",
    api: "no API: the plugins are executables",
    dns: "no embedded DNS (CNI returns DNS settings for the runtime to write)",
  };
  private ns: TestNetns | undefined;
  private readonly nets = new Map<string, { subnet: string; bridge: string }>();
  private readonly containers = new Map<string, { ns: TestNetns; attachments: CniAttachment[] }>();
  private pluginDir = "/usr/lib/cni";
  /** Bridges are numbered by network created, so a removed network's bridge name is never reused. */
  private bridges = 0;

  constructor(private readonly dir: string) {}

  hostNs(): string {
    if (!this.ns) throw new Error("cni is not started");
    return this.ns.name;
  }

  versions(): Record<string, string> {
    return { "containernetworking-plugins": debVersion("containernetworking-plugins") };
  }

  async start(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    const bridge = (await must("dpkg", ["-L", "containernetworking-plugins"])).stdout
      .split("\n")
      .find((l) => l.endsWith("/bridge"));
    if (!bridge) throw new Error("containernetworking-plugins has no bridge plugin");
    this.pluginDir = bridge.slice(0, -"/bridge".length);
    this.ns = hostNamespace("peer-cni");
  }

  private async plugin(
    type: string,
    command: "ADD" | "DEL",
    container: string,
    netnsPath: string,
    ifname: string,
    conf: object,
  ): Promise<Ran> {
    if (!this.ns) throw new Error("cni is not started");
    const r = await run("nsenter", [`--net=${this.ns.path}`, "--", join(this.pluginDir, type)], {
      env: {
        PATH: process.env.PATH,
        CNI_COMMAND: command,
        CNI_CONTAINERID: container,
        CNI_NETNS: netnsPath,
        CNI_IFNAME: ifname,
        CNI_PATH: this.pluginDir,
      },
      input: JSON.stringify({ cniVersion: "1.0.0", ...conf }),
    });
    if (r.status !== 0) throw new Error(`${type} ${command} ${container}: ${r.stdout}${r.stderr}`);
    return r;
  }

  private bridgeConf(net: string): object {
    const n = this.nets.get(net);
    if (!n) throw new Error(`no CNI network ${net}`);
    return {
      name: net,
      type: "bridge",
      bridge: n.bridge,
      // The gateway as the container's default route too, as a runtime's configuration has it:
      // replies to clients off the bridge (a published port's) need it.
      isGateway: true,
      isDefaultGateway: true,
      ipMasq: false,
      ipam: { type: "host-local", subnet: n.subnet, dataDir: join(this.dir, "ipam") },
    };
  }

  private portmapConf(net: string, ports: PortRange[], prevResult: unknown): object {
    const portMappings = ports.flatMap((p) =>
      Array.from({ length: p.count }, (_, i) => ({
        hostPort: p.host + i,
        containerPort: p.container + i,
        protocol: "tcp",
      })),
    );
    return {
      name: net,
      type: "portmap",
      capabilities: { portMappings: true },
      runtimeConfig: { portMappings },
      prevResult,
    };
  }

  private async add(name: string, net: string, ifname: string, ports: PortRange[]): Promise<void> {
    const c = this.containers.get(name);
    if (!c) throw new Error(`no CNI container ${name}`);
    const r = await this.plugin("bridge", "ADD", name, c.ns.path, ifname, this.bridgeConf(net));
    const result = JSON.parse(r.stdout) as { ips?: { address: string }[] };
    if (ports.length > 0)
      await this.plugin("portmap", "ADD", name, c.ns.path, ifname, this.portmapConf(net, ports, result));
    const ip = result.ips?.[0]?.address.split("/")[0] ?? "";
    c.attachments.push({ net, ifname, ip, ports, result });
  }

  private async del(name: string, a: CniAttachment): Promise<void> {
    const c = this.containers.get(name);
    if (!c) throw new Error(`no CNI container ${name}`);
    if (a.ports.length > 0)
      await this.plugin(
        "portmap",
        "DEL",
        name,
        c.ns.path,
        a.ifname,
        this.portmapConf(a.net, a.ports, a.result),
      );
    await this.plugin("bridge", "DEL", name, c.ns.path, a.ifname, this.bridgeConf(a.net));
    c.attachments.splice(c.attachments.indexOf(a), 1);
  }

  async floor(): Promise<number> {
    if (!this.ns) throw new Error("cni is not started");
    const r = await run("nsenter", [`--net=${this.ns.path}`, "--", join(this.pluginDir, "bridge")], {
      env: { PATH: process.env.PATH, CNI_COMMAND: "VERSION" },
      input: "{}",
    });
    return r.ms;
  }

  async networkCreate(name: string, subnet: string): Promise<number> {
    this.nets.set(name, { subnet, bridge: `pcni${this.bridges++}` });
    return 0;
  }

  async networkRm(name: string): Promise<number> {
    this.nets.delete(name);
    return 0;
  }

  async run(name: string, net: string, ports: PortRange[] = []): Promise<number> {
    const t0 = process.hrtime.bigint();
    this.containers.set(name, { ns: makeTestNetns("peer-cnic"), attachments: [] });
    await this.add(name, net, "eth0", ports);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  }

  async rm(name: string): Promise<number> {
    const c = this.containers.get(name);
    if (!c) throw new Error(`no CNI container ${name}`);
    const t0 = process.hrtime.bigint();
    for (const a of [...c.attachments].reverse()) await this.del(name, a);
    c.ns.destroy();
    this.containers.delete(name);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  }

  async connect(net: string, name: string): Promise<number> {
    const c = this.containers.get(name);
    if (!c) throw new Error(`no CNI container ${name}`);
    const t0 = process.hrtime.bigint();
    await this.add(name, net, `eth${c.attachments.length}`, []);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  }

  async disconnect(net: string, name: string): Promise<number> {
    const a = this.containers.get(name)?.attachments.find((x) => x.net === net);
    if (!a) throw new Error(`${name} is not on ${net}`);
    const t0 = process.hrtime.bigint();
    await this.del(name, a);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  }

  apiRun(): Promise<number> {
    throw new Error("CNI has no API");
  }

  async netnsOf(name: string): Promise<string> {
    const c = this.containers.get(name);
    if (!c) throw new Error(`no CNI container ${name}`);
    return c.ns.path;
  }

  async ipOf(name: string, net: string): Promise<string> {
    const ip = this.containers.get(name)?.attachments.find((a) => a.net === net)?.ip;
    if (!ip) throw new Error(`${name} is not on ${net}`);
    return ip;
  }

  dnsServer(): Promise<string> {
    throw new Error("CNI has no DNS");
  }

  dnsServerPid(): number | undefined {
    return undefined;
  }

  async removeAllContainers(): Promise<void> {
    for (const name of [...this.containers.keys()]) await this.rm(name);
  }

  async destroy(): Promise<string[]> {
    const problems: string[] = [];
    try {
      await this.removeAllContainers();
    } catch (err) {
      problems.push(`CNI DEL: ${(err as Error).message}`);
      for (const c of this.containers.values()) c.ns.destroy();
    }
    problems.push(...forceClean(this.dir, this.ns));
    return problems;
  }
}
