import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ServiceRecord, TaskRecord, TaskStatus } from "../../src/cluster/types.js";
import { clientParts, lbModel } from "../../src/engine/service-lb.js";
import { InvalidParameterError } from "../../src/errors.js";
import {
  BUCKETS,
  clientElements,
  EMPTY,
  ingressElements,
  LbApplier,
  type LbElements,
  renderLbDiff,
  renderLbTable,
  renderLbTeardown,
  spread,
} from "../../src/firewall/lb.js";

const bounds = (range: string) => range.split("-").map(Number) as [number, number];

describe("bucket spread", () => {
  it("covers every bucket once, in contiguous ranges that differ by at most one bucket", () => {
    for (const n of [1, 2, 3, 7, 64, 1000]) {
      const backends = Array.from({ length: n }, (_, i) => `10.0.${i >> 8}.${i & 255}`);
      const ranges = spread(backends);
      assert.equal(ranges.length, n);
      let next = 0;
      const sizes = ranges.map(({ range }) => {
        const [from, to] = bounds(range);
        assert.equal(from, next);
        next = to + 1;
        return to - from + 1;
      });
      assert.equal(next, BUCKETS);
      assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `n=${n}`);
    }
  });

  it("is the same whatever order the backends come in, and ignores duplicates", () => {
    assert.deepEqual(spread(["10.0.0.3", "10.0.0.2", "10.0.0.3"]), spread(["10.0.0.2", "10.0.0.3"]));
    assert.deepEqual(spread(["10.0.0.2", "10.0.0.3"]), [
      { range: "0-511", backend: "10.0.0.2" },
      { range: "512-1023", backend: "10.0.0.3" },
    ]);
  });

  it("gives backends past the bucket count nothing rather than overlapping ranges", () => {
    const ranges = spread(["a", "b", "c"], 2);
    assert.deepEqual(
      ranges.map((r) => r.range),
      ["0-0", "1-1"],
    );
  });
});

describe("load balancer elements", () => {
  it("a client table lists each VIP and its buckets over its tasks; a VIP without tasks has no buckets", () => {
    const e = clientElements([
      { vip: "10.0.1.2", backends: ["10.0.1.5", "10.0.1.6"] },
      { vip: "10.0.1.3", backends: [] },
    ]);
    assert.deepEqual(e.vips, ["10.0.1.2", "10.0.1.3"]);
    assert.deepEqual(e.backends, ["10.0.1.2 . 0-511 : 10.0.1.5", "10.0.1.2 . 512-1023 : 10.0.1.6"]);
    assert.deepEqual(e.meshPorts, []);
    assert.deepEqual(e.mesh, []);
  });

  it("the ingress table maps proto . port . buckets to a task address and the target port", () => {
    const e = ingressElements([
      { proto: "tcp", port: 8080, target: 80, backends: ["10.255.0.7"] },
      { proto: "udp", port: 53, target: 5353, backends: [] },
    ]);
    assert.deepEqual(e.meshPorts, ["tcp . 8080", "udp . 53"]);
    assert.deepEqual(e.mesh, ["tcp . 8080 . 0-1023 : 10.255.0.7 . 80"]);
  });

  it("refuses what would be nft syntax rather than an address or a port", () => {
    assert.throws(() => clientElements([{ vip: "10.0.0.1 }", backends: [] }]), InvalidParameterError);
    assert.throws(() => clientElements([{ vip: "fd00::1", backends: [] }]), InvalidParameterError);
    assert.throws(() => clientElements([{ vip: "10.0.0.1", backends: ["x"] }]), InvalidParameterError);
    assert.throws(
      () => ingressElements([{ proto: "tcp", port: 0, target: 80, backends: [] }]),
      InvalidParameterError,
    );
    assert.throws(
      () => ingressElements([{ proto: "tcp", port: 80, target: 70000, backends: [] }]),
      InvalidParameterError,
    );
    assert.throws(
      () => ingressElements([{ proto: "sctp" as "tcp", port: 80, target: 80, backends: [] }]),
      InvalidParameterError,
    );
  });
});

