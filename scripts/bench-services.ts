/**
 * Services benchmark (issue 7, "Speed"; part `services` of npm run bench, bench-results/services.json).
 *
 * Adding services, end to end. In a lab of three hosts (`ctnet lab`, so no packet leaves the
 * machine), services of 3 tasks each (`sleep`, so that hundreds of tasks fit on the machine) are
 * created one after another through POST /services/create on host1, each once the previous one's
 * tasks all run (after one service that is not counted: it makes the client's table). Figures are
 * from the API call: its answer; the new VIP in the load balancer of a client container's sandbox
 * on host3 (`nft -i` there, asked every 2 ms); the service's three
 * tasks running (GET /services?status=true, polled every 20 ms), which includes the scheduler and
 * the agents starting the task containers. (`nft monitor` would be more direct, but nft 1.0.6
 * prints elements of concatenated interval maps garbled and then stops reporting.)
 *
 * Adding services, the load balancer alone, up to `lbServices` (1000 by default): in this process,
 * the engine's pass for one change (services and statuses → lbModel → clientParts → LbApplier) over
 * a real namespace with a client table, as the daemon runs it for each sandbox, timed per service
 * added (3 tasks each) while the table grows.
 *
 * Connections per second. A load generator (Node, bounded in time, round-robin over its targets,
 * `concurrency` connections in flight) opens TCP connections that each read a short answer from a
 * Node server. Service `web` runs 2 tasks of that server (on host1 and host2) and publishes 8080.
 * From the client container on host3: straight to the two tasks' addresses, and to web's VIP.
 * From a machine on the underlay: through the routing mesh on host1 (one task local) and on host3
 * (no task), against two containers on host1 and host2 publishing the same server straight (-p).
 * Runs are interleaved; the figure is the median per path.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { ServiceRecord, TaskRecord, TaskStatus } from "../src/cluster/types.js";
import { clientParts, lbModel } from "../src/engine/service-lb.js";
import { LbApplier, type LbElements } from "../src/firewall/lb.js";
import { createNetns, deleteNetns } from "../src/kernel/netns.js";
import { runNft } from "../src/kernel/nft.js";
import { TestLab } from "../test/helpers/lab.js";
import { median, round, type Stat, settle, sleep, stat, writeResult } from "./bench-util.js";

export interface ServicesOptions {
  /** services created end to end */
  services: number;
  /** services added in the load balancer-only run */
  lbServices: number;
  /** seconds of each load run */
  seconds: number;
  /** connections in flight per load run */
  concurrency: number;
  /** load runs per path */
  rounds: number;
}

export interface ServicesResult {
  options: ServicesOptions;
  /** per service created, in order: API call, VIP in the client's table, 3 tasks running (ms) */
  endToEnd: { apiMs: number; vipMs: number; readyMs: number }[];
  endToEndStats: Stat[];
  /** ms of the load balancer's pass per service added, in order */
  lbMs: number[];
  lbStats: Stat[];
  /** connections per second, median of the rounds, per path */
  connections: { name: string; perSecond: number; runs: number[]; errors: number }[];
}

const SERVER = `require("node:net").createServer((s) => { s.on("error", () => {}); s.end(require("node:os").hostname() + "\\n"); }).listen(80)`;

/** argv: "host:port,host:port…" seconds concurrency; prints {ok, errors, seconds}. */
const LOAD = `
const net = require("node:net");
const [list, seconds, concurrency] = process.argv.slice(1);
const targets = list.split(",").map((t) => { const i = t.lastIndexOf(":"); return { host: t.slice(0, i), port: Number(t.slice(i + 1)) }; });
let ok = 0, errors = 0, next = 0, active = Number(concurrency);
const start = process.hrtime.bigint();
const end = start + BigInt(Math.round(Number(seconds) * 1e9));
function one() {
  if (process.hrtime.bigint() >= end) {
    if (--active === 0) console.log(JSON.stringify({ ok, errors, seconds: Number(process.hrtime.bigint() - start) / 1e9 }));
    return;
  }
  const t = targets[next++ % targets.length];
  let got = false, failed = false;
  const s = net.connect(t);
  s.on("data", () => { got = true; });
  s.on("error", () => { failed = true; });
  s.on("close", () => { if (got && !failed) ok++; else errors++; one(); });
}
for (let i = 0; i < active; i++) one();
`;

/**
 * Lists the client table's VIPs through one `nft -i` inside the sandbox, fed a command per poll
 * (line-buffered: a pipe would hold its answers back). Each answer ends with the table's "}".
 */
