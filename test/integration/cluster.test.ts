/**
 * The cluster's life cycle and its refusals, on two daemons joined by a veth: init, a second
 * host following the first one's etcd with --cluster-store, overlay networks with explicit VXLAN
 * ids and subnets, and every bad request answered clearly without changing anything.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { TestDaemon } from "../helpers/daemon.js";

const A = "100.64.250.1";
const B = "100.64.250.2";

function sh(d: TestDaemon, cmd: string[]): void {
  const r = d.hostExec(cmd);
  if (r.status !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr}`);
}

describe("cluster life cycle", () => {
  let a: TestDaemon;
  let b: TestDaemon | undefined;

  before(async () => {
    a = await TestDaemon.start("cla", ["--node-name", "alpha"]);
  });
  // b's veth pair goes with either namespace: a (the etcd member) goes first, b has left by then.
  after(async () => {
    await a?.destroy();
    await b?.destroy();
  });

  it("refuses global networks and cluster commands before a cluster exists", async () => {
    const r = await a.api("POST", "/networks/create", { Name: "ov", Driver: "overlay" });
    assert.equal(r.status, 501, r.text);
    assert.match(r.text, /need a cluster: run `ctnet cluster init`/);
    const leave = await a.api("POST", "/ctnet/cluster/leave");
    assert.equal(leave.status, 501, leave.text);
    assert.deepEqual((await a.api("GET", "/ctnet/cluster")).body, {
      NodeName: "alpha",
      Role: "none",
      Addr: "",
      Hosts: [],
    });
  });

  it("refuses an advertise address the host does not have", async () => {
    const r = await a.api("POST", "/ctnet/cluster/init", { AdvertiseAddr: "100.64.250.9" });
    assert.equal(r.status, 400, r.text);
    assert.match(r.text, /not an address of this host/);
    const bad = await a.api("POST", "/ctnet/cluster/init", { AdvertiseAddr: "not-an-ip" });
    assert.equal(bad.status, 400, bad.text);
    assert.equal(((await a.api("GET", "/ctnet/cluster")).body as { Role: string }).Role, "none");
  });

  it("initialises a cluster and lets a second host follow its etcd with --cluster-store", async () => {
    b = await TestDaemon.start("clb", ["--node-name", "beta"]);
    sh(a, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.ns.name]);
    sh(a, ["ip", "addr", "add", `${A}/24`, "dev", "eth0"]);
    sh(a, ["ip", "link", "set", "eth0", "up"]);
    sh(b, ["ip", "addr", "add", `${B}/24`, "dev", "eth0"]);
    sh(b, ["ip", "link", "set", "eth0", "up"]);
    assert.match(
      a.ok(["cluster", "init"]),
      new RegExp(`ctnet cluster join ${A.replaceAll(".", "\\.")}:2379`),
    );
    const again = await a.api("POST", "/ctnet/cluster/init", {});
    assert.equal(again.status, 409, again.text);

    await b.kill("SIGTERM");
    b.args = [...b.args, "--cluster-store", `etcd://${A}:2379`, "--advertise-addr", B];
    await b.spawnDaemon();
    const ls = a.ok(["cluster", "ls"]);
    assert.match(ls, /alpha \*\s+100\.64\.250\.1\s+member\s+ready/);
    assert.match(ls, /beta\s+100\.64\.250\.2\s+client\s+ready/);
  });

  it("validates overlay networks and never gives a VXLAN id or subnet twice", async () => {
    assert.ok(b);
    const create = (d: TestDaemon, body: object) =>
      d.api("POST", "/networks/create", { Driver: "overlay", ...body });
    const first = await create(a, {
      Name: "ov1",
      IPAM: { Config: [{ Subnet: "10.50.0.0/24" }] },
      Options: { "com.docker.network.driver.overlay.vxlanid_list": "5000" },
    });
    assert.equal(first.status, 201, first.text);
    const cases: [object, number, RegExp][] = [
      [{ Name: "ov1" }, 409, /already exists/],
      [
        { Name: "ov2", Options: { "com.docker.network.driver.overlay.vxlanid_list": "5000" } },
        403,
        /VXLAN id 5000/,
      ],
      [
        { Name: "ov2", Options: { "com.docker.network.driver.overlay.vxlanid_list": "x" } },
        400,
        /not a VXLAN id/,
      ],
      [{ Name: "ov2", IPAM: { Config: [{ Subnet: "10.50.0.128/25" }] } }, 403, /overlap/],
      [{ Name: "ov2", Options: { encrypted: "" } }, 501, /ESP/],
      [{ Name: "ov2", Options: { colour: "blue" } }, 400, /unknown option/],
    ];
    for (const [body, status, message] of cases) {
      const r = await create(b, body);
      assert.equal(r.status, status, `${JSON.stringify(body)}: ${r.text}`);
      assert.match(r.text, message);
    }
    const names = (d: TestDaemon) => d.ok(["network", "ls", "--format", "{{.Name}}"]).split("\n").sort();
    assert.deepEqual(names(b), ["bridge", "host", "none", "ov1"]);
    assert.deepEqual(names(a), ["bridge", "host", "none", "ov1"]);
    const second = await create(b, { Name: "ov2" });
    assert.equal(second.status, 201, second.text);
    const inspect = (await a.api("GET", "/networks/ov2")).body as {
      Options: Record<string, string>;
      IPAM: { Config: { Subnet: string }[] };
    };
    assert.equal(inspect.Options["com.docker.network.driver.overlay.vxlanid_list"], "4097");
    assert.match(inspect.IPAM.Config[0]?.Subnet ?? "", /^10\.0\.\d+\.0\/24$/);
  });

  it("refuses to leave while containers are on global networks, then leaves cleanly", async () => {
    assert.ok(b);
    b.ok(["run", "-d", "--name", "web", "--net", "ov1", "sleep", "1000"]);
    const busy = await b.api("POST", "/ctnet/cluster/leave");
    assert.equal(busy.status, 403, busy.text);
    assert.match(busy.text, /web/);
    b.ok(["rm", "-f", "web"]);
    b.ok(["cluster", "leave"]);
    // The gateway bridge stays, as Docker's docker_gwbridge does after a swarm leave.
    assert.deepEqual(b.ok(["network", "ls", "--format", "{{.Name}}"]).split("\n").sort(), [
      "bridge",
      "ctnet_gwbridge",
      "host",
      "none",
    ]);
    assert.doesNotMatch(a.ok(["cluster", "ls"]), /beta/);
  });
});
