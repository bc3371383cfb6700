/**
 * The macvlan and ipvlan drivers called directly, against the real kernel: a "host" namespace
 * whose uplink is a veth to a "switch" namespace holding the gateway, and sandboxes made here.
 * Runs without the engine, so it needs no registration of the drivers.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { SandboxHandle } from "../../src/drivers/driver.js";
import { IpvlanDriver } from "../../src/drivers/ipvlan/ipvlan.js";
import { MacvlanDriver } from "../../src/drivers/macvlan/macvlan.js";
import type { UnderlayContext } from "../../src/drivers/macvlan/underlay.js";
import type { EndpointRecord, NetworkRecord } from "../../src/engine/types.js";
import { ConflictError, InvalidParameterError, NotSupportedError } from "../../src/errors.js";
import { macFromIPv4 } from "../../src/ipam/index.js";
import { Netlink } from "../../src/kernel/netlink.js";
import { makeTestNetns, type TestNetns } from "../helpers/netns.js";

const SUBNET = "10.88.0.0/24";
const GATEWAY = "10.88.0.1";

function run(ns: TestNetns, cmd: string[]): string {
  const r = ns.exec(cmd);
  assert.equal(r.status, 0, `${cmd.join(" ")} in ${ns.name}: ${r.stderr}`);
  return r.stdout;
}

/** The first packets can race neighbour resolution on a link that just came up. */
function pings(ns: TestNetns, address: string): boolean {
  for (let i = 0; i < 3; i++) if (ns.exec(["ping", "-c1", "-W1", address]).status === 0) return true;
  return false;
}

const newId = () => randomBytes(32).toString("hex");

function network(o: Partial<NetworkRecord> & { options: Record<string, string> }): NetworkRecord {
  return {
    id: newId(),
    name: "mv",
    driver: "macvlan",
    scope: "local",
    created: new Date().toISOString(),
    internal: false,
    attachable: false,
    enableIPv4: true,
    enableIPv6: false,
    userSubnets: true,
    labels: {},
    ipamOptions: {},
    pools: [{ family: 4, subnet: SUBNET, gateway: GATEWAY, auxAddresses: {} }],
    predefined: false,
    ...o,
  };
}

