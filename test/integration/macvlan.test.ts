/**
 * Issue 8's underlay scenario through the daemon: the daemon's host namespace has an uplink, a
 * veth to a "switch" namespace whose bridge holds the gateway and a second machine; macvlan
 * networks on that uplink and without a parent; and, on kernels without 802.1Q or ipvlan, the
 * clear refusal of the features that need them.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Netlink } from "../../src/kernel/netlink.js";
import { TestDaemon } from "../helpers/daemon.js";
import { makeTestNetns, type TestNetns } from "../helpers/netns.js";

const GATEWAY = "10.89.0.1";
const MACHINE2 = "10.89.0.2";
const HOST_IP = "10.89.0.254";

/** Asked of the kernel once, in a namespace of its own, so that tests can say why they skip. */
async function kernelHas(kind: "vlan" | "ipvlan"): Promise<boolean> {
  const ns = makeTestNetns("mvk");
  const nl = Netlink.open(ns.path);
  try {
    return await nl.hasLinkKind(kind);
  } finally {
    nl.close();
    ns.destroy();
  }
}
const HAS_8021Q = await kernelHas("vlan");
const HAS_IPVLAN = await kernelHas("ipvlan");

function run(ns: TestNetns, cmd: string[]): string {
  const r = ns.exec(cmd);
  assert.equal(r.status, 0, `${cmd.join(" ")} in ${ns.name}: ${r.stderr}`);
  return r.stdout;
}

