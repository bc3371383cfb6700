/**
 * The multi-host workload of the peer benchmarks: ctnet's overlay against Docker's swarm overlay,
 * on one lab (`ctnet lab up`, scripts/bench-cluster.ts's Lab) so that both run over the same
 * underlay bridge. Hosts host1…hostN run ctnet daemons in a cluster; machines d1…dN on the same
 * underlay run dockerd (nsenter, own data and exec roots, scripts/peers/systems.ts startDockerd),
 * joined in a swarm with d1 its manager, and share an attachable overlay network. Podman and the CNI
 * plugins have no network that spans hosts here, which the report says.
 *
 * Convergence, as in bench-cluster.ts: a pinger container on every host; each round starts a
 * container with a fresh address on the next host in turn (Engine API create + start on that host's
 * socket, timed in-process) while the pinger on another host pings it with fping at a 1 ms period,
 * holding a permanent neighbour entry for it (both systems derive the MAC from the address), so the
 * figure is the time until the pinger's host can forward to it. ctnet and Docker alternate round by
 * round, each on its own hosts.
 *
 * Throughput: iperf3 from a container on the second host to one on the first over the overlay
 * (VXLAN, MTU 1450 in both), and host to host over the underlay for reference, interleaved.
 */
import type { ChildProcess } from "node:child_process";
import { join } from "node:path";
import { macFromIPv4 } from "../../src/ipam/index.js";
import { Lab, probe, WallClock } from "../bench-cluster.js";
import { sleep } from "../bench-util.js";
import { cgroupProcs, killAll, must, processesInNetns, removeCgroups, run } from "./host.js";
import { iperf } from "./iperf.js";
import { engineApi, forceClean, type SystemId, startDockerd } from "./systems.js";

export interface MultiHostNote {
  hosts: number;
  /** Rounds whose container never answered within the round's time limit, by system. */
  unanswered: Partial<Record<SystemId, number>>;
  /** The containers' MTU on each system's overlay. */
  mtu: Partial<Record<SystemId, number>>;
}

export interface MultiHostOptions {
  hosts: number;
  rounds: number;
  roundTimeoutMs: number;
  iperfSeconds: number;
  iperfRounds: number;
}

/** What the workload needs to record its figures in the peers' table. */
export interface Recorder {
  record(name: string, id: SystemId, value: number, unit: "ms" | "Gbit/s"): void;
  fail(id: SystemId, error: unknown): void;
}

interface Node {
  name: string;
  socket: string;
  nsPath: string;
  addr: string;
}

interface Cluster {
  readonly id: SystemId;
  readonly nodes: Node[];
  /** The overlay's /16 (its first two octets); each round takes a fresh address past its first /24, the pingers'. */
  readonly subnet: [number, number];
}

const NET = "pov";
const IMAGE = "local/busybox";
const SWARM_CGROUP = "ctnet-peers-swarm";

async function api(node: Node, method: string, path: string, body?: unknown, expect?: number) {
  const r = await engineApi(node.socket, method, path, body);
  if (expect !== undefined && r.status !== expect)
    throw new Error(`${node.name}: ${method} ${path}: ${r.status} ${r.text.trim()}`);
  return r;
}

async function cli(node: Node, args: string[]): Promise<string> {
  return (
    await must("docker", ["-H", `unix://${node.socket}`, ...args], { timeoutMs: 120_000 })
  ).stdout.trim();
}

/** Create + start through the Engine API; the container's pid and the time both calls took. */
async function runOn(
  node: Node,
  name: string,
  cmd: string[],
  ip?: string,
): Promise<{ ms: number; pid: number }> {
  const t0 = process.hrtime.bigint();
  await api(
    node,
    "POST",
    `/containers/create?name=${name}`,
    {
      Image: IMAGE,
      Cmd: cmd,
      HostConfig: { NetworkMode: NET },
      ...(ip
        ? { NetworkingConfig: { EndpointsConfig: { [NET]: { IPAMConfig: { IPv4Address: ip } } } } }
        : {}),
    },
    201,
  );
  await api(node, "POST", `/containers/${name}/start`, undefined, 204);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const c = JSON.parse((await api(node, "GET", `/containers/${name}/json`, undefined, 200)).text) as {
    State: { Pid: number };
  };
  return { ms, pid: c.State.Pid };
}

async function ipOf(node: Node, name: string): Promise<string> {
  const c = JSON.parse((await api(node, "GET", `/containers/${name}/json`, undefined, 200)).text) as {
    NetworkSettings: { Networks: Record<string, { IPAddress: string }> };
  };
  return c.NetworkSettings.Networks[NET]?.IPAddress ?? "";
}

