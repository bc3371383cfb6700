/**
 * Issue 2's scenario, as a new user would run it: a daemon in its own host namespace, a
 * user-defined bridge, containers with dynamic and static addresses, the other network modes.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { TestDaemon } from "../helpers/daemon.js";

describe("single-host bridge networking", () => {
  let d: TestDaemon;
  before(async () => {
    d = await TestDaemon.start("bridge");
  });
  after(async () => {
    await d?.destroy();
  });

  it("creates a bridge network and runs containers that reach each other", () => {
    const id = d.ok(["network", "create", "-d", "bridge", "--subnet", "10.0.0.0/24", "my_bridge"]);
    assert.match(id, /^[0-9a-f]{64}$/);
    d.ok(["run", "-d", "--name", "c2", "--net", "my_bridge", "sleep", "1000"]);
    d.ok(["run", "-d", "--name", "c3", "--net", "my_bridge", "--ip", "10.0.0.254", "sleep", "1000"]);

    const ping = d.exec("c2", ["ping", "-c1", "-W2", "10.0.0.254"]);
    assert.equal(ping.status, 0, ping.stdout + ping.stderr);

    assert.equal(
      d.ok(["inspect", "-f", "{{.NetworkSettings.Networks.my_bridge.IPAddress}}", "c3"]),
      "10.0.0.254",
    );
    const c2ip = d.ok(["inspect", "-f", "{{.NetworkSettings.Networks.my_bridge.IPAddress}}", "c2"]);
    assert.equal(c2ip, "10.0.0.2");
    // Docker derives the MAC from the IPv4 address.
    assert.equal(
      d.ok(["inspect", "-f", "{{.NetworkSettings.Networks.my_bridge.MacAddress}}", "c2"]),
      "02:42:0a:00:00:02",
    );

    const bridge = `br-${id.slice(0, 12)}`;
    const ports = d.hostExec(["ip", "-o", "link", "show", "master", bridge]).stdout.trim().split("\n");
    assert.equal(ports.length, 2, `bridge ${bridge} ports: ${ports.join("; ")}`);

    const inner = d.exec("c2", ["ip", "-o", "-4", "addr", "show", "eth0"]).stdout;
    assert.match(inner, /10\.0\.0\.2\/24/);
    const route = d.exec("c2", ["ip", "route", "show", "default"]).stdout;
    assert.match(route, /default via 10\.0\.0\.1 dev eth0/);
    assert.equal(
      d.exec("c2", ["hostname"]).stdout.trim(),
      d.ok(["inspect", "-f", "{{.Config.Hostname}}", "c2"]),
    );
    assert.match(d.exec("c2", ["cat", "/etc/hosts"]).stdout, /10\.0\.0\.2\s/);
  });

  it("isolates bridge networks from each other", () => {
    d.ok(["network", "create", "--subnet", "10.0.1.0/24", "other"]);
    d.ok(["run", "-d", "--name", "o1", "--net", "other", "sleep", "1000"]);
    const r = d.exec("o1", ["ping", "-c1", "-W1", "10.0.0.2"]);
    assert.notEqual(r.status, 0, "a container on another network reached c2");
    // ...but a container on both networks reaches both.
    d.ok(["network", "connect", "other", "c3"]);
    assert.equal(d.exec("c3", ["ping", "-c1", "-W2", "10.0.1.2"]).status, 0);
    assert.match(d.exec("c3", ["ip", "-o", "link"]).stdout, /eth1/);
    d.ok(["network", "disconnect", "other", "c3"]);
    assert.doesNotMatch(d.exec("c3", ["ip", "-o", "link"]).stdout, /eth1/);
    assert.equal(d.exec("c3", ["ping", "-c1", "-W2", "10.0.0.2"]).status, 0);
  });

  it("supports --net host, none and container:NAME", () => {
    d.ok(["run", "-d", "--name", "hc", "--net", "host", "sleep", "1000"]);
    assert.match(d.exec("hc", ["ip", "-o", "link"]).stdout, /ctnet0/);
    d.ok(["run", "-d", "--name", "nc", "--net", "none", "sleep", "1000"]);
    const links = d.exec("nc", ["ip", "-o", "link"]).stdout.trim().split("\n");
    assert.equal(links.length, 1);
    assert.match(links[0] ?? "", /: lo:/);
    d.ok(["run", "-d", "--name", "kc", "--net", "container:c2", "sleep", "1000"]);
    assert.match(d.exec("kc", ["ip", "-o", "-4", "addr"]).stdout, /10\.0\.0\.2\/24/);
  });

  it("refuses to remove a network in use and changes nothing", async () => {
    const before = d.hostExec(["ip", "-o", "link"]).stdout;
    const r = d.cli(["network", "rm", "my_bridge"]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /has active endpoints/);
    const api = await d.api("DELETE", "/networks/my_bridge");
    assert.equal(api.status, 403);
    assert.equal(d.hostExec(["ip", "-o", "link"]).stdout, before);
    assert.equal(d.exec("c2", ["ping", "-c1", "-W2", "10.0.0.254"]).status, 0);
  });

  it("stops and removes containers, returning their addresses", () => {
    d.ok(["rm", "-f", "kc"]);
    d.ok(["stop", "-t", "1", "c2"]);
    assert.equal(d.ok(["inspect", "-f", "{{.State.Status}}", "c2"]), "exited");
    const links = d.hostExec(["ip", "-o", "link"]).stdout;
    // The veth of c2 goes with its sandbox (the kernel removes it in the background).
    d.ok(["rm", "c2"]);
    d.ok(["run", "-d", "--name", "c4", "--net", "my_bridge", "sleep", "1000"]);
    assert.match(
      d.ok(["inspect", "-f", "{{.NetworkSettings.Networks.my_bridge.IPAddress}}", "c4"]),
      /^10\.0\.0\.\d+$/,
    );
    assert.ok(links.length > 0);
    assert.equal(d.ok(["ps", "-a", "-q", "--filter", "name=^c2$"]), "");
  });

  it("runs a foreground container and returns its exit code and output", () => {
    const r = d.cli(["run", "--rm", "--net", "my_bridge", "sh", "-c", "echo hello from $(hostname); exit 3"]);
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stdout, /hello from [0-9a-f]{12}/);
  });
});
