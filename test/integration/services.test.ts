/**
 * Services on a ctnet cluster, for real in labs: on one host (create, list, scale, names, a task
 * whose process dies, bad requests, the docker CLI), then on three (spreading, names across hosts,
 * host-mode ports, a failed host, removal of everything). The traffic through VIPs and the routing
 * mesh is the load balancing's test; this one checks the tasks and their names.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { LEASE_TTL } from "../../src/cluster/cluster.js";
import { type LabMachine, TestLab } from "../helpers/lab.js";

const BUSYBOX_SCRIPT = fileURLToPath(new URL("../../scripts/busybox-image.sh", import.meta.url));
const TASK_ID = "com.docker.swarm.task.id";

interface ContainerSummary {
  Id: string;
  Names: string[];
  State: string;
  Labels: Record<string, string>;
}

interface TaskView {
  ID: string;
  Slot: number;
  NodeID?: string;
  DesiredState: string;
  Status: { State: string; Err?: string; ContainerStatus?: { ContainerID: string } };
  NetworksAttachments: { Network: { ID: string }; Addresses: string[] }[];
}

interface ServiceView {
  ID: string;
  Version: { Index: number };
  Spec: Record<string, unknown>;
  Endpoint: { VirtualIPs?: { NetworkID: string; Addr: string }[] };
}

async function waitFor(what: string, ms: number, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(100);
  }
}

/** The running task containers of `service` on `host`. */
async function taskContainers(lab: TestLab, host: string, service: string): Promise<ContainerSummary[]> {
  const filters = encodeURIComponent(JSON.stringify({ label: [`com.docker.swarm.service.name=${service}`] }));
  const r = await lab.api(host, "GET", `/containers/json?filters=${filters}`);
  assert.equal(r.status, 200, r.text);
  return r.body as ContainerSummary[];
}

async function tasks(lab: TestLab, host: string, service: string): Promise<TaskView[]> {
  const filters = encodeURIComponent(JSON.stringify({ service: [service] }));
  const r = await lab.api(host, "GET", `/tasks?filters=${filters}`);
  assert.equal(r.status, 200, r.text);
  return (r.body as TaskView[]).sort((a, b) => a.Slot - b.Slot);
}

async function inspectService(lab: TestLab, host: string, name: string): Promise<ServiceView> {
  const r = await lab.api(host, "GET", `/services/${name}`);
  assert.equal(r.status, 200, r.text);
  return r.body as ServiceView;
}

const running = (ts: TaskView[]) =>
  ts.filter((t) => t.DesiredState === "running" && t.Status.State === "running");

/** The addresses the embedded DNS gives a container for `name`, in the order given. */
function resolve(lab: TestLab, host: string, container: string, name: string): string[] {
  const r = lab.ctnet(host, ["exec", container, "busybox", "nslookup", name, "127.0.0.11"]);
  return [...r.stdout.matchAll(/^Address:\s+(\d+\.\d+\.\d+\.\d+)$/gm)].map((m) => m[1] as string);
}

/** A task's address on a network, from its NetworksAttachments. */
function addressOn(t: TaskView, networkId: string): string {
  const a = t.NetworksAttachments.find((n) => n.Network.ID === networkId)?.Addresses[0] ?? "";
  return a.split("/")[0] ?? "";
}

/** Removes every service, then waits until no host runs a task container. */
async function removeServices(lab: TestLab, hosts: string[]): Promise<void> {
  const r = await lab.api(hosts[0] as string, "GET", "/services");
  if (r.status !== 200) return;
  for (const s of r.body as ServiceView[]) await lab.api(hosts[0] as string, "DELETE", `/services/${s.ID}`);
  await waitFor("task containers gone", 30_000, async () => {
    for (const h of hosts) {
      const all = await lab.api(h, "GET", "/containers/json?all=1");
      if ((all.body as ContainerSummary[]).some((c) => c.Labels[TASK_ID])) return false;
    }
    return true;
  });
}

function etcdKeys(lab: TestLab): string[] {
  const addr = lab.host("host1").addr;
  const r = lab.exec("host1", [
    "etcdctl",
    `--endpoints=http://${addr}:2379`,
    "get",
    "--prefix",
    "/ctnet/",
    "--keys-only",
  ]);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split("\n").filter(Boolean);
}