/** A Docker swarm of `n` nodes on lab machines d1…dn. */
class Swarm implements Cluster {
  readonly id = "docker";
  readonly subnet: [number, number] = [10, 78];
  readonly nodes: Node[] = [];
  private readonly procs: ChildProcess[] = [];

  constructor(private readonly dir: string) {}

  async start(lab: Lab, n: number, imageTar: string): Promise<void> {
    for (let i = 1; i <= n; i++) {
      const name = `d${i}`;
      const m = await lab.machine(name);
      const dir = join(this.dir, name);
      this.nodes.push({ name, socket: join(dir, "docker.sock"), nsPath: m.nsPath, addr: m.addr });
      this.procs.push(await startDockerd(dir, m.nsPath, SWARM_CGROUP));
    }
    const [manager, ...workers] = this.nodes as [Node, ...Node[]];
    await cli(manager, ["swarm", "init", "--advertise-addr", manager.addr]);
    const token = await cli(manager, ["swarm", "join-token", "-q", "worker"]);
    for (const w of workers)
      await cli(w, ["swarm", "join", "--token", token, "--advertise-addr", w.addr, `${manager.addr}:2377`]);
    for (const node of this.nodes) await cli(node, ["import", imageTar, IMAGE]);
    await cli(manager, [
      "network",
      "create",
      "-d",
      "overlay",
      "--attachable",
      "--subnet",
      "10.78.0.0/16",
      NET,
    ]);
  }

  /** Leaves the swarm and stops every dockerd; returns what had to be cleaned by force. */
  async destroy(): Promise<string[]> {
    const problems: string[] = [];
    await Promise.all(
      this.nodes.map(async (node, i) => {
        const proc = this.procs[i];
        if (!proc || proc.exitCode !== null) return;
        const list = await api(node, "GET", "/containers/json?all=1").catch(() => undefined);
        for (const c of list ? (JSON.parse(list.text) as { Id: string }[]) : [])
          await api(node, "DELETE", `/containers/${c.Id}?force=1`).catch(() => undefined);
        await run("docker", ["-H", `unix://${node.socket}`, "swarm", "leave", "--force"]);
        const exited = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGTERM");
        const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
        await exited;
        clearTimeout(timer);
      }),
    );
    for (const node of this.nodes) {
      const left = processesInNetns(node.nsPath);
      if (left.length > 0) problems.push(`${node.name}: processes left: ${left.join(", ")}`);
      killAll(left);
    }
    killAll(cgroupProcs(SWARM_CGROUP));
    problems.push(...forceClean(this.dir, undefined, SWARM_CGROUP));
    removeCgroups(SWARM_CGROUP);
    return problems;
  }
}

