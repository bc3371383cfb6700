/**
 * Services' load balancing in a lab of three hosts: VIPs balanced by nftables in the client's
 * sandbox, and the routing mesh answering a published port on every host, also hosts without a
 * task. The services, tasks and statuses are written into the cluster store by hand, with plain
 * containers as the tasks, so this tests the load balancers alone: what the services layer writes,
 * they follow.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { ServiceRecord, TaskRecord, TaskStatus } from "../../src/cluster/types.js";
import { type LabMachine, TestLab } from "../helpers/lab.js";

/** A one-line HTTP server that answers its host name (busybox nc runs the script per connection). */
const SERVER = [
  "busybox",
  "nc",
  "-ll",
  "-p",
  "80",
  "-e",
  "sh",
  "-c",
  'while read -r l && [ ${#l} -gt 1 ]; do :; done; printf "HTTP/1.0 200 OK\\r\\n\\r\\n%s\\n" "$(hostname)"',
];

const VIP = "10.20.0.250";
const INGRESS_VIP = "10.255.0.250";

/** The names that answered `n` requests, with how many each; "" counts failures. */
function tally(out: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of out.split("\n")) {
    const name = line.trim();
    if (name === "") continue;
    m.set(name, (m.get(name) ?? 0) + 1);
  }
  return m;
}

const loop = (n: number, url: string) =>
  `for i in $(seq ${n}); do curl -s -m 2 ${url} || echo FAILED$?; done`;

async function waitFor(what: string, ms: number, check: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(50);
  }
}

