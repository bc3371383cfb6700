/**
 * Overlay networks across a lab of three hosts on one cluster: a VXLAN network whose containers on
 * different hosts reach each other by name, with exactly the remote containers programmed on each
 * host; isolation between overlays; egress through the gateway bridge; a host that fails and comes
 * back; addresses never given twice when hosts run containers at the same time.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { LEASE_TTL } from "../../src/cluster/cluster.js";
import { TestLab } from "../helpers/lab.js";

interface Inspect {
  Id: string;
  NetworkSettings: { Networks: Record<string, { IPAddress: string; MacAddress: string }> };
}

/** The first packet can race neighbour resolution on links that just came up. */
function pings(lab: TestLab, host: string, container: string, target: string): boolean {
  for (let i = 0; i < 3; i++) {
    if (lab.ctnet(host, ["exec", container, "ping", "-c1", "-W1", target]).status === 0) return true;
  }
  return false;
}

/** `bridge fdb` entries a VXLAN device forwards to other hosts: "mac dst", sorted. */
function remoteEntries(lab: TestLab, host: string, vni: string): string[] {
  const r = lab.exec(host, ["bridge", "fdb", "show", "dev", `ctvx${vni}`]);
  if (r.status !== 0) return [];
  return r.stdout
    .split("\n")
    .map((l) => /^(\S+) dst (\S+) self permanent/.exec(l.trim()))
    .filter((m) => m !== null)
    .map((m) => `${m[1]} ${m[2]}`)
    .sort();
}

async function inspect(lab: TestLab, host: string, name: string): Promise<Inspect> {
  const r = await lab.api(host, "GET", `/containers/${name}/json`);
  assert.equal(r.status, 200, r.text);
  return r.body as Inspect;
}

async function waitFor(what: string, ms: number, check: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(100);
  }
}

