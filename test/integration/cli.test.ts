/** The ctnet CLI's commands and output formats against a real daemon. */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { TestDaemon } from "../helpers/daemon.js";

describe("ctnet CLI", () => {
  let d: TestDaemon;
  before(async () => {
    d = await TestDaemon.start("cli");
  });
  after(async () => {
    await d?.destroy();
  });

  it("lists networks as docker does, with filters and formats", () => {
    d.ok(["network", "create", "--label", "team=blue", "--subnet", "10.90.0.0/24", "blue_net"]);
    d.ok(["network", "create", "--internal", "--subnet", "10.91.0.0/24", "red_net"]);
    const table = d.ok(["network", "ls"]).split("\n");
    assert.match(table[0] ?? "", /^NETWORK ID\s+NAME\s+DRIVER\s+SCOPE$/);
    assert.equal(table.length, 6);
    assert.deepEqual(d.ok(["network", "ls", "-f", "label=team=blue", "--format", "{{.Name}}"]).split("\n"), [
      "blue_net",
    ]);
    assert.deepEqual(
      d.ok(["network", "ls", "-f", "type=custom", "--format", "{{.Name}}"]).split("\n").sort(),
      ["blue_net", "red_net"],
    );
    const json = d
      .ok(["network", "ls", "--format", "json"])
      .split("\n")
      .map((l) => JSON.parse(l) as { Name: string });
    assert.equal(json.length, 5);
    assert.equal(d.ok(["network", "inspect", "-f", "{{.Internal}}", "red_net"]), "true");
    assert.equal(
      d.ok(["network", "inspect", "-f", "{{json .IPAM.Config}}", "blue_net"]),
      '[{"Subnet":"10.90.0.0/24","Gateway":"10.90.0.1"}]',
    );
  });

  it("prunes unused networks only", () => {
    d.ok(["run", "-d", "--name", "keeper", "--net", "blue_net", "sleep", "1000"]);
    const out = d.ok(["network", "prune", "-f"]);
    assert.match(out, /red_net/);
    assert.doesNotMatch(out, /blue_net/);
    assert.equal(d.cli(["network", "inspect", "red_net"]).status, 1);
  });

  it("gives a container on several networks one interface each, the default route via the first", () => {
    d.ok(["network", "create", "--subnet", "10.92.0.0/24", "second"]);
    d.ok(["run", "-d", "--name", "multi", "--net", "blue_net", "--net", "second", "sleep", "1000"]);
    const links = d.exec("multi", ["ip", "-o", "-4", "addr"]).stdout;
    assert.match(links, /eth0\s+inet 10\.90\.0\.\d+\/24/);
    assert.match(links, /eth1\s+inet 10\.92\.0\.\d+\/24/);
    assert.match(d.exec("multi", ["ip", "route", "show", "default"]).stdout, /via 10\.90\.0\.1 dev eth0/);
    // The gateway moves to the remaining network when the first is disconnected.
    d.ok(["network", "disconnect", "blue_net", "multi"]);
    assert.match(d.exec("multi", ["ip", "route", "show", "default"]).stdout, /via 10\.92\.0\.1 dev eth1/);
  });

  it("applies the MTU option to the bridge and the container's interface", () => {
    d.ok([
      "network",
      "create",
      "-o",
      "com.docker.network.driver.mtu=1400",
      "-o",
      "com.docker.network.bridge.name=mtu0",
      "mtu_net",
    ]);
    d.ok(["run", "-d", "--name", "mtu", "--net", "mtu_net", "sleep", "1000"]);
    assert.match(d.hostExec(["ip", "link", "show", "mtu0"]).stdout, /mtu 1400/);
    assert.match(d.exec("mtu", ["ip", "link", "show", "eth0"]).stdout, /mtu 1400/);
  });

  it("writes resolv.conf from --dns and the hostname from --hostname", () => {
    // On the default bridge (no embedded DNS) --dns servers go straight into resolv.conf.
    d.ok(["run", "-d", "--name", "plain", "--dns", "192.0.2.53", "sleep", "1000"]);
    assert.match(d.exec("plain", ["cat", "/etc/resolv.conf"]).stdout, /^nameserver 192\.0\.2\.53$/m);
    // On a user-defined network the embedded resolver is the nameserver (and forwards to --dns).
    d.ok([
      "run",
      "-d",
      "--name",
      "named",
      "--hostname",
      "alpha",
      "--dns",
      "192.0.2.53",
      "--net",
      "second",
      "sleep",
      "1000",
    ]);
    assert.match(d.exec("named", ["cat", "/etc/resolv.conf"]).stdout, /^nameserver 127\.0\.0\.11$/m);
    assert.equal(d.exec("named", ["hostname"]).stdout.trim(), "alpha");
    assert.match(d.exec("named", ["cat", "/etc/hosts"]).stdout, /10\.92\.0\.\d+\talpha/);
    assert.equal(d.exec("named", ["cat", "/etc/hostname"]).stdout.trim(), "alpha");
  });

  it("shows containers in ps and their output in logs", () => {
    d.ok([
      "run",
      "-d",
      "--name",
      "talker",
      "--net",
      "none",
      "sh",
      "-c",
      "echo one; echo two >&2; sleep 1000",
    ]);
    let logs = "";
    for (let i = 0; i < 50 && !logs.includes("two"); i++)
      logs = d.cli(["logs", "talker"]).stdout + d.cli(["logs", "talker"]).stderr;
    assert.match(logs, /one/);
    assert.match(logs, /two/);
    const ps = d.ok(["ps"]).split("\n");
    assert.match(ps[0] ?? "", /^CONTAINER ID\s+IMAGE\s+COMMAND\s+CREATED\s+STATUS\s+PORTS\s+NAMES$/);
    assert.ok(ps.some((l) => /talker$/.test(l) && /Up /.test(l)));
    d.ok(["stop", "-t", "1", "talker"]);
    assert.ok(!d.ok(["ps"]).includes("talker"));
    assert.match(d.ok(["ps", "-a", "--filter", "name=talker", "--format", "{{.Status}}"]), /^Exited \(\d+\)/);
    const inspect = JSON.parse(d.ok(["inspect", "talker"])) as { Name: string; State: { Status: string } }[];
    assert.equal(inspect[0]?.Name, "/talker");
    assert.equal(inspect[0]?.State.Status, "exited");
  });

  it("reports the kernel's features", () => {
    const out = d.ok(["check-config"]);
    for (const f of ["veth", "bridge", "vxlan", "macvlan"])
      assert.match(out, new RegExp(`${f}.*enabled`, "i"));
    for (const f of ["ipvlan", "ipvs", "wireguard"]) assert.match(out, new RegExp(`${f}.*missing`, "i"));
  });

  it("answers a clear error when the daemon is not there", () => {
    const r = d.cli(["-H", "unix:///nonexistent/ctnet.sock", "network", "ls"]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /cannot connect to the ctnet daemon/);
  });
});