/** ctnet's daemons on the lab's hosts, with the busybox image and the overlay. */
async function ctnetCluster(lab: Lab, imageTar: string): Promise<Cluster> {
  const nodes = lab.hosts.map((h) => ({
    name: h.name,
    socket: h.socket.replace(/^unix:\/\//, ""),
    nsPath: `/run/netns/${h.netns}`,
    addr: h.addr,
  }));
  for (const node of nodes) await cli(node, ["import", imageTar, IMAGE]);
  await lab.createOverlay(NET, "10.77.0.0/16");
  return { id: "ctnet", nodes, subnet: [10, 77] };
}

/** The address of round r on a cluster: fresh each round, apart from the pingers' (x.y.0.z). */
function roundAddress(c: Cluster, r: number): string {
  return `${c.subnet[0]}.${c.subnet[1]}.${1 + Math.floor(r / 250)}.${2 + (r % 250)}`;
}

async function convergence(
  clusters: Cluster[],
  o: MultiHostOptions,
  rec: Recorder,
  note: MultiHostNote,
): Promise<void> {
  const clock = new WallClock();
  const pingers = new Map<SystemId, number[]>();
  for (const c of clusters) {
    const pids: number[] = [];
    for (const node of c.nodes) pids.push((await runOn(node, `pinger-${node.name}`, ["sleep", "1d"])).pid);
    pingers.set(c.id, pids);
    note.unanswered[c.id] = 0;
  }
  const failed = new Set<SystemId>();
  for (let r = 0; r < o.rounds; r++) {
    for (const c of r % 2 === 0 ? clusters : [...clusters].reverse()) {
      if (failed.has(c.id)) continue;
      const n = c.nodes.length;
      const t = r % n;
      const p = (t + 1 + (Math.floor(r / n) % (n - 1))) % n;
      const target = c.nodes[t] as Node;
      const pinger = pingers.get(c.id)?.[p] as number;
      const ip = roundAddress(c, r);
      const name = `c${r}`;
      const inPinger = ["-t", String(pinger), "-n", "ip", "neigh"];
      const mac = macFromIPv4(ip);
      try {
        await must("nsenter", [...inPinger, "replace", ip, "lladdr", mac, "dev", "eth0", "nud", "permanent"]);
        const prober = probe(pinger, ip);
        try {
          await prober.sending;
          clock.calibrate();
          const t0 = clock.now();
          const { ms } = await runOn(target, name, ["sleep", "1d"], ip);
          const reply = await Promise.race([prober.replyAt, sleep(o.roundTimeoutMs).then(() => undefined)]);
          rec.record("overlay: run -d on a host (Engine API create + start)", c.id, ms, "ms");
          if (reply === undefined) note.unanswered[c.id] = (note.unanswered[c.id] ?? 0) + 1;
          else {
            rec.record("overlay: run called → first echo reply on another host", c.id, reply - t0, "ms");
            rec.record(
              "overlay: run returned → first echo reply on another host",
              c.id,
              reply - t0 - ms,
              "ms",
            );
          }
        } finally {
          prober.stop();
          await must("nsenter", [...inPinger, "del", ip, "dev", "eth0"]);
        }
        await api(target, "DELETE", `/containers/${name}?force=1`, undefined, 204);
        // The other hosts drop the container's entries meanwhile, outside the next round.
        await sleep(50);
      } catch (err) {
        failed.add(c.id);
        rec.fail(c.id, err);
      }
    }
  }
}

async function throughput(clusters: Cluster[], o: MultiHostOptions, rec: Recorder, note: MultiHostNote) {
  const paths = new Map<SystemId, { server: string; client: string; ip: string; a: Node; b: Node }>();
  for (const c of clusters) {
    const [a, b] = c.nodes as [Node, Node];
    const server = await runOn(a, "ipsrv", ["sleep", "1d"]);
    const client = await runOn(b, "ipcli", ["sleep", "1d"]);
    const clientNs = `/proc/${client.pid}/ns/net`;
    const link = JSON.parse(
      (await must("nsenter", [`--net=${clientNs}`, "ip", "-j", "link", "show", "eth0"])).stdout,
    ) as {
      mtu: number;
    }[];
    note.mtu[c.id] = link[0]?.mtu ?? 0;
    paths.set(c.id, {
      server: `/proc/${server.pid}/ns/net`,
      client: clientNs,
      ip: await ipOf(a, "ipsrv"),
      a,
      b,
    });
  }
  const failed = new Set<SystemId>();
  for (let r = 0; r < o.iperfRounds; r++) {
    for (const c of r % 2 === 0 ? clusters : [...clusters].reverse()) {
      const x = paths.get(c.id);
      if (!x || failed.has(c.id)) continue;
      try {
        rec.record(
          "overlay: iperf3 container → container across hosts (VXLAN)",
          c.id,
          await iperf(x.server, x.client, x.ip, 5201, o.iperfSeconds),
          "Gbit/s",
        );
        rec.record(
          "underlay: iperf3 host → host, same hosts (reference)",
          c.id,
          await iperf(x.a.nsPath, x.b.nsPath, x.a.addr, 5201, o.iperfSeconds),
          "Gbit/s",
        );
      } catch (err) {
        failed.add(c.id);
        rec.fail(c.id, err);
      }
    }
  }
}

/**
 * Brings up the lab, ctnet's cluster and (with `docker`) the swarm, runs both parts and takes all
 * of it down; returns the note for the report and what each system left to be cleaned by force.
 */
export async function multiHost(
  dir: string,
  imageTar: string,
  docker: boolean,
  o: MultiHostOptions,
  rec: Recorder,
): Promise<{ note: MultiHostNote; forced: { system: SystemId; problems: string[] }[] }> {
  const note: MultiHostNote = { hosts: o.hosts, unanswered: {}, mtu: {} };
  const forced: { system: SystemId; problems: string[] }[] = [];
  const lab = await Lab.up(o.hosts);
  const swarm = docker ? new Swarm(join(dir, "swarm")) : undefined;
  try {
    const clusters: Cluster[] = [await ctnetCluster(lab, imageTar)];
    if (swarm) {
      try {
        await swarm.start(lab, o.hosts, imageTar);
        clusters.push(swarm);
      } catch (err) {
        rec.fail("docker", err);
      }
    }
    await convergence(clusters, o, rec, note);
    await throughput(clusters, o, rec, note);
  } finally {
    const left = { docker: swarm ? await swarm.destroy() : [], ctnet: await lab.down() };
    for (const [system, problems] of Object.entries(left) as [SystemId, string[]][])
      if (problems.length > 0) forced.push({ system, problems });
  }
  return { note, forced };
}