describe("macvlan and ipvlan drivers", () => {
  let hostNs: TestNetns;
  let switchNs: TestNetns;
  let host: Netlink;
  const sandboxes: { ns: TestNetns; handle: SandboxHandle }[] = [];
  const sandboxOfEp = new Map<string, string>();
  const networks = new Map<string, NetworkRecord>();
  const ctx: UnderlayContext = {
    sandboxOf: (ep) => sandboxOfEp.get(ep.id),
    networks: () => networks.values(),
  };
  let macvlan: MacvlanDriver;
  let ipvlan: IpvlanDriver;

  before(() => {
    hostNs = makeTestNetns("mvd");
    switchNs = makeTestNetns("mvd");
    run(hostNs, [
      "ip",
      "link",
      "add",
      "uplink",
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      switchNs.name,
    ]);
    run(hostNs, ["ip", "addr", "add", "10.88.0.254/24", "dev", "uplink"]);
    run(hostNs, ["ip", "link", "set", "uplink", "up"]);
    run(switchNs, ["ip", "addr", "add", `${GATEWAY}/24`, "dev", "eth0"]);
    run(switchNs, ["ip", "link", "set", "eth0", "up"]);
    host = Netlink.open(hostNs.path);
    macvlan = new MacvlanDriver(host, ctx);
    ipvlan = new IpvlanDriver(host, ctx);
  });

  after(() => {
    host?.close();
    for (const s of sandboxes) {
      s.handle.netlink.close();
      s.ns.destroy();
    }
    switchNs?.destroy();
    hostNs?.destroy();
  });

  function sandbox(): { ns: TestNetns; handle: SandboxHandle } {
    const ns = makeTestNetns("mvd");
    const s = { ns, handle: { path: ns.path, netlink: Netlink.open(ns.path) } };
    sandboxes.push(s);
    return s;
  }

  function endpoint(net: NetworkRecord, sb: SandboxHandle, ipv4: string, ifname = "eth0"): EndpointRecord {
    const ep: EndpointRecord = {
      id: newId(),
      networkId: net.id,
      containerId: newId(),
      ifname,
      hostIfname: "unused",
      mac: macFromIPv4(ipv4),
      ipv4,
      aliases: [],
      order: 0,
    };
    sandboxOfEp.set(ep.id, sb.path);
    return ep;
  }

  async function create(
    driver: MacvlanDriver | IpvlanDriver,
    o: { options: Record<string, string>; internal?: boolean },
  ): Promise<NetworkRecord> {
    const id = newId();
    const v = driver.validate(
      { id, name: "n", options: o.options, internal: o.internal ?? false, enableIPv6: false },
      [...networks.values()],
    );
    const net = network({
      id,
      driver: driver.name,
      options: v.options,
      // as the engine does: the driver may make the network internal
      internal: (o.internal ?? false) || v.internal === true,
      ...(v.device ? { device: v.device } : {}),
    });
    await driver.createNetwork(net);
    networks.set(net.id, net);
    return net;
  }

  async function remove(driver: MacvlanDriver | IpvlanDriver, net: NetworkRecord): Promise<void> {
    networks.delete(net.id);
    await driver.deleteNetwork(net);
  }

  // Names only: a link's flags and carrier change by themselves (the uplink's peer coming up).
  const links = () =>
    run(hostNs, ["ip", "-o", "link"])
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => l.split(": ")[1])
      .join("\n");

  it("rejects unknown options, bad modes and lo, naming them", () => {
    const spec = (options: Record<string, string>) => ({
      id: newId(),
      name: "x",
      options,
      internal: false,
      enableIPv6: false,
    });
    assert.throws(
      () => macvlan.validate(spec({ parent: "uplink", vlan: "10", foo: "1" }), []),
      (e) => e instanceof InvalidParameterError && /vlan, foo/.test(e.message),
    );
    assert.throws(
      () => macvlan.validate(spec({ macvlan_mode: "nat" }), []),
      (e) => e instanceof InvalidParameterError && /'nat' is not valid/.test(e.message),
    );
    assert.throws(() => macvlan.validate(spec({ parent: "lo" }), []), /loopback/);
    assert.throws(
      () => ipvlan.validate(spec({ ipvlan_mode: "l4" }), []),
      (e) => e instanceof InvalidParameterError && /'l4'/.test(e.message),
    );
    assert.deepEqual(macvlan.validate(spec({ parent: "uplink" }), []), { options: { parent: "uplink" } });
    assert.equal(macvlan.validate(spec({}), []).internal, true, "a network without a parent is internal");
    assert.equal(ipvlan.validate(spec({}), []).internal, true, "a network without a parent is internal");
  });

  it("puts endpoints on the parent's segment with their own MACs, unreachable from the host", async () => {
    const before = links();
    const net = await create(macvlan, { options: { parent: "uplink" } });
    assert.equal(links(), before, "a macvlan network on an existing parent makes no link");
    const a = sandbox();
    const b = sandbox();
    const epA = endpoint(net, a.handle, "10.88.0.10");
    const epB = endpoint(net, b.handle, "10.88.0.11");
    await macvlan.join(net, epA, a.handle, true);
    await macvlan.join(net, epB, b.handle, true);
    assert.equal(links(), before, "endpoints live only in their sandboxes");

    assert.match(run(a.ns, ["ip", "-o", "link", "show", "eth0"]), /02:42:0a:58:00:0a/);
    assert.match(run(a.ns, ["ip", "-o", "-4", "addr", "show", "eth0"]), /10\.88\.0\.10\/24/);
    assert.match(run(a.ns, ["ip", "route", "show", "default"]), /default via 10\.88\.0\.1 dev eth0/);
    assert.ok(pings(a.ns, "10.88.0.11"), "a cannot reach b");
    assert.ok(pings(a.ns, GATEWAY), "a cannot reach the gateway");
    assert.ok(pings(b.ns, GATEWAY), "b cannot reach the gateway");
    const neigh = run(switchNs, ["ip", "neigh", "show", "dev", "eth0"]);
    assert.match(neigh, /10\.88\.0\.10 lladdr 02:42:0a:58:00:0a/);
    assert.match(neigh, /10\.88\.0\.11 lladdr 02:42:0a:58:00:0b/);
    assert.notEqual(
      hostNs.exec(["ping", "-c1", "-W1", "10.88.0.10"]).status,
      0,
      "the host reached a macvlan endpoint",
    );

    assert.equal(await macvlan.endpointPresent(net, epA), true);
    await macvlan.leave(net, epA);
    assert.doesNotMatch(run(a.ns, ["ip", "-o", "link"]), /eth0/);
    assert.equal(await macvlan.endpointPresent(net, epA), false);
    await macvlan.leave(net, epA);
    await macvlan.leave(net, epB);
    await remove(macvlan, net);
    assert.equal(links(), before);
  });

  it("gives an internal network no default route", async () => {
    const net = await create(macvlan, { options: { parent: "uplink" }, internal: true });
    const a = sandbox();
    const ep = endpoint(net, a.handle, "10.88.0.20");
    await macvlan.join(net, ep, a.handle, true);
    assert.equal(run(a.ns, ["ip", "route", "show", "default"]).trim(), "");
    assert.ok(pings(a.ns, GATEWAY), "the segment stays reachable");
    await macvlan.leave(net, ep);
    await remove(macvlan, net);
  });

  it("refuses passthru on a parent another macvlan network uses", async () => {
    const net = await create(macvlan, { options: { parent: "uplink" } });
    await assert.rejects(
      create(macvlan, { options: { parent: "uplink", macvlan_mode: "passthru" } }),
      (e) => e instanceof ConflictError && /already using parent interface uplink/.test(e.message),
    );
    await remove(macvlan, net);
  });

  it("without a parent, joins containers on a private parent only they share", async () => {
    const before = links();
    const net = await create(macvlan, { options: {} });
    assert.match(net.device ?? "", /^dm-[0-9a-f]{12}$/);
    const parent = await host.getLink(net.device ?? "");
    assert.equal(parent?.alias, `ctnet:net:${net.id}`);
    const a = sandbox();
    const b = sandbox();
    const epA = endpoint(net, a.handle, "10.88.0.30");
    const epB = endpoint(net, b.handle, "10.88.0.31");
    await macvlan.join(net, epA, a.handle, true);
    await macvlan.join(net, epB, b.handle, true);
    assert.ok(pings(a.ns, "10.88.0.31"), "containers on the private parent cannot reach each other");
    assert.equal(run(a.ns, ["ip", "route", "show", "default"]).trim(), "");
    assert.notEqual(a.ns.exec(["ping", "-c1", "-W1", GATEWAY]).status, 0, "the private parent leads outside");
    await macvlan.createNetwork(net);
    await remove(macvlan, net);
    assert.equal(await host.getLink(net.device ?? ""), undefined);
    assert.equal(links().split("\n").length, before.split("\n").length);
  });

  it("makes 802.1Q parents where the kernel has them, else fails naming CONFIG_VLAN_8021Q", async (t) => {
    const before = links();
    if (!(await host.hasLinkKind("vlan"))) {
      t.diagnostic("this kernel lacks 802.1Q: checking the failure");
      await assert.rejects(
        create(macvlan, { options: { parent: "uplink.10" } }),
        (e) => e instanceof NotSupportedError && /CONFIG_VLAN_8021Q/.test(e.message),
      );
      assert.equal(links(), before);
      return;
    }
    const net = await create(macvlan, { options: { parent: "uplink.10" } });
    assert.equal((await host.getLink("uplink.10"))?.alias, `ctnet:net:${net.id}`);
    const shared = await create(macvlan, { options: { parent: "uplink.10" } });
    await remove(macvlan, net);
    assert.equal((await host.getLink("uplink.10"))?.alias, `ctnet:net:${shared.id}`);
    await remove(macvlan, shared);
    assert.equal(links(), before);
  });

  it("runs ipvlan networks where the kernel has them, else fails naming CONFIG_IPVLAN", async (t) => {
    const before = links();
    if (!(await host.hasLinkKind("ipvlan"))) {
      t.diagnostic("this kernel lacks ipvlan: checking the failure");
      await assert.rejects(
        create(ipvlan, { options: { parent: "uplink" } }),
        (e) => e instanceof NotSupportedError && /CONFIG_IPVLAN/.test(e.message),
      );
      assert.equal(links(), before);
      return;
    }
    const net = await create(ipvlan, { options: { parent: "uplink", ipvlan_mode: "l2" } });
    const a = sandbox();
    const ep = endpoint(net, a.handle, "10.88.0.40");
    await ipvlan.join(net, ep, a.handle, true);
    assert.ok(pings(a.ns, GATEWAY), "an ipvlan l2 endpoint cannot reach the gateway");
    await ipvlan.leave(net, ep);
    await remove(ipvlan, net);
    const l3 = await create(ipvlan, { options: { parent: "uplink", ipvlan_mode: "l3" } });
    const b = sandbox();
    const ep3 = endpoint(l3, b.handle, "10.88.0.41");
    await ipvlan.join(l3, ep3, b.handle, true);
    assert.match(run(b.ns, ["ip", "route", "show", "default"]), /default dev eth0/);
    await ipvlan.leave(l3, ep3);
    await remove(ipvlan, l3);
    assert.equal(links(), before);
  });
});