describe("service load balancing across three hosts", () => {
  let lab: TestLab;
  let client: LabMachine;
  let mynet = "";
  let ingress = "";
  const addr = new Map<string, { mynet: string; ingress: string }>();

  const etcd = (args: string[]) => {
    const r = lab.exec("host1", ["etcdctl", `--endpoints=http://${lab.state.clusterAddr}`, ...args]);
    assert.equal(r.status, 0, r.stderr);
  };
  const put = (key: string, value: unknown) => etcd(["put", key, JSON.stringify(value)]);

  const service: ServiceRecord = {
    id: "svc1",
    name: "myservice",
    created: new Date().toISOString(),
    updated: new Date().toISOString(),
    version: 1,
    image: "",
    cmd: SERVER,
    env: [],
    labels: {},
    replicas: 2,
    networks: [],
    endpointMode: "vip",
    ports: [{ mode: "ingress", protocol: "tcp", published: 8080, target: 80 }],
    vips: {},
  };

  /** A container standing in for task `name` on `host`, reported running. */
  function task(name: string, host: string): void {
    const t: TaskRecord = {
      id: name,
      serviceId: service.id,
      slot: Number(name.slice(-1)),
      host,
      desired: "running",
      pending: "",
      created: new Date().toISOString(),
    };
    const a = addr.get(name);
    assert.ok(a);
    const s: TaskStatus = {
      id: name,
      host,
      state: "running",
      message: "",
      containerId: name,
      addresses: { [mynet]: a.mynet, [ingress]: a.ingress },
      updated: new Date().toISOString(),
    };
    put(`/ctnet/tasks/${name}`, t);
    put(`/ctnet/task-status/${name}`, s);
  }

  function startContainer(name: string, host: string): void {
    lab.ok(host, ["run", "-d", "--name", name, "--hostname", name, "--net", "mynet", ...SERVER]);
    lab.ok(host, ["network", "connect", "ingress", name]);
    const ips = lab.ok(host, [
      "inspect",
      "-f",
      '{{(index .NetworkSettings.Networks "mynet").IPAddress}} {{(index .NetworkSettings.Networks "ingress").IPAddress}}',
      name,
    ]);
    const [m = "", i = ""] = ips.split(" ");
    addr.set(name, { mynet: m, ingress: i });
  }

  const viaVip = (n: number) =>
    tally(lab.ok("host3", ["exec", "client", "sh", "-c", loop(n, `http://${VIP}/`)]));
  const viaMesh = (n: number, host = "host3") =>
    tally(client.exec(["sh", "-c", loop(n, `http://${lab.host(host).addr}:8080/`)]).stdout);
  const nsNft = (path: string, args: string[]) =>
    spawnSync("nsenter", [`--net=${path}`, "nft", ...args], { encoding: "utf8" });
  const ingressSbox = (host: string) => `${lab.host(host).execRoot}/ingress_sbox`;

  before(() => {
    lab = TestLab.up({ hosts: 3 });
    client = lab.machine("client");
    lab.ok("host1", ["network", "create", "-d", "overlay", "--subnet", "10.20.0.0/24", "mynet"]);
    lab.ok("host1", ["network", "create", "-d", "overlay", "--subnet", "10.255.0.0/16", "ingress"]);
    mynet = lab.ok("host1", ["network", "inspect", "-f", "{{.Id}}", "mynet"]);
    ingress = lab.ok("host1", ["network", "inspect", "-f", "{{.Id}}", "ingress"]);
    service.networks = [mynet, ingress];
    service.vips = { [mynet]: VIP, [ingress]: INGRESS_VIP };
    startContainer("web1", "host1");
    startContainer("web2", "host2");
    lab.ok("host3", ["run", "-d", "--name", "client", "--net", "mynet", "sleep", "1000"]);
  });
  after(() => lab?.destroy());

  it("a sandbox started after the service reaches the VIP from its first connection", () => {
    put(`/ctnet/services/${service.id}`, service);
    task("web1", "host1");
    task("web2", "host2");
    const first = lab.ok("host3", [
      "run",
      "--rm",
      "--net",
      "mynet",
      "curl",
      "-s",
      "-m",
      "2",
      `http://${VIP}/`,
    ]);
    assert.match(first, /^web[12]$/);
  });

  it("100 connections to the VIP from a client container are answered by both tasks", async () => {
    await waitFor("both tasks answer", 5000, () => viaVip(10).size === 2);
    const t = viaVip(100);
    assert.deepEqual([...t.keys()].sort(), ["web1", "web2"], JSON.stringify([...t]));
    const table = lab.ok("host3", ["exec", "client", "nft", "list", "table", "ip", "ctnet_lb"]);
    assert.match(table, new RegExp(`elements = \\{ ${VIP.replaceAll(".", "\\.")} \\}`));
    assert.doesNotMatch(table, new RegExp(INGRESS_VIP.replaceAll(".", "\\.")), "the ingress VIP stays out");
  });

  it("100 connections to the published port of a host without a task are answered by both tasks", async () => {
    await waitFor("the mesh answers on host3", 10_000, () => viaMesh(4).size === 2);
    const t = viaMesh(100);
    assert.deepEqual([...t.keys()].sort(), ["web1", "web2"], JSON.stringify([...t]));
    for (const host of ["host1", "host2"]) assert.ok(viaMesh(10, host).size >= 1, host);
    const table = nsNft(ingressSbox("host3"), ["list", "table", "ip", "ctnet_lb"]);
    assert.match(table.stdout, /tcp \. 8080/);
  });

  it("the mesh's port is taken on every host: a container cannot publish it", () => {
    const r = lab.ctnet("host2", ["run", "-d", "--name", "squatter", "-p", "8080:80", "sleep", "100"]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /8080.*(already allocated|in use)/);
    lab.ctnet("host2", ["rm", "-f", "squatter"]);
  });

  it("a task that stops running leaves the VIP and the mesh; a new one joins both", async () => {
    const s = (state: TaskStatus["state"]) => ({
      id: "web2",
      host: "host2",
      state,
      message: "",
      containerId: "web2",
      addresses: {},
      updated: new Date().toISOString(),
    });
    put("/ctnet/task-status/web2", s("failed"));
    await waitFor("only web1 answers the VIP", 2000, () => {
      const t = viaVip(20);
      return t.size === 1 && t.has("web1");
    });
    await waitFor("only web1 answers the mesh", 2000, () => {
      const t = viaMesh(20);
      return t.size === 1 && t.has("web1");
    });
    startContainer("web3", "host3");
    task("web3", "host3");
    task("web2", "host2");
    await waitFor("three tasks answer the VIP", 2000, () => viaVip(60).size === 3);
    await waitFor("three tasks answer the mesh", 2000, () => viaMesh(60, "host1").size === 3);
  });

  it("a service without running tasks refuses connections at once, on the VIP and the mesh", async () => {
    for (const t of ["web1", "web2", "web3"]) etcd(["del", `/ctnet/task-status/${t}`]);
    await waitFor("the VIP refuses", 2000, () => viaVip(1).has("FAILED7"));
    await waitFor("the mesh refuses", 2000, () => viaMesh(1).has("FAILED7"));
  });

  it("the ingress sandbox comes back after a host's crash", async () => {
    task("web1", "host1");
    lab.stop("host3");
    lab.start("host3");
    await waitFor("the mesh answers on host3 again", 15_000, () => viaMesh(4).has("web1"));
  });

  it("removing the service frees its port and takes down the tables and the ingress sandbox", async () => {
    etcd(["del", "--prefix", "/ctnet/task"]);
    etcd(["del", `/ctnet/services/${service.id}`]);
    await waitFor(
      "the client's table is gone",
      3000,
      () => lab.ctnet("host3", ["exec", "client", "nft", "list", "tables"]).stdout.trim() === "",
    );
    for (const host of ["host1", "host2", "host3"]) {
      await waitFor(
        `${host}'s ingress sandbox is gone`,
        3000,
        () => nsNft(ingressSbox(host), ["list", "tables"]).status !== 0,
      );
    }
    lab.ok("host2", ["run", "-d", "--name", "publisher", "-p", "8080:80", "sleep", "100"]);
    lab.ok("host2", ["rm", "-f", "publisher"]);
  });
});