function vipLister(sandbox: string): { list(): Promise<Set<string>>; child: ChildProcess } {
  const child = spawn("nsenter", [`--net=${sandbox}`, "stdbuf", "-oL", "nft", "-i"], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  if (!child.stdout || !child.stdin) throw new Error("nft -i has no pipes");
  const stdin = child.stdin;
  let lines: string[] = [];
  let answer: ((text: string) => void) | undefined;
  createInterface({ input: child.stdout }).on("line", (line) => {
    lines.push(line);
    if (line !== "}") return;
    const text = lines.join(" ");
    lines = [];
    answer?.(text);
  });
  const list = () =>
    new Promise<Set<string>>((resolve) => {
      answer = (text) =>
        resolve(
          new Set(
            /elements = \{([^}]*)\}/
              .exec(text)?.[1]
              ?.split(/[\s,]+/)
              .filter((x) => x !== ""),
          ),
        );
      stdin.write("list set ip ctnet_lb vips\n");
    });
  return { list, child };
}

/** The 1st, each tenth, and the last of a run of samples. */
const deciles = (what: string, xs: number[]): Stat[] => {
  const out: Stat[] = [stat(`${what}: 1st service`, xs.slice(0, 1))];
  const step = Math.max(1, Math.floor(xs.length / 10));
  for (let k = 0; k < xs.length; k += step)
    out.push(stat(`${what}: services ${k + 1}-${Math.min(xs.length, k + step)}`, xs.slice(k, k + step)));
  if (xs.length > 1) out.push(stat(`${what}: service ${xs.length}`, xs.slice(-1)));
  return out;
};

