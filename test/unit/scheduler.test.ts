import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ServicePort, ServiceRecord, TaskRecord, TaskStatus } from "../../src/cluster/types.js";
import { noSuitableNode, type PlanInput, plan } from "../../src/engine/scheduler.js";

const NOW = "2026-01-01T00:00:00.000Z";

function service(id: string, replicas: number, ports: ServicePort[] = []): ServiceRecord {
  return {
    id,
    name: id,
    created: `2025-01-01T00:00:0${id.length}.000Z`,
    updated: NOW,
    version: 1,
    image: "",
    cmd: ["sleep", "1000"],
    env: [],
    labels: {},
    replicas,
    networks: [],
    endpointMode: "vip",
    ports,
    vips: {},
  };
}

function task(id: string, serviceId: string, slot: number, host: string, desired = "running"): TaskRecord {
  return {
    id,
    serviceId,
    slot,
    host,
    desired: desired as TaskRecord["desired"],
    pending: "",
    created: NOW,
  };
}

function status(t: TaskRecord, state: TaskStatus["state"] = "running"): [string, TaskStatus] {
  return [
    t.id,
    { id: t.id, host: t.host, state, message: "", containerId: "c", addresses: {}, updated: NOW },
  ];
}

function run(o: Partial<PlanInput> & { hosts: string[]; services: ServiceRecord[] }) {
  let n = 0;
  return plan({
    tasks: [],
    statuses: new Map(),
    now: NOW,
    newId: () => `new${++n}`,
    ...o,
  });
}

/** host → slots of the service's running tasks there, from the tasks as they stand after a plan */
function layout(
  before: TaskRecord[],
  p: ReturnType<typeof plan>,
  serviceId: string,
): Record<string, number[]> {
  const all = new Map(before.map((t) => [t.id, t]));
  for (const id of p.remove) all.delete(id);
  for (const t of p.put) all.set(t.id, t);
  const out: Record<string, number[]> = {};
  for (const t of all.values()) {
    if (t.serviceId !== serviceId || t.desired !== "running") continue;
    const key = t.host || "(pending)";
    out[key] = [...(out[key] ?? []), t.slot].sort((a, b) => a - b);
  }
  return out;
}

const HOSTS = ["host1", "host2", "host3"];

