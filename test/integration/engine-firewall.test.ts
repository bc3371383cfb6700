/**
 * Firewall behaviour through the engine: masquerade to "the internet" (a namespace of the test's),
 * internal networks, ICC off. The outside namespace is joined to the daemon's host namespace by a
 * veth; nothing leaves the machine.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { TestDaemon } from "../helpers/daemon.js";
import type { TestNetns } from "../helpers/netns.js";

describe("firewall through the engine", () => {
  let d: TestDaemon;
  let outside: TestNetns;
  before(async () => {
    d = await TestDaemon.start("fw");
    outside = d.addNeighbour("out", "198.51.100.0/24").ns;
  });
  after(async () => {
    outside?.destroy();
    await d?.destroy();
  });

  it("masquerades traffic leaving a network", () => {
    d.ok(["network", "create", "--subnet", "10.70.0.0/24", "pub"]);
    d.ok(["run", "-d", "--name", "p1", "--net", "pub", "sleep", "1000"]);
    assert.equal(d.exec("p1", ["ping", "-c1", "-W2", "198.51.100.2"]).status, 0);
    // The outside host only knows the uplink's address: replies only come back if the source was rewritten.
    const conntrack = d.hostExec(["nft", "list", "table", "inet", "ctnet"]).stdout;
    assert.match(conntrack, /masquerade/);
  });

  it("internal networks reach nothing outside themselves", () => {
    d.ok(["network", "create", "--internal", "--subnet", "10.71.0.0/24", "priv"]);
    d.ok(["run", "-d", "--name", "i1", "--net", "priv", "sleep", "1000"]);
    d.ok(["run", "-d", "--name", "i2", "--net", "priv", "sleep", "1000"]);
    assert.equal(d.exec("i1", ["ip", "route", "show", "default"]).stdout.trim(), "");
    assert.notEqual(d.exec("i1", ["ping", "-c1", "-W1", "198.51.100.2"]).status, 0);
    assert.notEqual(d.exec("i1", ["ping", "-c1", "-W1", "10.70.0.2"]).status, 0);
    assert.equal(d.exec("i1", ["ping", "-c1", "-W2", "10.71.0.3"]).status, 0);
  });

  it("enable_icc=false blocks container-to-container traffic on that network only", () => {
    d.ok([
      "network",
      "create",
      "--subnet",
      "10.72.0.0/24",
      "-o",
      "com.docker.network.bridge.enable_icc=false",
      "noicc",
    ]);
    d.ok(["run", "-d", "--name", "n1", "--net", "noicc", "sleep", "1000"]);
    d.ok(["run", "-d", "--name", "n2", "--net", "noicc", "sleep", "1000"]);
    assert.notEqual(d.exec("n1", ["ping", "-c1", "-W1", "10.72.0.3"]).status, 0);
    assert.equal(d.exec("n1", ["ping", "-c1", "-W2", "198.51.100.2"]).status, 0);
  });

  it("enable_ip_masquerade=false leaves source addresses alone", () => {
    d.ok([
      "network",
      "create",
      "--subnet",
      "10.73.0.0/24",
      "-o",
      "com.docker.network.bridge.enable_ip_masquerade=false",
      "nomasq",
    ]);
    d.ok(["run", "-d", "--name", "m1", "--net", "nomasq", "sleep", "1000"]);
    // Without NAT the outside host has no route back to 10.73.0.0/24, so the ping gets no reply.
    assert.notEqual(d.exec("m1", ["ping", "-c1", "-W1", "198.51.100.2"]).status, 0);
    outside.exec(["ip", "route", "add", "10.73.0.0/24", "via", "198.51.100.1"]);
    assert.equal(d.exec("m1", ["ping", "-c1", "-W2", "198.51.100.2"]).status, 0);
  });

  it("gives dual-stack containers IPv6 addresses", () => {
    d.ok(["network", "create", "--ipv6", "--subnet", "10.74.0.0/24", "--subnet", "fd00:74::/64", "dual"]);
    d.ok(["run", "-d", "--name", "v1", "--net", "dual", "sleep", "1000"]);
    d.ok(["run", "-d", "--name", "v2", "--net", "dual", "--ip6", "fd00:74::99", "sleep", "1000"]);
    assert.equal(
      d.ok(["inspect", "-f", "{{.NetworkSettings.Networks.dual.GlobalIPv6Address}}", "v2"]),
      "fd00:74::99",
    );
    assert.equal(d.exec("v1", ["ping", "-6", "-c1", "-W2", "fd00:74::99"]).status, 0);
    assert.equal(d.exec("v1", ["ping", "-6", "-c1", "-W2", "fd00:74::1"]).status, 0);
    d.ok(["network", "create", "--ipv6", "v6default"]);
    const subnets = d.ok([
      "network",
      "inspect",
      "-f",
      "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
      "v6default",
    ]);
    assert.match(subnets, /^172\.\d+\.0\.0\/16 fd[0-9a-f:]+::\/64$/);
  });
});