describe("load balancer rendering", () => {
  const two = clientElements([{ vip: "10.0.1.2", backends: ["10.0.1.5", "10.0.1.6"] }]);
  const three = clientElements([{ vip: "10.0.1.2", backends: ["10.0.1.5", "10.0.1.6", "10.0.1.7"] }]);

  it("a full table replaces any previous copy, then adds every element", () => {
    const text = renderLbTable("client", [two]);
    assert.ok(text.startsWith("table ip ctnet_lb\ndelete table ip ctnet_lb\ntable ip ctnet_lb {"));
    assert.match(text, /type nat hook output priority -100/);
    assert.match(text, /numgen random mod 1024 dnat ip to ip daddr \. meta mark map @backends/);
    assert.match(text, /ip daddr @vips reject/);
    assert.match(text, /add element ip ctnet_lb vips \{ 10\.0\.1\.2 \}\n/);
    assert.match(text, /add element ip ctnet_lb backends \{ 10\.0\.1\.2 \. 0-511 : 10\.0\.1\.5, /);
    const ingress = renderLbTable("ingress", [
      ingressElements([{ proto: "tcp", port: 8080, target: 80, backends: [] }]),
    ]);
    assert.match(ingress, /type nat hook prerouting priority dstnat/);
    assert.match(ingress, /ct status dnat masquerade/);
    assert.match(ingress, /add element ip ctnet_lb mesh_ports \{ tcp \. 8080 \}\n/);
    assert.doesNotMatch(ingress, /element ip ctnet_lb mesh \{/);
  });

  it("a diff deletes the moved ranges before adding the new ones, and is empty without changes", () => {
    const text = renderLbDiff(two, three);
    const lines = text.trim().split("\n");
    assert.equal(lines.length, 2);
    assert.match(
      lines[0] ?? "",
      /^delete element ip ctnet_lb backends \{ 10\.0\.1\.2 \. 0-511 : 10\.0\.1\.5, /,
    );
    assert.match(lines[1] ?? "", /^add element ip ctnet_lb backends \{ /);
    assert.match(lines[1] ?? "", /10\.0\.1\.2 \. 682-1023 : 10\.0\.1\.7/);
    assert.equal(renderLbDiff(two, two), "");
    assert.equal(
      renderLbDiff(two, EMPTY),
      "delete element ip ctnet_lb vips { 10.0.1.2 }\n" +
        `delete element ip ctnet_lb backends { ${two.backends.join(", ")} }\n`,
    );
  });

  it("teardown deletes the table whether or not it exists", () => {
    assert.equal(renderLbTeardown(), "table ip ctnet_lb\ndelete table ip ctnet_lb\n");
  });
});

describe("load balancer applier", () => {
  function recorder(fail?: (text: string) => boolean) {
    const sent: { ns: string; text: string }[] = [];
    const applier = new LbApplier((text, ns) => {
      if (fail?.(text)) throw new Error("nft failed");
      sent.push({ ns, text });
    });
    return { sent, applier };
  }
  const a = clientElements([{ vip: "10.0.1.2", backends: ["10.0.1.5"] }]);
  const a2 = clientElements([{ vip: "10.0.1.2", backends: ["10.0.1.5", "10.0.1.6"] }]);
  const b = clientElements([{ vip: "10.0.2.2", backends: ["10.0.2.5"] }]);
  const parts = (entries: [string, LbElements][]) => new Map(entries);

  it("loads a new sandbox whole, then sends only the changed network's elements", () => {
    const { sent, applier } = recorder();
    applier.apply(
      "/ns/1",
      "client",
      parts([
        ["n1", a],
        ["n2", b],
      ]),
    );
    assert.equal(sent.length, 1);
    assert.match(sent[0]?.text ?? "", /^table ip ctnet_lb\ndelete table/);
    applier.apply(
      "/ns/1",
      "client",
      parts([
        ["n1", a2],
        ["n2", b],
      ]),
    );
    assert.equal(sent.length, 2);
    assert.doesNotMatch(sent[1]?.text ?? "", /10\.0\.2\./);
    assert.match(
      sent[1]?.text ?? "",
      /^delete element ip ctnet_lb backends \{ 10\.0\.1\.2 \. 0-1023 : 10\.0\.1\.5 \}/,
    );
  });

  it("sends nothing when every part is the object it had", () => {
    const { sent, applier } = recorder();
    applier.apply("/ns/1", "client", parts([["n1", a]]));
    applier.apply("/ns/1", "client", parts([["n1", a]]));
    assert.equal(sent.length, 1);
  });

  it("a network that goes takes its elements; no parts left removes the table", () => {
    const { sent, applier } = recorder();
    applier.apply(
      "/ns/1",
      "client",
      parts([
        ["n1", a],
        ["n2", b],
      ]),
    );
    applier.apply("/ns/1", "client", parts([["n1", a]]));
    assert.match(sent[1]?.text ?? "", /^delete element ip ctnet_lb vips \{ 10\.0\.2\.2 \}/);
    applier.apply("/ns/1", "client", new Map());
    assert.equal(sent[2]?.text, renderLbTeardown());
    assert.equal(applier.has("/ns/1"), false);
    applier.apply("/ns/1", "client", new Map());
    assert.equal(sent.length, 3);
  });

  it("after a failed change the next one replaces the table whole", () => {
    let failing = false;
    const { sent, applier } = recorder(() => failing);
    applier.apply("/ns/1", "client", parts([["n1", a]]));
    failing = true;
    assert.throws(() => applier.apply("/ns/1", "client", parts([["n1", a2]])), /nft failed/);
    assert.equal(applier.has("/ns/1"), false);
    failing = false;
    applier.apply("/ns/1", "client", parts([["n1", a2]]));
    assert.match(sent[1]?.text ?? "", /^table ip ctnet_lb\ndelete table/);
  });

  it("keeps sandboxes apart and forgets one without touching the kernel", () => {
    const { sent, applier } = recorder();
    applier.apply("/ns/1", "client", parts([["n1", a]]));
    applier.apply("/ns/2", "ingress", parts([["mesh", ingressElements([])]]));
    assert.deepEqual(applier.paths().sort(), ["/ns/1", "/ns/2"]);
    applier.forget("/ns/1");
    assert.deepEqual(applier.paths(), ["/ns/2"]);
    assert.equal(sent.length, 2);
    assert.match(sent[1]?.text ?? "", /hook prerouting/);
  });
});

describe("load balancer model", () => {
  const service = (o: Partial<ServiceRecord> & { id: string }): ServiceRecord => ({
    name: o.id,
    created: "",
    updated: "",
    version: 1,
    image: "",
    cmd: ["true"],
    env: [],
    labels: {},
    replicas: 1,
    networks: [],
    endpointMode: "vip",
    ports: [],
    vips: {},
    ...o,
  });
  const task = (id: string, serviceId: string, desired: TaskRecord["desired"] = "running"): TaskRecord => ({
    id,
    serviceId,
    slot: 1,
    host: "host1",
    desired,
    pending: "",
    created: "",
  });
  const status = (id: string, state: TaskStatus["state"], addresses: Record<string, string>): TaskStatus => ({
    id,
    host: "host1",
    state,
    message: "",
    containerId: `c-${id}`,
    addresses,
    updated: "",
  });

  it("counts only running tasks still meant to run, per network, and skips the ingress network's VIPs", () => {
    const web = service({
      id: "web",
      networks: ["net1", "ingress"],
      vips: { net1: "10.0.1.2/24", ingress: "10.255.0.2/16" },
      ports: [{ mode: "ingress", protocol: "tcp", published: 8080, target: 80 }],
    });
    const view = {
      services: new Map([
        ["web", web],
        ["rr", service({ id: "rr", endpointMode: "dnsrr", networks: ["net1"] })],
      ]),
      tasks: new Map([
        ["t1", task("t1", "web")],
        ["t2", task("t2", "web")],
        ["t3", task("t3", "web", "shutdown")],
        ["t4", task("t4", "web")],
      ]),
      taskStatuses: new Map([
        ["t1", status("t1", "running", { net1: "10.0.1.5", ingress: "10.255.0.5" })],
        ["t2", status("t2", "starting", { net1: "10.0.1.6", ingress: "10.255.0.6" })],
        ["t3", status("t3", "running", { net1: "10.0.1.7", ingress: "10.255.0.7" })],
        ["t9", status("t9", "running", { net1: "10.0.1.9" })],
      ]),
    };
    const model = lbModel(view, "ingress");
    assert.deepEqual(
      [...model.vips.entries()].map(([n, m]) => [n, [...m.entries()]]),
      [["net1", [["web", { vip: "10.0.1.2", backends: ["10.0.1.5"] }]]]],
    );
    assert.deepEqual(model.mesh, [
      { serviceId: "web", proto: "tcp", port: 8080, target: 80, backends: ["10.255.0.5"] },
    ]);
    assert.deepEqual(lbModel(view, undefined).mesh[0]?.backends, []);
  });
});

describe("client table parts", () => {
  const vips = (entries: [string, string, string[]][]) => {
    const m = new Map<string, Map<string, { vip: string; backends: string[] }>>();
    for (const [service, vip, backends] of entries) {
      const onNet = m.get("net1") ?? new Map();
      onNet.set(service, { vip, backends });
      m.set("net1", onNet);
    }
    return m;
  };

  it("keeps a service's part as the same object while its VIP and tasks stay, whatever else changes", () => {
    const first = clientParts(new Map(), vips([["a", "10.0.1.2", ["10.0.1.5", "10.0.1.6"]]]));
    const second = clientParts(
      first,
      vips([
        ["a", "10.0.1.2", ["10.0.1.6", "10.0.1.5"]],
        ["b", "10.0.1.3", ["10.0.1.7"]],
      ]),
    );
    assert.equal(second.get("net1")?.get("net1 a"), first.get("net1")?.get("net1 a"));
    assert.deepEqual(second.get("net1")?.get("net1 b")?.vips, ["10.0.1.3"]);
    const third = clientParts(
      second,
      vips([
        ["a", "10.0.1.2", ["10.0.1.5"]],
        ["b", "10.0.1.3", ["10.0.1.7"]],
      ]),
    );
    assert.notEqual(third.get("net1")?.get("net1 a"), second.get("net1")?.get("net1 a"));
    assert.equal(third.get("net1")?.get("net1 b"), second.get("net1")?.get("net1 b"));
  });
});
