/**
 * The netlink wrapper against the real kernel, in two namespaces made here: "host" holds a bridge
 * and the host end of a veth whose peer is created directly in "ctr" as eth0. Everything made here
 * lives in those namespaces and goes with them.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ConflictError, InvalidParameterError, NotFoundError } from "../../src/errors.js";
import { Netlink } from "../../src/kernel/netlink.js";
import { makeTestNetns, type TestNetns } from "../helpers/netns.js";

const MISSING_NS = "/run/netns/ctt-nl-missing";

/** The first packets can race neighbour resolution on a port that just came up. */
function ping(ns: TestNetns, ...args: string[]): void {
  let r = ns.exec(["ping", "-c1", "-W1", ...args]);
  for (let i = 0; i < 2 && r.status !== 0; i++) r = ns.exec(["ping", "-c1", "-W1", ...args]);
  assert.equal(r.status, 0, `ping ${args.join(" ")} from ${ns.name}: ${r.stdout}${r.stderr}`);
}

describe("kernel/netlink", () => {
  // Assigned in before(); after() must cope with before() having failed part-way.
  let hostNs: TestNetns;
  let ctrNs: TestNetns;
  let host: Netlink;
  let ctr: Netlink;
  let id: string;

  before(() => {
    hostNs = makeTestNetns("nl");
    ctrNs = makeTestNetns("nl");
    id = hostNs.name;
    host = Netlink.open(hostNs.path);
    ctr = Netlink.open(ctrNs.path);
  });

  after(() => {
    host?.close();
    ctr?.close();
    hostNs?.destroy();
    ctrNs?.destroy();
  });

  test("a socket opened in a namespace sees only that namespace", async () => {
    const names = (await host.listLinks()).map((l) => l.name);
    assert.deepEqual(names, ["lo"]);
    await assert.rejects(async () => Netlink.open(MISSING_NS), NotFoundError);
  });

  test("bridge with mtu, mac and alias", async () => {
    await host.createBridge({ name: "br-t", mtu: 1400, mac: "02:42:ac:11:00:01", alias: `ctnet:${id}` });
    const br = await host.getLink("br-t");
    assert.ok(br);
    assert.equal(br.kind, "bridge");
    assert.equal(br.alias, `ctnet:${id}`);
    assert.equal(br.mtu, 1400);
    assert.equal(br.mac, "02:42:ac:11:00:01");
    assert.equal(br.up, false);
  });

  test("veth with its peer created in another namespace, enslaved and up", async () => {
    await host.createVeth({
      name: "veth-t",
      peerName: "eth0",
      peerNetnsPath: ctrNs.path,
      mtu: 1400,
      peerMac: "02:42:ac:11:00:02",
      alias: `ctnet:${id}:ep`,
    });
    await host.setMaster("veth-t", "br-t");
    await host.setUp("veth-t");
    await host.setUp("br-t");

    const links = await host.listLinks();
    const br = links.find((l) => l.name === "br-t");
    const veth = links.find((l) => l.name === "veth-t");
    assert.ok(br && veth);
    assert.equal(veth.kind, "veth");
    assert.equal(veth.alias, `ctnet:${id}:ep`);
    assert.equal(veth.masterIndex, br.index);
    assert.equal(veth.mtu, 1400);
    assert.equal(veth.up, true);
    assert.equal(br.up, true);
    assert.equal(br.masterIndex, undefined);
    assert.equal(await host.getLink("eth0"), undefined, "the peer never appears in the host namespace");

    const eth0 = await ctr.getLink("eth0");
    assert.ok(eth0);
    assert.equal(eth0.kind, "veth");
    assert.equal(eth0.mac, "02:42:ac:11:00:02");
    assert.equal(eth0.mtu, 1400);
  });

  test("link attributes change in place", async () => {
    await ctr.setMtu("eth0", 1300);
    await ctr.setMac("eth0", "02:42:ac:11:00:03");
    await ctr.setAlias("eth0", "inside");
    await ctr.setUp("eth0");
    await ctr.setUp("lo");
    const eth0 = await ctr.getLink("eth0");
    assert.ok(eth0);
    assert.deepEqual([eth0.mtu, eth0.mac, eth0.alias, eth0.up], [1300, "02:42:ac:11:00:03", "inside", true]);
    await ctr.setMtu("eth0", 1400);
  });

  test("IPv4 and IPv6 addresses, default routes, traffic across the bridge", async () => {
    await host.addAddress("br-t", "10.213.0.1/24");
    await host.addAddress("br-t", "fd00:213::1/64", { noDad: true });
    await ctr.addAddress("eth0", "10.213.0.2/24");
    await ctr.addAddress("eth0", "fd00:213::2/64", { noDad: true });
    await ctr.addAddress("eth0", "10.213.0.2/24"); // already present is fine
    await ctr.addRoute({ dst: "default", gateway: "10.213.0.1" });
    await ctr.addRoute({ dst: "default", gateway: "fd00:213::1", dev: "eth0" });
    await ctr.addRoute({ dst: "default", gateway: "10.213.0.1" }); // exists is fine
    await host.addRoute({ dst: "10.214.0.0/16", dev: "br-t" });

    const addrs = await ctr.listAddresses("eth0");
    assert.ok(addrs.some((a) => a.cidr === "10.213.0.2/24" && a.family === 4 && a.ifname === "eth0"));
    assert.ok(addrs.some((a) => a.cidr === "fd00:213::2/64" && a.family === 6));
    assert.ok(!addrs.some((a) => a.ifname !== "eth0"));
    const all = await host.listAddresses();
    assert.ok(all.some((a) => a.ifname === "br-t" && a.cidr === "10.213.0.1/24"));
    assert.ok(all.some((a) => a.ifname === "br-t" && a.cidr === "fd00:213::1/64" && a.family === 6));
    assert.match(
      ctrNs.exec(["ip", "-6", "addr", "show", "dev", "eth0"]).stdout,
      /fd00:213::2\/64 scope global nodad/,
    );

    const v4 = await ctr.listRoutes(4);
    assert.ok(v4.some((r) => r.dst === "default" && r.gateway === "10.213.0.1" && r.dev === "eth0"));
    assert.ok(v4.some((r) => r.dst === "10.213.0.0/24" && r.dev === "eth0" && r.gateway === undefined));
    assert.ok(v4.every((r) => r.table === 254));
    const v6 = await ctr.listRoutes(6);
    assert.ok(v6.some((r) => r.dst === "default" && r.gateway === "fd00:213::1" && r.dev === "eth0"));
    assert.ok((await host.listRoutes(4)).some((r) => r.dst === "10.214.0.0/16" && r.dev === "br-t"));

    ping(ctrNs, "10.213.0.1");
    ping(ctrNs, "-6", "fd00:213::1");
    ping(hostNs, "10.213.0.2");
  });

  test("addresses and routes are removed, twice without error", async () => {
    for (let i = 0; i < 2; i++) {
      await host.delRoute({ dst: "10.214.0.0/16", dev: "br-t" });
      await ctr.delRoute({ dst: "default", family: 6 });
      await ctr.delAddress("eth0", "fd00:213::2/64");
    }
    assert.ok(!(await host.listRoutes(4)).some((r) => r.dst === "10.214.0.0/16"));
    assert.ok(!(await ctr.listRoutes(6)).some((r) => r.dst === "default"));
    assert.ok(!(await ctr.listAddresses("eth0")).some((a) => a.cidr === "fd00:213::2/64"));
    assert.ok(
      (await ctr.listRoutes(4)).some((r) => r.dst === "default"),
      "the IPv4 default route stays",
    );
  });

  test("errors are typed", async () => {
    await assert.rejects(host.createBridge({ name: "br-t" }), ConflictError);
    await assert.rejects(
      host.createVeth({ name: "veth-u", peerName: "eth0", peerNetnsPath: ctrNs.path }),
      ConflictError,
      "eth0 is taken in the target namespace",
    );
    assert.equal(await host.getLink("veth-u"), undefined);
    await assert.rejects(host.setUp("nope0"), NotFoundError);
    await assert.rejects(host.setMaster("veth-t", "nope0"), NotFoundError);
    await assert.rejects(host.addAddress("nope0", "10.0.0.1/24"), NotFoundError);
    await assert.rejects(
      host.createVeth({ name: "veth-u", peerName: "x", peerNetnsPath: MISSING_NS }),
      NotFoundError,
    );
    await assert.rejects(host.createBridge({ name: "a-name-too-long-for-linux" }), InvalidParameterError);
    await assert.rejects(host.addAddress("br-t", "10.0.0.1"), InvalidParameterError);
    await assert.rejects(host.addAddress("br-t", "10/8"), InvalidParameterError);
    await assert.rejects(host.setMac("br-t", "01:00:5e:00:00:01"), InvalidParameterError);
    await assert.rejects(host.addRoute({ dst: "10.0.0.0/8", gateway: "fd00::1" }), InvalidParameterError);
    await host.deleteLink("nope0");
  });

  test("setMaster(null) detaches, deleteLink removes both veth ends", async () => {
    await host.setMaster("veth-t", null);
    assert.equal((await host.getLink("veth-t"))?.masterIndex, undefined);
    await host.setUp("veth-t", false);
    assert.equal((await host.getLink("veth-t"))?.up, false);

    await host.deleteLink("veth-t");
    await host.deleteLink("veth-t");
    assert.equal(await host.getLink("veth-t"), undefined);
    assert.equal(await ctr.getLink("eth0"), undefined);
    await host.deleteLink("br-t");
    assert.deepEqual(
      (await host.listLinks()).map((l) => l.name),
      ["lo"],
    );
  });
});