describe("task placement", () => {
  it("creates one task per replica in slots 1..N, spread over the hosts", () => {
    const p = run({ hosts: HOSTS, services: [service("web", 3)] });
    assert.deepEqual(p.remove, []);
    assert.deepEqual(
      p.put.map((t) => [t.slot, t.host, t.desired, t.pending]),
      [
        [1, "host1", "running", ""],
        [2, "host2", "running", ""],
        [3, "host3", "running", ""],
      ],
    );
    assert.ok(p.put.every((t) => t.serviceId === "web" && t.created === NOW));
  });

  it("puts a new task where the service has fewest tasks, then where the host has fewest overall", () => {
    const tasks = [
      task("a1", "api", 1, "host1"),
      task("a2", "api", 2, "host1"),
      task("a3", "api", 3, "host2"),
      task("w1", "web", 1, "host1"),
    ];
    const p = run({ hosts: HOSTS, services: [service("api", 3), service("web", 3)], tasks });
    assert.deepEqual(layout(tasks, p, "web"), { host1: [1], host3: [2], host2: [3] });
  });

  it("orders hosts by name with numbers compared as numbers", () => {
    const p = run({ hosts: ["host10", "host2"], services: [service("web", 1)] });
    assert.equal(p.put[0]?.host, "host2");
  });

  it("changes nothing when every replica runs", () => {
    const tasks = [task("t1", "web", 1, "host1"), task("t2", "web", 2, "host2")];
    const p = run({
      hosts: HOSTS,
      services: [service("web", 2)],
      tasks,
      statuses: new Map(tasks.map((t) => status(t))),
    });
    assert.deepEqual(p, { put: [], remove: [] });
  });

  it("scales down from the host with most tasks of the service, highest slot first", () => {
    const tasks = [
      task("t1", "web", 1, "host1"),
      task("t2", "web", 2, "host2"),
      task("t3", "web", 3, "host1"),
      task("t4", "web", 4, "host3"),
    ];
    const statuses = new Map(tasks.map((t) => status(t)));
    const p = run({ hosts: HOSTS, services: [service("web", 2)], tasks, statuses });
    assert.deepEqual(
      p.put.map((t) => [t.id, t.desired]),
      [
        ["t3", "shutdown"],
        ["t4", "shutdown"],
      ],
    );
    assert.deepEqual(layout(tasks, p, "web"), { host1: [1], host2: [2] });
  });

  it("deletes a task at once when its host never reported it, and a shut-down one once its report is gone", () => {
    const tasks = [
      task("t1", "web", 1, "host1"),
      task("t2", "web", 2, "host2"),
      task("old", "web", 3, "host3", "shutdown"),
      task("stopping", "web", 4, "host3", "shutdown"),
    ];
    const statuses = new Map([status(tasks[0] as TaskRecord), status(tasks[3] as TaskRecord)]);
    const p = run({ hosts: HOSTS, services: [service("web", 1)], tasks, statuses });
    assert.deepEqual(p.put, []);
    assert.deepEqual(p.remove.sort(), ["old", "t2"]);
  });

  it("replaces the tasks of a host that is gone with new tasks in the same slots", () => {
    const tasks = [
      task("t1", "web", 1, "host1"),
      task("t2", "web", 2, "host2"),
      task("t3", "web", 3, "host3"),
    ];
    const statuses = new Map([status(tasks[0] as TaskRecord), status(tasks[1] as TaskRecord)]);
    const p = run({ hosts: ["host1", "host2"], services: [service("web", 3)], tasks, statuses });
    assert.deepEqual(p.remove, ["t3"]);
    assert.deepEqual(
      p.put.map((t) => [t.id, t.slot, t.host]),
      [["new1", 3, "host1"]],
    );
  });

  it("shuts down the tasks of a removed service", () => {
    const tasks = [
      task("t1", "gone", 1, "host1"),
      task("t2", "gone", 2, "host2"),
      task("t3", "gone", 3, "host1", "shutdown"),
    ];
    const p = run({ hosts: HOSTS, services: [], tasks, statuses: new Map([status(tasks[0] as TaskRecord)]) });
    assert.deepEqual(
      p.put.map((t) => [t.id, t.desired]),
      [["t1", "shutdown"]],
    );
    assert.deepEqual(p.remove.sort(), ["t2", "t3"]);
  });

  it("never puts two tasks publishing one host-mode port on a host, and says why one waits", () => {
    const ports: ServicePort[] = [{ mode: "host", protocol: "tcp", published: 8080, target: 80 }];
    const p = run({ hosts: HOSTS, services: [service("web", 4, ports)] });
    assert.deepEqual(layout([], p, "web"), { host1: [1], host2: [2], host3: [3], "(pending)": [4] });
    assert.equal(p.put.find((t) => t.slot === 4)?.pending, noSuitableNode(3));
    assert.equal(noSuitableNode(3), "no suitable node (host-mode port already in use on 3 nodes)");
    assert.equal(noSuitableNode(1), "no suitable node (host-mode port already in use on 1 node)");
  });

  it("counts host-mode ports of other services, but not other protocols or ports", () => {
    const tcp: ServicePort[] = [{ mode: "host", protocol: "tcp", published: 8080, target: 80 }];
    const udp: ServicePort[] = [{ mode: "host", protocol: "udp", published: 8080, target: 80 }];
    const tasks = [task("a1", "a", 1, "host1"), task("a2", "a", 2, "host2")];
    const p = run({
      hosts: HOSTS,
      services: [service("a", 2, tcp), service("bb", 2, tcp), service("ccc", 2, udp)],
      tasks,
    });
    assert.deepEqual(layout(tasks, p, "bb"), { host3: [1], "(pending)": [2] });
    assert.equal(p.put.find((t) => t.serviceId === "bb" && t.slot === 2)?.pending, noSuitableNode(3));
    assert.deepEqual(layout(tasks, p, "ccc"), { host1: [1], host2: [2] });
  });

  it("places a pending task once a host can take it, and drops pending tasks first on scale down", () => {
    const ports: ServicePort[] = [{ mode: "host", protocol: "tcp", published: 8080, target: 80 }];
    const pending = { ...task("t3", "web", 3, ""), pending: noSuitableNode(2) };
    const tasks = [task("t1", "web", 1, "host1"), task("t2", "web", 2, "host2"), pending];
    const placed = run({ hosts: HOSTS, services: [service("web", 3, ports)], tasks });
    assert.deepEqual(
      placed.put.map((t) => [t.id, t.host, t.pending]),
      [["t3", "host3", ""]],
    );
    const shrunk = run({ hosts: ["host1", "host2"], services: [service("web", 2, ports)], tasks });
    assert.deepEqual(shrunk, { put: [], remove: ["t3"] });
  });

  it("keeps tasks pending when no host is up", () => {
    const p = run({ hosts: [], services: [service("web", 2)] });
    assert.deepEqual(
      p.put.map((t) => [t.slot, t.host, t.pending]),
      [
        [1, "", "no suitable node"],
        [2, "", "no suitable node"],
      ],
    );
  });

  it("fills free slots from the lowest after a scale down left gaps", () => {
    const tasks = [task("t2", "web", 2, "host1")];
    const p = run({ hosts: HOSTS, services: [service("web", 3)], tasks });
    assert.deepEqual(
      p.put.map((t) => t.slot),
      [1, 3],
    );
  });
});
