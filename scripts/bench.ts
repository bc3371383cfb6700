/**
 * ctnet's benchmarks. Each part runs against a fresh daemon in its own host namespace, through the
 * API's unix socket, as a client would see it, and writes bench-results/<file>.json:
 * - api (issue 2's figures, bench-results/ctnet.json): network create, container attach (network
 *   connect) and detach, `run` of a container on a bridge network, and the cost per container
 *   while one network fills with N containers;
 * - dns (issue 3, scripts/bench-dns.ts, bench-results/dns.json): dnsperf against the embedded
 *   resolver inside a container;
 * - ports (issue 3, scripts/bench-ports.ts, bench-results/ports.json): time to publish the 1st,
 *   100th and 10,000th port;
 * - peers (issue 6, with --peers; scripts/peers/, bench-results/peers.json and docs/benchmarks.md):
 *   the same workloads on ctnet, Docker, Podman and the CNI bridge plugin, interleaved;
 * - cluster (issue 5, scripts/bench-cluster.ts, bench-results/cluster.json; not in the default set):
 *   convergence across lab hosts and overlay throughput, in labs of `ctnet lab`.
 * - services (issue 7, scripts/bench-services.ts, bench-results/services.json; not in the default
 *   set): adding services (end to end, and the load balancer's pass alone) and connections per
 *   second through a VIP and the routing mesh against direct paths, in a lab of 3 hosts.
 * - with --compare A.json[,B.json] (no benchmark runs): whether two peers runs agree within the
 *   noise each measured (scripts/peers/compare.ts; B defaults to bench-results/peers.json).
 * Usage: npm run bench [-- --peers --only api,dns,ports,peers --fill 1000 --rounds 50
 *   --dns-seconds 10 --ports-total 10000 …]; `npm run bench -- --help` lists the options.
 */
import { parseArgs } from "node:util";
import { TestDaemon } from "../test/helpers/daemon.js";
import { benchCluster, clusterTables } from "./bench-cluster.js";
import { benchDns, dnsTable } from "./bench-dns.js";
import { benchPorts, portsTables } from "./bench-ports.js";
import { benchServices, servicesTables } from "./bench-services.js";
import { type Stat, stat, timed, writeResult } from "./bench-util.js";
import { compareRuns, comparisonMarkdown, loadPeersResult, writeComparisonDocs } from "./peers/compare.js";
import { benchPeers, PEER_IDS, WORKLOAD_IDS } from "./peers/run.js";
import type { SystemId } from "./peers/systems.js";

const OPTIONS = {
  only: { type: "string", default: "api,dns,ports" },
  fill: { type: "string", default: "1000" },
  rounds: { type: "string", default: "50" },
  "dns-seconds": { type: "string", default: "10" },
  "dns-names": { type: "string", default: "10" },
  "dns-outstanding": { type: "string", default: "100" },
  "dns-clients": { type: "string", default: "1" },
  "dns-rate": { type: "string", default: "10000" },
  "dns-profile": { type: "boolean", default: false },
  "ports-total": { type: "string", default: "10000" },
  "ports-per-container": { type: "string", default: "100" },
  "ports-probes": { type: "string", default: "5" },
  "ports-profile": { type: "boolean", default: false },
  peers: { type: "boolean", default: false },
  "peer-systems": { type: "string", default: PEER_IDS.join(",") },
  "peer-workloads": { type: "string", default: WORKLOAD_IDS.join(",") },
  "peer-rounds": { type: "string", default: "30" },
  "peer-fill": { type: "string", default: "200" },
  "peer-ports-total": { type: "string", default: "1000" },
  "peer-ports-probes": { type: "string", default: "5" },
  "peer-dns-seconds": { type: "string", default: "10" },
  "peer-dns-rounds": { type: "string", default: "3" },
  "peer-dns-rate": { type: "string", default: "10000" },
  "peer-iperf-seconds": { type: "string", default: "5" },
  "peer-iperf-rounds": { type: "string", default: "5" },
  "peer-multi-hosts": { type: "string", default: "3" },
  "peer-multi-rounds": { type: "string", default: "30" },
  "cluster-hosts": { type: "string", default: "3,10" },
  "cluster-rounds": { type: "string", default: "100" },
  "cluster-seconds": { type: "string", default: "120" },
  "cluster-round-timeout": { type: "string", default: "5000" },
  "cluster-iperf-seconds": { type: "string", default: "4" },
  "cluster-iperf-runs": { type: "string", default: "5" },
  "services-count": { type: "string", default: "50" },
  "services-lb": { type: "string", default: "1000" },
  "services-seconds": { type: "string", default: "3" },
  "services-concurrency": { type: "string", default: "16" },
  "services-rounds": { type: "string", default: "3" },
  compare: { type: "string", default: "" },
  help: { type: "boolean", default: false },
} as const;