/** The load balancer's pass alone, in a namespace of this process, per service added. */
export function benchLbPass(services: number): number[] {
  const dir = mkdtempSync(join(tmpdir(), "ctnet-bench-lb-"));
  const ns = join(dir, "client");
  createNetns(ns);
  try {
    const applier = new LbApplier(runNft);
    const view = {
      services: new Map<string, ServiceRecord>(),
      tasks: new Map<string, TaskRecord>(),
      taskStatuses: new Map<string, TaskStatus>(),
    };
    let parts = new Map<string, Map<string, LbElements>>();
    const out: number[] = [];
    for (let k = 1; k <= services; k++) {
      const id = `svc${k}`;
      for (let t = 1; t <= 3; t++) {
        const task = `${id}.${t}`;
        view.tasks.set(task, {
          id: task,
          serviceId: id,
          slot: t,
          host: "h",
          desired: "running",
          pending: "",
          created: "",
        });
        view.taskStatuses.set(task, {
          id: task,
          host: "h",
          state: "running",
          message: "",
          containerId: task,
          addresses: { net: `10.1.${(3 * k + t) >> 8}.${(3 * k + t) & 255}` },
          updated: "",
        });
      }
      view.services.set(id, {
        id,
        name: id,
        created: "",
        updated: "",
        version: 1,
        image: "",
        cmd: [],
        env: [],
        labels: {},
        replicas: 3,
        networks: ["net"],
        endpointMode: "vip",
        ports: [],
        vips: { net: `10.2.${k >> 8}.${k & 255}` },
      });
      const t0 = process.hrtime.bigint();
      parts = clientParts(parts, lbModel(view, undefined).vips);
      applier.apply(ns, "client", new Map(parts.get("net")));
      out.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    return out;
  } finally {
    deleteNetns(ns);
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function benchServices(o: ServicesOptions): Promise<ServicesResult> {
  await settle();
  const lbMs = benchLbPass(o.lbServices);
  const lab = TestLab.up({ hosts: 3 });
  let result: ServicesResult;
  try {
    result = await inLab(lab, o, lbMs);
  } catch (err) {
    console.error(lab.logs());
    // The run's failure is the news; a cleanup problem after it is only mentioned.
    try {
      await tearDown(lab);
    } catch (cleanup) {
      console.error(String(cleanup).split("\n").slice(0, 3).join("\n"));
    }
    throw err;
  }
  await tearDown(lab);
  return result;
}

async function tearDown(lab: TestLab): Promise<void> {
  await removeServices(lab);
  lab.destroy();
}

async function inLab(lab: TestLab, o: ServicesOptions, lbMs: number[]): Promise<ServicesResult> {
  let nft: ChildProcess | undefined;
  try {
    const node = process.execPath;
    const machine = lab.machine("client");
    lab.ok("host1", ["network", "create", "-d", "overlay", "--subnet", "10.20.0.0/16", "mynet"]);
    lab.ok("host3", ["run", "-d", "--name", "client", "--net", "mynet", "sleep", "100000"]);
    const clientId = lab.ok("host3", ["inspect", "-f", "{{.Id}}", "client"]);
    const lister = vipLister(`${lab.host("host3").execRoot}/netns/${clientId.slice(0, 12)}`);
    nft = lister.child;
    const mynet = lab.ok("host1", ["network", "inspect", "-f", "{{.Id}}", "mynet"]);
    interface ServiceView {
      Endpoint?: { VirtualIPs?: { NetworkID: string; Addr: string }[] };
      ServiceStatus?: { RunningTasks: number };
    }
    const inspect = async (id: string) =>
      (await lab.api("host1", "GET", `/services/${id}`)).body as ServiceView;
    const vipOf = async (id: string) =>
      (await inspect(id)).Endpoint?.VirtualIPs?.find((v) => v.NetworkID === mynet)?.Addr.split("/")[0] ?? "";
    const running = async (id: string, n: number) => {
      const deadline = Date.now() + 60_000;
      const query = `/services?status=true&filters=${encodeURIComponent(JSON.stringify({ id: [id] }))}`;
      const runningTasks = async () =>
        ((await lab.api("host1", "GET", query)).body as ServiceView[])[0]?.ServiceStatus?.RunningTasks;
      while ((await runningTasks()) !== n) {
        if (Date.now() > deadline) throw new Error(`service ${id}: ${n} tasks not running within 60 s`);
        await sleep(20);
      }
      return process.hrtime.bigint();
    };
    const create = async (name: string, replicas: number, args: string[], ports: unknown[] = []) => {
      const t0 = process.hrtime.bigint();
      const r = await lab.api("host1", "POST", "/services/create", {
        Name: name,
        TaskTemplate: { ContainerSpec: { Args: args }, Networks: [{ Target: "mynet" }] },
        Mode: { Replicated: { Replicas: replicas } },
        EndpointSpec: { Ports: ports },
      });
      const apiMs = Number(process.hrtime.bigint() - t0) / 1e6;
      if (r.status !== 201) throw new Error(`service create ${name}: ${r.status} ${r.text}`);
      const id = (r.body as { ID: string }).ID;
      return { id, t0, apiMs, vip: await vipOf(id) };
    };

    const seen = async (vip: string) => {
      const deadline = Date.now() + 10_000;
      // Every 2 ms: asking without a pause would take a core from the daemons (and their leases).
      while (!(await lister.list()).has(vip)) {
        if (Date.now() > deadline) throw new Error(`VIP ${vip} not in the client's table within 10 s`);
        await sleep(2);
      }
      return process.hrtime.bigint();
    };
    // A first service makes the client's table and warms the code paths up; it is not counted.
    const warm = await create("s0", 3, ["sleep", "100000"]);
    await seen(warm.vip);
    await running(warm.id, 3);
    const endToEnd: ServicesResult["endToEnd"] = [];
    for (let k = 1; k <= o.services; k++) {
      const { id, t0, apiMs, vip } = await create(`s${k}`, 3, ["sleep", "100000"]);
      const vipAt = await seen(vip);
      const ready = await running(id, 3);
      const ms = (t: bigint) => round(Number(t - t0) / 1e6, 3);
      endToEnd.push({ apiMs: round(apiMs, 3), vipMs: ms(vipAt), readyMs: ms(ready) });
    }

    const web = await create("web", 2, [node, "-e", SERVER], [{ TargetPort: 80, PublishedPort: 8080 }]);
    await running(web.id, 2);
    const tasks = ["host1", "host2", "host3"].flatMap((h) =>
      lab
        .ok(h, ["ps", "-q", "--filter", "label=com.docker.swarm.service.name=web"])
        .split("\n")
        .filter((id) => id !== "")
        .map((id) =>
          lab.ok(h, ["inspect", "-f", '{{(index .NetworkSettings.Networks "mynet").IPAddress}}', id]),
        ),
    );
    lab.ok("host1", ["run", "-d", "--name", "p1", "-p", "9091:80", node, "-e", SERVER]);
    lab.ok("host2", ["run", "-d", "--name", "p2", "-p", "9092:80", node, "-e", SERVER]);
    const addr = (h: string) => lab.host(h).addr;
    await sleep(1000);

    const load = (where: "client" | "machine", targets: string[]) => {
      const args = [node, "-e", LOAD, targets.join(","), String(o.seconds), String(o.concurrency)];
      const r =
        where === "machine"
          ? machine.exec(args, 120_000)
          : lab.ctnet("host3", ["exec", "client", ...args], 120_000);
      if (r.status !== 0) throw new Error(`load generator failed: ${r.stderr}`);
      return JSON.parse(r.stdout) as { ok: number; errors: number; seconds: number };
    };
    const paths: { name: string; where: "client" | "machine"; targets: string[] }[] = [
      {
        name: "container → the 2 task addresses (direct)",
        where: "client",
        targets: tasks.map((t) => `${t}:80`),
      },
      {
        name: `container → web's VIP (table of ${o.services + 1} services)`,
        where: "client",
        targets: [`${web.vip}:80`],
      },
      {
        name: "underlay → 2 ports published by containers on host1, host2 (direct)",
        where: "machine",
        targets: [`${addr("host1")}:9091`, `${addr("host2")}:9092`],
      },
      {
        name: "underlay → routing mesh on host1 (a task there)",
        where: "machine",
        targets: [`${addr("host1")}:8080`],
      },
      {
        name: "underlay → routing mesh on host3 (no task)",
        where: "machine",
        targets: [`${addr("host3")}:8080`],
      },
    ];
    await settle();
    const runs = new Map(paths.map((p) => [p.name, { perSecond: [] as number[], errors: 0 }]));
    for (let r = 0; r < o.rounds; r++) {
      for (const p of paths) {
        const res = load(p.where, p.targets);
        const entry = runs.get(p.name);
        if (!entry) continue;
        entry.perSecond.push(round(res.ok / res.seconds, 0));
        entry.errors += res.errors;
      }
    }
    const result: ServicesResult = {
      options: o,
      endToEnd,
      endToEndStats: [
        ...deciles(
          "API call",
          endToEnd.map((e) => e.apiMs),
        ),
        ...deciles(
          "VIP in the client's table",
          endToEnd.map((e) => e.vipMs),
        ),
        ...deciles(
          "3 tasks running",
          endToEnd.map((e) => e.readyMs),
        ),
      ],
      lbMs: lbMs.map((x) => round(x, 3)),
      lbStats: deciles("pass", lbMs),
      connections: paths.map((p) => {
        const e = runs.get(p.name) ?? { perSecond: [], errors: 0 };
        return {
          name: p.name,
          perSecond: round(median(e.perSecond), 0),
          runs: e.perSecond,
          errors: e.errors,
        };
      }),
    };
    writeResult("services.json", result);
    return result;
  } finally {
    nft?.kill();
  }
}

/**
 * Removes every service and waits for their tasks to go: `lab down` removing task containers
 * while the hosts' agents remove them too would report containers already gone.
 */
async function removeServices(lab: TestLab): Promise<void> {
  const list = (await lab.api("host1", "GET", "/services")).body as { ID: string }[];
  for (const s of list) await lab.api("host1", "DELETE", `/services/${s.ID}`);
  const deadline = Date.now() + 60_000;
  const left = () =>
    ["host1", "host2", "host3"].some(
      (h) => lab.ok(h, ["ps", "-aq", "--filter", "label=com.docker.swarm.service.id"]).trim() !== "",
    );
  while (left()) {
    if (Date.now() > deadline) throw new Error("task containers still there after 60 s");
    await sleep(500);
  }
}

export function servicesTables(r: ServicesResult): string {
  const table = (stats: Stat[]) => [
    "| what | n | median ms | p99 ms | mean ms |",
    "|---|---|---|---|---|",
    ...stats.map((s) => `| ${s.name} | ${s.n} | ${s.median} | ${s.p99} | ${s.mean} |`),
  ];
  return [
    `Creating services of 3 tasks end to end (${r.options.services} services, ms from the API call):`,
    ...table(r.endToEndStats),
    "",
    `The load balancer's pass per service added, up to ${r.options.lbServices} services of 3 tasks (ms):`,
    ...table(r.lbStats),
    "",
    `Connections per second (${r.options.concurrency} in flight, ${r.options.seconds} s runs, median of ${r.options.rounds}):`,
    "| path | connections/s | errors |",
    "|---|---|---|",
    ...r.connections.map((c) => `| ${c.name} | ${c.perSecond} | ${c.errors} |`),
  ].join("\n");
}
