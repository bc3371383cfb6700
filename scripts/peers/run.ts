/**
 * `npm run bench -- --peers`: ctnet side by side with Docker (Debian's docker.io), Podman
 * (netavark/aardvark-dns) and the CNI bridge plugin, on the same machine in the same run.
 *
 * Installs the peers' Debian packages when missing, starts each system in its own host network
 * namespace (dockerd through `nsenter --net`, with its own data and exec roots and a stub DNS
 * upstream), imports one busybox image (scripts/busybox-image.sh) into each, runs the workloads
 * (scripts/peers/workloads.ts) interleaved, removes every system and checks that the machine's own
 * network is as it was. Writes bench-results/peers.json and the peers section of
 * docs/benchmarks.md with its plots.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { machine, round, writeResult } from "../bench-util.js";
import {
  debVersion,
  ensurePackages,
  existingPaths,
  must,
  networkPicture,
  PEER_PACKAGES,
  pictureDiff,
  removeAllNeighbours,
  STRAY_PATHS,
} from "./host.js";
import { mainTable, type PeersResult, writeDocs } from "./report.js";
import { CniSystem, CtnetSystem, DockerSystem, PodmanSystem, type System, type SystemId } from "./systems.js";
import { type Context, type PeerOptions, runWorkloads, WORKLOADS } from "./workloads.js";

export const PEER_IDS: SystemId[] = ["docker", "podman", "cni"];
export const WORKLOAD_IDS = WORKLOADS.map((w) => w.id);

/** Facts about this kernel that no workload shows, for the report. */
const KERNEL_LIMITS = [
  {
    system: "Docker",
    what: "service VIPs and the routing mesh",
    why: "a swarm forms across host namespaces and its attachable overlay works (the multi-host rows), but VIPs and the ingress mesh need IPVS, which this kernel lacks; not measured",
  },
  {
    system: "Podman, CNI bridge plugin",
    what: "multi-host networks",
    why: "netavark has no overlay driver, and Debian's containernetworking-plugins have no plugin that spans hosts (no VXLAN or flannel plugin); the multi-host rows compare ctnet with Docker only",
  },
  {
    system: "Docker, ctnet",
    what: "ipvlan and 802.1Q parents",
    why: "the kernel has neither: Docker gets 'operation not supported', ctnet refuses with a clear error; macvlan on a veth works; not measured",
  },
];

function cutNotes(o: PeerOptions, peers: string): { system: string; what: string; why: string }[] {
  const out: { system: string; what: string; why: string }[] = [];
  if (o.peerFill < o.ctnetFill)
    out.push({
      system: peers,
      what: "fill",
      why: `filled to ${o.peerFill} containers (ctnet to ${o.ctnetFill}): at ~0.2-0.5 s per start plus removal, 1,000 would take Docker alone ~15 min of the 30-minute budget (\`--peer-fill\` raises it)`,
    });
  if (o.peerPorts < o.ctnetPorts)
    out.push({
      system: peers,
      what: "published ports",
      why: `cut at ${o.peerPorts.toLocaleString("en")} ports (ctnet to ${o.ctnetPorts.toLocaleString("en")}): Docker's default userland proxy runs one docker-proxy process per published port and adds iptables rules per port, and the portmap plugin re-reads the iptables ruleset on every ADD, so 10,000 ports cost minutes and thousands of processes (\`--peer-ports-total\` raises it)`,
    });
  return out;
}

/** What each system cannot do here or does differently, where workloads were cut, and the kernel's limits. */
export function limits(all: System[], o: PeerOptions): PeersResult["cannot"] {
  return [
    ...all.flatMap((s) => Object.entries(s.notes).map(([what, why]) => ({ system: s.label, what, why }))),
    ...cutNotes(
      o,
      all
        .filter((s) => s.id !== "ctnet")
        .map((s) => s.label)
        .join(", "),
    ),
    ...KERNEL_LIMITS,
  ];
}

export interface PeersSelection {
  peers: SystemId[];
  workloads: Set<string>;
}

export async function benchPeers(sel: PeersSelection, o: PeerOptions): Promise<PeersResult> {
  const t0 = Date.now();
  const installed = await ensurePackages(PEER_PACKAGES);
  const before = networkPicture();
  const strays = existingPaths(STRAY_PATHS);
  const dir = mkdtempSync("/tmp/ctnet-peers-");
  const imageTar = join(dir, "busybox.tar");
  await must("sh", ["scripts/busybox-image.sh", imageTar]);

  const all: System[] = [
    new CtnetSystem(),
    ...sel.peers.map((id) =>
      id === "docker"
        ? new DockerSystem(join(dir, "docker"))
        : id === "podman"
          ? new PodmanSystem(join(dir, "podman"))
          : new CniSystem(join(dir, "cni")),
    ),
  ];
  const ctx: Context = {
    systems: [],
    o,
    dir,
    imageTar,
    rows: [],
    failures: [],
    fill: {},
    ports: [],
    dns: [],
    settled: {},
    forced: [],
  };
  const forced = ctx.forced;
  const removedStrayPaths: string[] = [];
  let tornDown = false;
  const teardown = async () => {
    if (tornDown) return;
    tornDown = true;
    for (const s of [...all].reverse()) {
      const problems = await s.destroy().catch((err: Error) => [err.message]);
      if (problems.length > 0) forced.push({ system: s.id, problems });
    }
    removeAllNeighbours();
    rmSync(dir, { recursive: true, force: true });
    for (const p of STRAY_PATHS.filter((x) => !strays.has(x) && existsSync(x))) {
      rmSync(p, { recursive: true, force: true });
      removedStrayPaths.push(p);
    }
  };
  // An interrupted run still removes the peers (and their namespaces) before it exits.
  const onSignal = (sig: NodeJS.Signals) => {
    console.error(`peers: ${sig}, removing the peers`);
    void teardown().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    for (const s of all) {
      const ts = Date.now();
      try {
        await s.start(imageTar);
        ctx.systems.push(s);
        console.error(`peers: ${s.label} started in ${Date.now() - ts} ms`);
      } catch (err) {
        ctx.failures.push({ system: s.id, workload: "start", error: (err as Error).message });
        console.error(`peers: ${s.label} did not start: ${(err as Error).message}`);
      }
    }
    if (!ctx.systems.some((s) => s.id === "ctnet")) throw new Error("ctnet did not start");
    await runWorkloads(ctx, sel.workloads);
  } finally {
    await teardown();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  const differences = pictureDiff(before, networkPicture());

  const versions: Record<string, string> = {};
  for (const s of all) Object.assign(versions, s.versions());
  for (const p of ["nftables", "iperf3", "dnsperf", "busybox-static"]) versions[p] = debVersion(p);
  const cannot = limits(all, o);
  const result: PeersResult = {
    date: new Date().toISOString(),
    machine: machine(),
    durationS: round((Date.now() - t0) / 1000, 1),
    options: o,
    systems: all.map((s) => ({ id: s.id, label: s.label })),
    versions,
    installed,
    settled: ctx.settled,
    rows: ctx.rows,
    fill: ctx.fill,
    ports: ctx.ports,
    dns: ctx.dns,
    cannot,
    multihost: ctx.multihost,
    failures: ctx.failures,
    host: { unchanged: differences.length === 0, differences, removedStrayPaths, forcedCleanup: forced },
  };
  writeResult("peers.json", result);
  writeDocs(result);
  console.log(`\n${mainTable(result)}`);
  if (differences.length > 0)
    console.error(`peers: the machine's network changed:\n${differences.join("\n")}`);
  return result;
}