const { values } = parseArgs({ options: OPTIONS });
if (values.help) {
  console.log(
    `npm run bench -- [options]\n${Object.entries(OPTIONS)
      .map(([k, v]) => `  --${k}${v.type === "string" ? ` (default ${v.default})` : ""}`)
      .join("\n")}`,
  );
  process.exit(0);
}
if (values.compare !== "") {
  const [a = "", b = "bench-results/peers.json"] = values.compare.split(",");
  const runA = loadPeersResult(a);
  const comparison = compareRuns(runA, loadPeersResult(b));
  const labels = Object.fromEntries(runA.systems.map((s) => [s.id, s.label]));
  const markdown = comparisonMarkdown(comparison, labels);
  writeResult("peers-rerun.json", { files: [a, b], ...comparison });
  writeComparisonDocs(markdown);
  console.log(markdown);
  process.exit(0);
}
const ONLY = new Set(values.only.split(","));
if (values.peers) ONLY.add("peers");
for (const part of ONLY)
  if (!["api", "dns", "ports", "peers", "cluster", "services"].includes(part))
    throw new Error(`unknown part ${part}`);
const FILL = Number(values.fill);
const ROUNDS = Number(values.rounds);

async function benchApi(): Promise<void> {
  const d = await TestDaemon.start("bench");
  const results: Stat[] = [];
  try {
    const create: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      create.push(
        await timed(
          () =>
            d.api("POST", "/networks/create", {
              Name: `bn${i}`,
              IPAM: { Config: [{ Subnet: `10.200.${i}.0/24` }] },
            }),
          201,
        ),
      );
    }
    results.push(stat("network create", create));
    const remove: number[] = [];
    for (let i = 0; i < ROUNDS; i++) remove.push(await timed(() => d.api("DELETE", `/networks/bn${i}`), 204));
    results.push(stat("network rm", remove));

    await d.api("POST", "/networks/create", {
      Name: "bench",
      IPAM: { Config: [{ Subnet: "10.128.0.0/16" }] },
    });
    await d.api("POST", "/networks/create", {
      Name: "extra",
      IPAM: { Config: [{ Subnet: "10.129.0.0/16" }] },
    });

    const run: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      run.push(
        await timed(async () => {
          const c = await d.api("POST", `/containers/create?name=r${i}`, {
            Cmd: ["sleep", "1000"],
            HostConfig: { NetworkMode: "bench" },
          });
          if (c.status !== 201) return c;
          return d.api("POST", `/containers/r${i}/start`);
        }, 204),
      );
    }
    results.push(stat("run -d (create + start) on a bridge", run));

    const connect: number[] = [];
    const disconnect: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      connect.push(await timed(() => d.api("POST", "/networks/extra/connect", { Container: `r${i}` }), 200));
      disconnect.push(
        await timed(() => d.api("POST", "/networks/extra/disconnect", { Container: `r${i}` }), 200),
      );
    }
    results.push(stat("network connect (attach)", connect));
    results.push(stat("network disconnect (detach)", disconnect));

    const rm: number[] = [];
    for (let i = 0; i < ROUNDS; i++)
      rm.push(await timed(() => d.api("DELETE", `/containers/r${i}?force=1`), 204));
    results.push(stat("rm -f of a running container", rm));

    const fill: number[] = [];
    for (let i = 0; i < FILL; i++) {
      fill.push(
        await timed(async () => {
          const c = await d.api("POST", `/containers/create?name=f${i}`, {
            Cmd: ["sleep", "1000"],
            HostConfig: { NetworkMode: "bench" },
          });
          if (c.status !== 201) return c;
          return d.api("POST", `/containers/f${i}/start`);
        }, 204),
      );
    }
    const decile = Math.max(1, Math.floor(FILL / 10));
    for (let k = 0; k < FILL; k += decile)
      results.push(
        stat(`fill: containers ${k + 1}-${Math.min(FILL, k + decile)}`, fill.slice(k, k + decile)),
      );
    for (let i = 0; i < FILL; i++) await d.api("DELETE", `/containers/f${i}?force=1`);
  } finally {
    await d.destroy();
  }
  writeResult("ctnet.json", { fill: FILL, rounds: ROUNDS, results });
  console.log("| operation | n | median ms | p99 ms | mean ms |\n|---|---|---|---|---|");
  for (const r of results) console.log(`| ${r.name} | ${r.n} | ${r.median} | ${r.p99} | ${r.mean} |`);
}