describe("macvlan networks", () => {
  let d: TestDaemon;
  let sw: TestNetns;
  let machine2: TestNetns;
  /** `ip -o link` of the daemon's namespace before any network, without the counters that change. */
  let baseline: string;
  const links = () =>
    run(d.ns, ["ip", "-o", "link"])
      .split("\n")
      .map((l) => l.replace(/\\.*$/, "").replace(/state \S+/, ""))
      .join("\n");

  /** The first packets can race neighbour resolution on a link that just came up. */
  function pings(container: string, address: string): boolean {
    for (let i = 0; i < 3; i++)
      if (d.exec(container, ["ping", "-c1", "-W1", address]).status === 0) return true;
    return false;
  }

  before(async () => {
    d = await TestDaemon.start("macvlan");
    sw = makeTestNetns("mvsw");
    machine2 = makeTestNetns("mvm2");
    run(d.ns, ["ip", "link", "add", "uplink", "type", "veth", "peer", "name", "port0", "netns", sw.name]);
    run(d.ns, ["ip", "addr", "add", `${HOST_IP}/24`, "dev", "uplink"]);
    run(d.ns, ["ip", "link", "set", "uplink", "up"]);
    run(sw, ["ip", "link", "add", "br0", "type", "bridge"]);
    run(sw, ["ip", "addr", "add", `${GATEWAY}/24`, "dev", "br0"]);
    run(sw, ["ip", "link", "set", "br0", "up"]);
    run(sw, ["ip", "link", "set", "port0", "master", "br0", "up"]);
    run(sw, ["ip", "link", "add", "port1", "type", "veth", "peer", "name", "eth0", "netns", machine2.name]);
    run(sw, ["ip", "link", "set", "port1", "master", "br0", "up"]);
    run(machine2, ["ip", "addr", "add", `${MACHINE2}/24`, "dev", "eth0"]);
    run(machine2, ["ip", "link", "set", "eth0", "up"]);
    baseline = links();
  });

  after(async () => {
    try {
      await d?.destroy();
    } finally {
      machine2?.destroy();
      sw?.destroy();
    }
  });

  it("puts containers on the uplink's segment with their own MACs, out of the host's reach", () => {
    d.ok([
      "network",
      "create",
      "-d",
      "macvlan",
      "--subnet",
      "10.89.0.0/24",
      "--gateway",
      GATEWAY,
      "--aux-address",
      `m2=${MACHINE2}`,
      "--aux-address",
      `host=${HOST_IP}`,
      "-o",
      "parent=uplink",
      "mv",
    ]);
    assert.equal(links(), baseline, "a macvlan network on an existing parent makes no link");
    d.ok(["run", "-d", "--net", "mv", "--ip", "10.89.0.10", "--name", "c1", "sleep", "1000"]);
    d.ok(["run", "-d", "--net", "mv", "--ip", "10.89.0.11", "--name", "c2", "sleep", "1000"]);
    assert.equal(links(), baseline, "endpoints live only in their sandboxes");

    assert.match(
      d.exec("c1", ["ip", "route", "show", "default"]).stdout,
      /default via 10\.89\.0\.1 dev eth0/,
    );
    assert.ok(pings("c1", "10.89.0.11"), "c1 cannot reach c2");
    assert.ok(pings("c1", GATEWAY), "c1 cannot reach the gateway");
    assert.ok(pings("c2", GATEWAY), "c2 cannot reach the gateway");
    assert.ok(pings("c2", MACHINE2), "c2 cannot reach the second machine");
    const neigh = run(sw, ["ip", "neigh", "show", "dev", "br0"]);
    const mac1 = /10\.89\.0\.10 lladdr (\S+)/.exec(neigh)?.[1];
    const mac2 = /10\.89\.0\.11 lladdr (\S+)/.exec(neigh)?.[1];
    assert.equal(mac1, "02:42:0a:59:00:0a", neigh);
    assert.equal(mac2, "02:42:0a:59:00:0b", neigh);
    assert.equal(d.ok(["inspect", "-f", "{{.NetworkSettings.Networks.mv.MacAddress}}", "c1"]), mac1);

    const fromHost = d.hostExec(["ping", "-c1", "-W1", "10.89.0.10"]);
    assert.notEqual(fromHost.status, 0, "the host reached c1 through its macvlan parent");
  });

  it("keeps --aux-address out of allocation and static requests", () => {
    d.ok(["run", "-d", "--net", "mv", "--name", "c3", "sleep", "1000"]);
    assert.equal(d.ok(["inspect", "-f", "{{.NetworkSettings.Networks.mv.IPAddress}}", "c3"]), "10.89.0.3");
    const taken = d.cli(["run", "-d", "--net", "mv", "--ip", MACHINE2, "--name", "c4", "sleep", "1000"]);
    assert.notEqual(taken.status, 0, "a container took an --aux-address");
    d.cli(["rm", "-f", "c4"]);
  });

  it("gives containers of an --internal network no default route", () => {
    d.ok([
      "network",
      "create",
      "-d",
      "macvlan",
      "--internal",
      "--subnet",
      "10.90.0.0/24",
      "-o",
      "parent=uplink",
      "mvi",
    ]);
    d.ok(["run", "-d", "--net", "mvi", "--name", "i1", "sleep", "1000"]);
    d.ok(["run", "-d", "--net", "mvi", "--name", "i2", "sleep", "1000"]);
    assert.equal(d.exec("i1", ["ip", "route", "show", "default"]).stdout.trim(), "");
    assert.ok(pings("i1", d.ok(["inspect", "-f", "{{.NetworkSettings.Networks.mvi.IPAddress}}", "i2"])));
    assert.notEqual(d.exec("i1", ["ping", "-c1", "-W1", GATEWAY]).status, 0);
  });

  it("connects and disconnects a running container", () => {
    d.ok(["network", "connect", "mvi", "c1"]);
    assert.match(d.exec("c1", ["ip", "-o", "-4", "addr", "show", "eth1"]).stdout, /10\.90\.0\.\d+\/24/);
    d.ok(["network", "disconnect", "mvi", "c1"]);
    assert.doesNotMatch(d.exec("c1", ["ip", "-o", "link"]).stdout, /eth1/);
    assert.ok(pings("c1", GATEWAY), "c1 lost the uplink network");
  });

  it("without a parent, connects containers of the host to each other only", () => {
    const id = d.ok(["network", "create", "-d", "macvlan", "--subnet", "10.91.0.0/24", "mvp"]);
    const parent = `dm-${id.slice(0, 12)}`;
    assert.match(run(d.ns, ["ip", "-o", "link", "show", parent]), new RegExp(`alias ctnet:net:${id}`));
    d.ok(["run", "-d", "--net", "mvp", "--ip", "10.91.0.10", "--name", "p1", "sleep", "1000"]);
    d.ok(["run", "-d", "--net", "mvp", "--ip", "10.91.0.11", "--name", "p2", "sleep", "1000"]);
    assert.ok(pings("p1", "10.91.0.11"), "p1 cannot reach p2");
    assert.equal(d.exec("p1", ["ip", "route", "show", "default"]).stdout.trim(), "");
    assert.equal(d.ok(["network", "inspect", "-f", "{{.Internal}}", "mvp"]), "true");

    // Internal as in Docker, so the default route comes from the container's next network.
    d.ok(["network", "create", "--subnet", "10.96.0.0/24", "brp"]);
    d.ok(["network", "connect", "brp", "p1"]);
    assert.match(
      d.exec("p1", ["ip", "route", "show", "default"]).stdout,
      /default via 10\.96\.0\.1 dev eth1/,
    );
    d.ok(["run", "-d", "--net", "mvp", "--name", "p3", "sleep", "1000"]);
    d.ok(["network", "connect", "brp", "p3"]);
    assert.match(
      d.exec("p3", ["ip", "route", "show", "default"]).stdout,
      /default via 10\.96\.0\.1 dev eth1/,
    );
    assert.equal(d.ok(["inspect", "-f", "{{.NetworkSettings.Networks.mvp.Gateway}}", "p3"]), "");
    d.ok(["rm", "-f", "p1", "p2", "p3"]);
    d.ok(["network", "rm", "mvp", "brp"]);
    assert.notEqual(d.hostExec(["ip", "link", "show", parent]).status, 0, `${parent} is left`);
  });

  it("removes its networks without a trace", () => {
    d.ok(["rm", "-f", "c1", "c2", "c3", "i1", "i2"]);
    d.ok(["network", "rm", "mv", "mvi"]);
    assert.equal(links(), baseline);
  });

  async function refused(body: Record<string, unknown>, option: string): Promise<void> {
    const r = await d.api("POST", "/networks/create", body);
    assert.equal(r.status, 501, r.text);
    assert.match(r.text, new RegExp(option));
    assert.equal(links(), baseline);
    const names = (await d.api("GET", "/networks")).body as { Name: string }[];
    assert.ok(!names.some((n) => n.Name === body.Name), "the refused network was recorded");
  }

  it("refuses -o parent=uplink.10, naming CONFIG_VLAN_8021Q", {
    skip: HAS_8021Q && "the kernel has 802.1Q: the VLAN test runs instead",
  }, async () => {
    const cli = d.cli([
      "network",
      "create",
      "-d",
      "macvlan",
      "--subnet",
      "10.92.0.0/24",
      "-o",
      "parent=uplink.10",
      "mv10",
    ]);
    assert.notEqual(cli.status, 0);
    assert.match(cli.stderr, /CONFIG_VLAN_8021Q/);
    await refused(
      {
        Name: "mv10",
        Driver: "macvlan",
        Options: { parent: "uplink.10" },
        IPAM: { Config: [{ Subnet: "10.92.0.0/24" }] },
      },
      "CONFIG_VLAN_8021Q",
    );
  });

  it("segments traffic by VLAN on parent=uplink.10 and uplink.20", {
    skip: !HAS_8021Q && "this kernel lacks 802.1Q (CONFIG_VLAN_8021Q)",
  }, () => {
    run(sw, ["ip", "link", "add", "link", "br0", "name", "br0.10", "type", "vlan", "id", "10"]);
    run(sw, ["ip", "addr", "add", "10.93.0.1/24", "dev", "br0.10"]);
    run(sw, ["ip", "link", "set", "br0.10", "up"]);
    try {
      d.ok([
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.93.0.0/24",
        "-o",
        "parent=uplink.10",
        "mv10",
      ]);
      d.ok([
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.94.0.0/24",
        "-o",
        "parent=uplink.20",
        "mv20",
      ]);
      assert.match(run(d.ns, ["ip", "-d", "link", "show", "uplink.10"]), /vlan protocol 802\.1Q id 10/);
      d.ok(["run", "-d", "--net", "mv10", "--ip", "10.93.0.10", "--name", "v10", "sleep", "1000"]);
      d.ok(["run", "-d", "--net", "mv20", "--ip", "10.94.0.10", "--name", "v20", "sleep", "1000"]);
      assert.ok(pings("v10", "10.93.0.1"), "VLAN 10 does not reach its gateway");
      assert.notEqual(
        d.exec("v20", ["ping", "-c1", "-W1", "10.93.0.1"]).status,
        0,
        "VLAN 20 reached VLAN 10",
      );
      d.ok(["rm", "-f", "v10", "v20"]);
      d.ok(["network", "rm", "mv10", "mv20"]);
      assert.equal(links(), baseline);
    } finally {
      sw.exec(["ip", "link", "del", "br0.10"]);
    }
  });

  it("refuses -d ipvlan, naming CONFIG_IPVLAN", {
    skip: HAS_IPVLAN && "the kernel has ipvlan: the ipvlan test runs instead",
  }, async () => {
    const cli = d.cli([
      "network",
      "create",
      "-d",
      "ipvlan",
      "--subnet",
      "10.95.0.0/24",
      "-o",
      "parent=uplink",
      "iv",
    ]);
    assert.notEqual(cli.status, 0);
    assert.match(cli.stderr, /CONFIG_IPVLAN/);
    await refused(
      {
        Name: "iv",
        Driver: "ipvlan",
        Options: { parent: "uplink" },
        IPAM: { Config: [{ Subnet: "10.95.0.0/24" }] },
      },
      "CONFIG_IPVLAN",
    );
  });

  it("runs ipvlan l2 networks on the uplink", {
    skip: !HAS_IPVLAN && "this kernel lacks ipvlan (CONFIG_IPVLAN)",
  }, () => {
    d.ok([
      "network",
      "create",
      "-d",
      "ipvlan",
      "--subnet",
      "10.89.0.0/24",
      "--gateway",
      GATEWAY,
      "--aux-address",
      `m2=${MACHINE2}`,
      "--aux-address",
      `host=${HOST_IP}`,
      "-o",
      "parent=uplink",
      "iv",
    ]);
    d.ok(["run", "-d", "--net", "iv", "--ip", "10.89.0.20", "--name", "iv1", "sleep", "1000"]);
    assert.ok(pings("iv1", GATEWAY), "an ipvlan container cannot reach the gateway");
    assert.ok(pings("iv1", MACHINE2), "an ipvlan container cannot reach the second machine");
    d.ok(["rm", "-f", "iv1"]);
    d.ok(["network", "rm", "iv"]);
    assert.equal(links(), baseline);
  });
});