describe("services on a one-host cluster", () => {
  let lab: TestLab;
  let mynet = "";

  before(async () => {
    lab = TestLab.up({ hosts: 1 });
    mynet = lab.ok("host1", ["network", "create", "-d", "overlay", "mynet"]);
    lab.ok("host1", ["run", "-d", "--name", "client", "--net", "mynet", "sleep", "1000"]);
  });
  after(async () => {
    if (!lab) return;
    try {
      await removeServices(lab, ["host1"]);
    } finally {
      lab.destroy();
    }
  });

  it("creates a service that ls, ps and inspect show, with ctnet and docker", async () => {
    const id = lab.ok("host1", [
      "service",
      "create",
      "--name",
      "web",
      "--network",
      "mynet",
      "--",
      "sleep",
      "1000",
    ]);
    assert.match(id, /^[0-9a-z]{25}$/);
    await waitFor("web runs", 10_000, async () => running(await tasks(lab, "host1", "web")).length === 1);
    assert.match(
      lab.ok("host1", ["service", "ls"]),
      new RegExp(`^${id.slice(0, 12)}\\s+web\\s+replicated\\s+1/1\\s`, "m"),
    );
    assert.match(
      lab.ok("host1", ["service", "ps", "web"]),
      /^\w{12}\s+web\.1\s+<none>\s+host1\s+Running\s+Running /m,
    );
    const s = await inspectService(lab, "host1", "web");
    assert.equal(s.ID, id);
    assert.deepEqual(s.Spec.Mode, { Replicated: { Replicas: 1 } });
    assert.equal(s.Endpoint.VirtualIPs?.[0]?.NetworkID, mynet);
    const [c] = await taskContainers(lab, "host1", "web");
    const [t] = await tasks(lab, "host1", "web");
    assert.equal(c?.Names[0], `/web.1.${t?.ID}`);
    assert.equal(c?.Labels[TASK_ID], t?.ID);
    assert.equal(t?.Status.ContainerStatus?.ContainerID, c?.Id);

    const docker = lab.docker("host1", ["service", "ls"]);
    assert.equal(docker.status, 0, docker.stderr);
    assert.match(docker.stdout, /\sweb\s+replicated\s+1\/1\s/);
    const ps = lab.docker("host1", ["service", "ps", "web"]);
    assert.equal(ps.status, 0, ps.stderr);
    assert.match(ps.stdout, /web\.1\s+host1\s+Running\s+Running/);
    const inspect = lab.docker("host1", [
      "service",
      "inspect",
      "-f",
      "{{.Spec.Name}} {{.Spec.Mode.Replicated.Replicas}}",
      "web",
    ]);
    assert.equal(inspect.stdout.trim(), "web 1", inspect.stderr);
  });

  it("runs a service from an image with the docker CLI", async () => {
    const imported = lab.exec("host1", ["sh", "-c", `${BUSYBOX_SCRIPT} | docker import - local/busybox`]);
    assert.equal(imported.status, 0, imported.stderr);
    const r = lab.docker("host1", [
      "service",
      "create",
      "-d",
      "--no-resolve-image",
      "--name",
      "dk",
      "--network",
      "mynet",
      "local/busybox",
      "sleep",
      "1000",
    ]);
    assert.equal(r.status, 0, r.stderr);
    await waitFor("dk runs", 10_000, async () => running(await tasks(lab, "host1", "dk")).length === 1);
    const scale = lab.docker("host1", ["service", "scale", "-d", "dk=2"]);
    assert.equal(scale.status, 0, scale.stderr);
    await waitFor("dk runs twice", 10_000, async () => running(await tasks(lab, "host1", "dk")).length === 2);
    assert.equal(lab.docker("host1", ["service", "rm", "dk"]).status, 0);
    await waitFor(
      "dk's containers go",
      15_000,
      async () => (await taskContainers(lab, "host1", "dk")).length === 0,
    );
  });

  it("scales 1 → 3 → 1, starting and stopping containers", async () => {
    const before = (await taskContainers(lab, "host1", "web")).map((c) => c.Id);
    assert.match(lab.ok("host1", ["service", "scale", "web=3"]), /web scaled to 3/);
    await waitFor(
      "3 containers",
      10_000,
      async () => (await taskContainers(lab, "host1", "web")).length === 3,
    );
    await waitFor(
      "3 running tasks",
      10_000,
      async () => running(await tasks(lab, "host1", "web")).length === 3,
    );
    assert.deepEqual(
      (await tasks(lab, "host1", "web")).map((t) => t.Slot),
      [1, 2, 3],
    );
    const three = (await taskContainers(lab, "host1", "web")).map((c) => c.Id);
    assert.ok(
      before.every((id) => three.includes(id)),
      "the first task keeps running",
    );
    lab.ok("host1", ["service", "update", "--replicas", "1", "web"]);
    await waitFor(
      "1 container",
      15_000,
      async () => (await taskContainers(lab, "host1", "web")).length === 1,
    );
    await waitFor("1 task", 10_000, async () => (await tasks(lab, "host1", "web")).length === 1);
    assert.equal((await inspectService(lab, "host1", "web")).Version.Index, 3);
  });

  it("resolves NAME to the service's VIP and tasks.NAME to its tasks", async () => {
    lab.ok("host1", ["service", "scale", "web=2"]);
    await waitFor(
      "2 running tasks",
      10_000,
      async () => running(await tasks(lab, "host1", "web")).length === 2,
    );
    const vip = (await inspectService(lab, "host1", "web")).Endpoint.VirtualIPs?.[0]?.Addr.split("/")[0];
    assert.deepEqual(resolve(lab, "host1", "client", "web"), [vip]);
    const addrs = (await tasks(lab, "host1", "web")).map((t) => addressOn(t, mynet));
    assert.deepEqual(resolve(lab, "host1", "client", "tasks.web").sort(), addrs.sort());
    assert.ok(!addrs.includes(vip ?? ""));
  });

  it("resolves a dnsrr service's NAME to all its tasks, in rotating order", async () => {
    lab.ok("host1", [
      "service",
      "create",
      "--name",
      "rr",
      "--replicas",
      "3",
      "--network",
      "mynet",
      "--endpoint-mode",
      "dnsrr",
      "sleep",
      "1000",
    ]);
    await waitFor("rr runs", 10_000, async () => running(await tasks(lab, "host1", "rr")).length === 3);
    assert.equal((await inspectService(lab, "host1", "rr")).Endpoint.VirtualIPs, undefined);
    const addrs = (await tasks(lab, "host1", "rr")).map((t) => addressOn(t, mynet)).sort();
    const first = resolve(lab, "host1", "client", "rr");
    const second = resolve(lab, "host1", "client", "rr");
    assert.deepEqual([...first].sort(), addrs);
    assert.deepEqual([...second].sort(), addrs);
    assert.notEqual(first[0], second[0], "the list rotates between answers");
  });

  it("reports a task whose process dies and starts a new container for it", async () => {
    const [t] = await tasks(lab, "host1", "rr");
    const old = t?.Status.ContainerStatus?.ContainerID ?? "";
    const pid = Number(lab.ok("host1", ["inspect", "-f", "{{.State.Pid}}", old]));
    process.kill(pid, "SIGKILL");
    await waitFor("a new container runs the task", 15_000, async () => {
      const now = (await tasks(lab, "host1", "rr")).find((x) => x.ID === t?.ID);
      const id = now?.Status.ContainerStatus?.ContainerID;
      return now?.Status.State === "running" && id !== undefined && id !== old;
    });
    const containers = await taskContainers(lab, "host1", "rr");
    assert.equal(containers.length, 3);
    assert.ok(!containers.some((c) => c.Id === old), "the dead container is gone");
    assert.equal(containers.filter((c) => c.Labels[TASK_ID] === t?.ID).length, 1);
  });

  it("refuses bad requests clearly and changes nothing", async () => {
    const dup = lab.ctnet("host1", ["service", "create", "--name", "web", "sleep", "1"]);
    assert.notEqual(dup.status, 0);
    assert.match(dup.stderr, /service web already exists/);
    const dnsrrPort = lab.ctnet("host1", [
      "service",
      "create",
      "--endpoint-mode",
      "dnsrr",
      "-p",
      "8080:80",
      "sleep",
      "1",
    ]);
    assert.match(dnsrrPort.stderr, /ingress mode can't be used with dnsrr mode/);
    const local = lab.ctnet("host1", ["service", "create", "--network", "bridge", "sleep", "1"]);
    assert.match(local.stderr, /network bridge is local to this host/);
    const noCmd = await lab.api("host1", "POST", "/services/create", { Name: "nocmd" });
    assert.equal(noCmd.status, 400, noCmd.text);
    const limits = await lab.api("host1", "POST", "/services/create", {
      Name: "limited",
      TaskTemplate: { ContainerSpec: { Args: ["sleep", "1"] }, Resources: { Limits: { MemoryBytes: 1e8 } } },
    });
    assert.equal(limits.status, 501, limits.text);
    assert.match(limits.text, /TaskTemplate\.Resources\.Limits\.MemoryBytes is not supported/);
    const global = await lab.api("host1", "POST", "/services/create", { Name: "g", Mode: { Global: {} } });
    assert.equal(global.status, 501, global.text);
    const s = await inspectService(lab, "host1", "web");
    const stale = await lab.api(
      "host1",
      "POST",
      `/services/web/update?version=${s.Version.Index - 1}`,
      s.Spec,
    );
    assert.equal(stale.status, 409, stale.text);
    const env = await lab.api("host1", "POST", `/services/web/update?version=${s.Version.Index}`, {
      ...s.Spec,
      TaskTemplate: { ContainerSpec: { Args: ["sleep", "1000"], Env: ["A=1"] } },
    });
    assert.equal(env.status, 501, env.text);
    const inUse = lab.ctnet("host1", ["network", "rm", "mynet"]);
    assert.notEqual(inUse.status, 0);
    const names = ((await lab.api("host1", "GET", "/services")).body as { Spec: { Name: string } }[]).map(
      (x) => x.Spec.Name,
    );
    assert.deepEqual(names.sort(), ["rr", "web"]);
    assert.equal((await inspectService(lab, "host1", "web")).Version.Index, s.Version.Index);
  });

  it("answers 503 telling to form a cluster once the host has left it", async () => {
    await removeServices(lab, ["host1"]);
    lab.ok("host1", ["rm", "-f", "client"]);
    lab.ok("host1", ["network", "rm", "mynet"]);
    lab.ok("host1", ["cluster", "leave"]);
    const r = await lab.api("host1", "GET", "/services");
    assert.equal(r.status, 503, r.text);
    const cli = lab.ctnet("host1", ["service", "ls"]);
    assert.notEqual(cli.status, 0);
    assert.match(cli.stderr, /not in a cluster: .*ctnet cluster init/);
  });
});

describe("services across three hosts", () => {
  const HOSTS = ["host1", "host2", "host3"];
  let lab: TestLab;
  let mynet = "";
  let outside: LabMachine;

  before(async () => {
    lab = TestLab.up({ hosts: 3 });
    mynet = lab.ok("host1", ["network", "create", "-d", "overlay", "mynet"]);
    lab.ok("host1", ["run", "-d", "--name", "client", "--net", "mynet", "sleep", "1000"]);
    outside = lab.machine("outside");
  });
  after(async () => {
    if (!lab) return;
    try {
      await removeServices(lab, HOSTS);
    } finally {
      lab.destroy();
    }
  });

  it("spreads the replicas over the hosts", async () => {
    lab.ok("host2", [
      "service",
      "create",
      "--name",
      "web",
      "--replicas",
      "3",
      "--network",
      "mynet",
      "sleep",
      "1000",
    ]);
    await waitFor("web runs", 15_000, async () => running(await tasks(lab, "host1", "web")).length === 3);
    assert.deepEqual((await tasks(lab, "host1", "web")).map((t) => t.NodeID).sort(), HOSTS);
    for (const h of HOSTS) assert.equal((await taskContainers(lab, h, "web")).length, 1, `one task on ${h}`);
  });

  it("lists the tasks of every host under tasks.NAME", async () => {
    const addrs = (await tasks(lab, "host1", "web")).map((t) => addressOn(t, mynet)).sort();
    assert.equal(addrs.length, 3);
    assert.deepEqual(resolve(lab, "host1", "client", "tasks.web").sort(), addrs);
    const vip = (await inspectService(lab, "host3", "web")).Endpoint.VirtualIPs?.[0]?.Addr.split("/")[0];
    assert.deepEqual(resolve(lab, "host1", "client", "web"), [vip]);
  });

  it("publishes a host-mode port only where a task runs, and keeps a fourth task pending", async () => {
    lab.ok("host1", [
      "service",
      "create",
      "--name",
      "hm",
      "--replicas",
      "2",
      "--publish",
      "mode=host,published=8081,target=80",
      "busybox",
      "httpd",
      "-f",
      "-p",
      "80",
    ]);
    await waitFor("hm runs", 15_000, async () => running(await tasks(lab, "host1", "hm")).length === 2);
    const on = new Set((await tasks(lab, "host1", "hm")).map((t) => t.NodeID));
    const answers = (h: string) =>
      outside.exec([
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "2",
        `http://${lab.host(h).addr}:8081/`,
      ]).stdout;
    for (const h of HOSTS) {
      if (on.has(h)) assert.match(answers(h), /^[1-5]\d\d$/, `${h} runs a task and answers`);
      else assert.equal(answers(h), "000", `${h} runs no task and does not answer`);
    }
    lab.ok("host1", ["service", "scale", "hm=4"]);
    await waitFor("3 run, 1 waits", 15_000, async () => {
      const ts = await tasks(lab, "host1", "hm");
      return running(ts).length === 3 && ts.length === 4;
    });
    const pending = (await tasks(lab, "host1", "hm")).find((t) => t.Status.State === "pending");
    assert.equal(pending?.NodeID, undefined);
    assert.equal(pending?.Status.Err, "no suitable node (host-mode port already in use on 3 nodes)");
    assert.match(
      lab.ok("host1", ["service", "ps", "--no-trunc", "hm"]),
      /Pending .*"no suitable node \(host-mode port already in use on 3 nodes\)"/,
    );
    for (const h of HOSTS) assert.match(answers(h), /^[1-5]\d\d$/, `${h} answers`);
  });

  it("moves the tasks of a failed host, and its old containers go when it returns", async () => {
    const lost = (await tasks(lab, "host1", "web")).find((t) => t.NodeID === "host3");
    lab.stop("host3");
    await waitFor("web runs 3 tasks on host1 and host2", (LEASE_TTL + 10) * 1000, async () => {
      const ts = await tasks(lab, "host1", "web");
      return running(ts).length === 3 && ts.every((t) => t.NodeID !== "host3");
    });
    assert.ok(
      !(await tasks(lab, "host1", "web")).some((t) => t.ID === lost?.ID),
      "the lost task was replaced",
    );
    lab.start("host3");
    await waitFor(
      "host3's old web container goes",
      15_000,
      async () => (await taskContainers(lab, "host3", "web")).length === 0,
    );
  });

  it("removes a service's containers, tasks, statuses and VIPs everywhere", async () => {
    const s = await inspectService(lab, "host1", "web");
    const ids = (await tasks(lab, "host1", "web")).map((t) => t.ID);
    lab.ok("host3", ["service", "rm", "web"]);
    await waitFor("web's containers go", 20_000, async () => {
      for (const h of HOSTS) if ((await taskContainers(lab, h, "web")).length > 0) return false;
      return true;
    });
    await waitFor("web's records go", 10_000, () => {
      const keys = etcdKeys(lab);
      return !keys.some(
        (k) => ids.some((id) => k.endsWith(`/${id}`)) || k.includes(s.ID) || k.endsWith("/web"),
      );
    });
    const keys = etcdKeys(lab);
    for (const v of s.Endpoint.VirtualIPs ?? [])
      assert.ok(
        !keys.includes(`/ctnet/addresses/${v.NetworkID}/${v.Addr.split("/")[0]}`),
        `VIP ${v.Addr} released`,
      );
    for (const h of HOSTS) {
      const r = await lab.api(h, "GET", "/services/web");
      assert.equal(r.status, 404, `${h}: ${r.text}`);
    }
  });
});