async function main(): Promise<void> {
  const n = (k: keyof typeof values) => {
    const x = Number(values[k]);
    if (!Number.isInteger(x) || x <= 0) throw new Error(`--${k} must be a positive integer`);
    return x;
  };
  if (ONLY.has("api")) await benchApi();
  if (ONLY.has("dns")) {
    const { runs } = await benchDns({
      seconds: n("dns-seconds"),
      names: n("dns-names"),
      outstanding: n("dns-outstanding"),
      clients: n("dns-clients"),
      rate: n("dns-rate"),
      profile: values["dns-profile"],
    });
    console.log(`\n${dnsTable(runs)}`);
  }
  if (ONLY.has("ports")) {
    const r = await benchPorts({
      total: n("ports-total"),
      perContainer: n("ports-per-container"),
      probes: n("ports-probes"),
      profile: values["ports-profile"],
    });
    console.log(`\n${portsTables(r)}`);
  }
  if (ONLY.has("peers")) {
    const list = <T extends string>(k: keyof typeof values, allowed: readonly T[]): T[] => {
      const xs = String(values[k])
        .split(",")
        .filter((x) => x !== "");
      for (const x of xs)
        if (!allowed.includes(x as T)) throw new Error(`--${k}: unknown ${x} (one of ${allowed.join(", ")})`);
      return xs as T[];
    };
    const r = await benchPeers(
      {
        peers: list<SystemId>("peer-systems", PEER_IDS),
        workloads: new Set(list("peer-workloads", WORKLOAD_IDS)),
      },
      {
        rounds: n("peer-rounds"),
        ctnetFill: FILL,
        peerFill: n("peer-fill"),
        ctnetPorts: n("ports-total"),
        peerPorts: n("peer-ports-total"),
        portsProbes: n("peer-ports-probes"),
        dnsSeconds: n("peer-dns-seconds"),
        dnsRounds: n("peer-dns-rounds"),
        dnsRate: n("peer-dns-rate"),
        dnsNames: n("dns-names"),
        iperfSeconds: n("peer-iperf-seconds"),
        iperfRounds: n("peer-iperf-rounds"),
        multiHosts: n("peer-multi-hosts"),
        multiRounds: n("peer-multi-rounds"),
      },
    );
    if (r.failures.length > 0 || !r.host.unchanged || r.host.forcedCleanup.length > 0) process.exitCode = 1;
  }
  if (ONLY.has("cluster")) {
    const r = await benchCluster({
      hosts: String(values["cluster-hosts"])
        .split(",")
        .filter((x) => x !== "")
        .map(Number),
      rounds: n("cluster-rounds"),
      seconds: n("cluster-seconds"),
      roundTimeoutMs: n("cluster-round-timeout"),
      iperfSeconds: n("cluster-iperf-seconds"),
      // 0 skips the throughput part.
      iperfRuns: Number(values["cluster-iperf-runs"]) === 0 ? 0 : n("cluster-iperf-runs"),
    });
    console.log(`\n${clusterTables(r)}`);
  }
  if (ONLY.has("services")) {
    const r = await benchServices({
      services: n("services-count"),
      lbServices: n("services-lb"),
      seconds: n("services-seconds"),
      concurrency: n("services-concurrency"),
      rounds: n("services-rounds"),
    });
    console.log(`\n${servicesTables(r)}`);
  }
}

await main();