describe("overlay networks across three hosts", () => {
  let lab: TestLab;
  let vni = "";

  before(() => {
    // Three etcd members: the cluster keeps its quorum when a host fails.
    lab = TestLab.up({ hosts: 3, members: 3 });
  });
  after(() => lab?.destroy());

  it("creates a global network that every host sees, with a VXLAN id", async () => {
    lab.ok("host1", ["network", "create", "-d", "overlay", "ov_net1"]);
    for (const host of ["host1", "host2", "host3"]) {
      const r = await lab.api(host, "GET", "/networks/ov_net1");
      assert.equal(r.status, 200, `${host}: ${r.text}`);
      const net = r.body as { Scope: string; Driver: string; Options: Record<string, string> };
      assert.equal(net.Scope, "global");
      assert.equal(net.Driver, "overlay");
      vni = net.Options["com.docker.network.driver.overlay.vxlanid_list"] ?? "";
    }
    assert.match(vni, /^\d+$/);
    const dup = lab.ctnet("host2", ["network", "create", "-d", "overlay", "ov_net1"]);
    assert.notEqual(dup.status, 0);
    assert.match(dup.stderr, /already exists/);
  });

  it("connects containers on different hosts, by name and by address", async () => {
    lab.ok("host1", ["run", "-d", "--name", "bbox1", "--net", "ov_net1", "sleep", "1000"]);
    lab.ok("host2", ["run", "-d", "--name", "bbox2", "--net", "ov_net1", "sleep", "1000"]);
    const ip1 = (await inspect(lab, "host1", "bbox1")).NetworkSettings.Networks.ov_net1?.IPAddress ?? "";
    assert.match(ip1, /^10\.0\.\d+\.\d+$/);
    assert.ok(pings(lab, "host2", "bbox2", "bbox1"), "bbox2 pings bbox1 by name");
    assert.ok(pings(lab, "host2", "bbox2", ip1), "bbox2 pings bbox1 by address");
    assert.ok(pings(lab, "host1", "bbox1", "bbox2.ov_net1"), "bbox1 pings bbox2.ov_net1");
  });

  it("names the hosts with containers on the network as its peers", async () => {
    const want = ["host1", "host2"].map((h) => ({ Name: h, IP: lab.host(h).addr }));
    for (const host of ["host1", "host3"]) {
      const r = await lab.api(host, "GET", "/networks/ov_net1");
      assert.deepEqual((r.body as { Peers?: unknown }).Peers, want, host);
    }
  });

  it("builds VXLAN devices with the VNI, port 4789 and the underlay MTU less 50", async () => {
    const link = lab.exec("host2", ["ip", "-d", "link", "show", `ctvx${vni}`]);
    assert.equal(link.status, 0, link.stderr);
    assert.match(link.stdout, new RegExp(`vxlan id ${vni} `));
    assert.match(link.stdout, /dstport 4789/);
    assert.match(link.stdout, /mtu 1450/);
    assert.match(link.stdout, /nolearning/);
    assert.match(lab.ctnet("host2", ["exec", "bbox2", "ip", "link", "show", "eth0"]).stdout, /mtu 1450/);
    assert.notEqual(
      lab.exec("host3", ["ip", "link", "show", `ctvx${vni}`]).status,
      0,
      "host3 has no container there",
    );
  });

  it("programs exactly the remote containers on each host", async () => {
    const b1 = (await inspect(lab, "host1", "bbox1")).NetworkSettings.Networks.ov_net1?.MacAddress;
    const b2 = (await inspect(lab, "host2", "bbox2")).NetworkSettings.Networks.ov_net1?.MacAddress;
    const addr = (h: string) => lab.host(h).addr;
    assert.deepEqual(remoteEntries(lab, "host1", vni), [`${b2} ${addr("host2")}`]);
    assert.deepEqual(remoteEntries(lab, "host2", vni), [`${b1} ${addr("host1")}`]);
    lab.ok("host3", ["run", "-d", "--name", "bbox3", "--net", "ov_net1", "sleep", "1000"]);
    const b3 = (await inspect(lab, "host3", "bbox3")).NetworkSettings.Networks.ov_net1?.MacAddress;
    assert.deepEqual(
      remoteEntries(lab, "host3", vni),
      [`${b1} ${addr("host1")}`, `${b2} ${addr("host2")}`].sort(),
    );
    await waitFor("host1 learns bbox3", 2000, () => remoteEntries(lab, "host1", vni).length === 2);
    lab.ok("host3", ["rm", "-f", "bbox3"]);
    await waitFor("host1 forgets bbox3", 2000, () => remoteEntries(lab, "host1", vni).length === 1);
    assert.ok(!remoteEntries(lab, "host1", vni).some((e) => e.startsWith(`${b3} `)));
    assert.notEqual(
      lab.exec("host3", ["ip", "link", "show", `ctvx${vni}`]).status,
      0,
      "host3's devices went with its last container",
    );
  });

  it("keeps two overlays apart, on other hosts and on the same host", async () => {
    lab.ok("host2", ["network", "create", "-d", "overlay", "ov_net2"]);
    lab.ok("host3", ["run", "-d", "--name", "other3", "--net", "ov_net2", "sleep", "1000"]);
    lab.ok("host1", ["run", "-d", "--name", "other1", "--net", "ov_net2", "sleep", "1000"]);
    const ip1 = (await inspect(lab, "host1", "bbox1")).NetworkSettings.Networks.ov_net1?.IPAddress ?? "";
    assert.ok(pings(lab, "host3", "other3", "other1"), "ov_net2 works across hosts");
    for (const [host, c] of [
      ["host3", "other3"],
      ["host1", "other1"],
    ] as const) {
      assert.notEqual(
        lab.ctnet(host, ["exec", c, "ping", "-c1", "-W1", ip1]).status,
        0,
        `${c} reaches bbox1`,
      );
      const dns = lab.ctnet(host, ["exec", c, "getent", "hosts", "bbox1"]);
      assert.notEqual(dns.status, 0, `${c} resolves bbox1: ${dns.stdout}`);
    }
    lab.ok("host3", ["rm", "-f", "other3"]);
    lab.ok("host1", ["rm", "-f", "other1"]);
    lab.ok("host1", ["network", "rm", "ov_net2"]);
  });

  it("reaches the outside through the gateway bridge", async () => {
    const internet = lab.machine("internet");
    const server: ChildProcess = spawn(
      "nsenter",
      [`--net=/run/netns/${internet.netns}`, "nc", "-l", "-k", "8080"],
      {
        stdio: ["pipe", "ignore", "ignore"],
      },
    );
    try {
      await sleep(200);
      const r = lab.ctnet("host1", ["exec", "bbox1", "nc", "-z", "-w", "2", internet.addr, "8080"]);
      assert.equal(r.status, 0, `bbox1 reaches the server: ${r.stderr}`);
      const routes = lab.ctnet("host1", ["exec", "bbox1", "ip", "route"]).stdout;
      assert.match(routes, /^default via 172\.\d+\.0\.1 dev eth1/m);
      const inspectNets = Object.keys((await inspect(lab, "host1", "bbox1")).NetworkSettings.Networks);
      assert.deepEqual(
        inspectNets,
        ["ov_net1"],
        "the gateway bridge endpoint is not one of the container's networks",
      );
    } finally {
      server.kill();
    }
  });

  it("refuses to remove a network that containers on another host use", () => {
    const r = lab.ctnet("host3", ["network", "rm", "ov_net1"]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /active endpoints \(.*bbox1 on host1/);
  });

  it("gives concurrent runs on three hosts distinct addresses", async () => {
    const runs = ["host1", "host2", "host3"].flatMap((host) =>
      Array.from({ length: 4 }, async (_, i) => {
        const name = `c-${host}-${i}`;
        const create = await lab.api(host, "POST", `/containers/create?name=${name}`, {
          Cmd: ["sleep", "1000"],
          HostConfig: { NetworkMode: "ov_net1" },
        });
        assert.equal(create.status, 201, create.text);
        const start = await lab.api(host, "POST", `/containers/${name}/start`);
        assert.equal(start.status, 204, start.text);
        return (await inspect(lab, host, name)).NetworkSettings.Networks.ov_net1?.IPAddress ?? "";
      }),
    );
    const ips = await Promise.all(runs);
    assert.equal(new Set(ips).size, ips.length, `duplicate addresses: ${ips.sort().join(" ")}`);
    for (const host of ["host1", "host2", "host3"])
      for (let i = 0; i < 4; i++) lab.ok(host, ["rm", "-f", `c-${host}-${i}`]);
  });

  it("lets another host use a network the moment its create returned", async () => {
    for (let i = 0; i < 5; i++) {
      const net = `ov_new${i}`;
      const made = await lab.api("host1", "POST", "/networks/create", { Name: net, Driver: "overlay" });
      assert.equal(made.status, 201, made.text);
      // No wait for host3's watch: the create reads the store when the name is not known yet.
      const create = await lab.api("host3", "POST", `/containers/create?name=c-${net}`, {
        Cmd: ["sleep", "1000"],
        HostConfig: { NetworkMode: net },
      });
      assert.equal(create.status, 201, create.text);
      lab.ok("host3", ["rm", "-f", `c-${net}`]);
      lab.ok("host1", ["network", "rm", net]);
    }
    const unknown = await lab.api("host3", "POST", "/containers/create?name=c-none", {
      Cmd: ["sleep", "1000"],
      HostConfig: { NetworkMode: "ov_never_made" },
    });
    assert.equal(unknown.status, 404, unknown.text);
  });

  it("forgets a failed host's containers within the lease time, and takes them back when it returns", async () => {
    const b2 = (await inspect(lab, "host2", "bbox2")).NetworkSettings.Networks.ov_net1?.MacAddress ?? "";
    lab.stop("host2");
    await waitFor("host1 forgets host2's container", (LEASE_TTL + 2) * 1000, () =>
      remoteEntries(lab, "host1", vni).every((e) => !e.startsWith(`${b2} `)),
    );
    assert.match(lab.ok("host1", ["cluster", "ls"]), /host2\s+\S+\s+member\s+down/);
    assert.notEqual(lab.ctnet("host1", ["exec", "bbox1", "getent", "hosts", "bbox2"]).status, 0);
    lab.start("host2");
    await waitFor("host1 hears of bbox2 again", 5000, () =>
      remoteEntries(lab, "host1", vni).some((e) => e.startsWith(`${b2} `)),
    );
    assert.match(lab.ok("host1", ["cluster", "ls"]), /host2\s+\S+\s+member\s+ready/);
    assert.ok(pings(lab, "host1", "bbox1", "bbox2"), "bbox1 pings bbox2 after host2 returned");
  });
});
