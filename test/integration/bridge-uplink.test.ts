/**
 * Issue 8's bridge on a physical interface, the Docker guides' way: the user makes bridge brnet in
 * the host namespace and puts its uplink (a veth to a "switch" namespace holding the segment's
 * router and a second machine) on it; the network adopts brnet, addresses containers from the
 * segment's subnet without NAT and routes them through the router (DefaultGatewayIPv4), and its
 * removal leaves brnet, its uplink and its addresses as the user made them.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { TestDaemon } from "../helpers/daemon.js";
import { makeTestNetns, type TestNetns } from "../helpers/netns.js";

const SUBNET = "10.97.0.0/24";
const ROUTER = "10.97.0.1";
const MACHINE2 = "10.97.0.2";
const HOST_IP = "10.97.0.254";
/** An address behind the router (on the switch namespace's loopback): only reachable through it. */
const BEYOND = "10.98.0.1";
/** A machine on another link of the host, reached through the host's routing (where NAT would happen). */
const FAR = "10.100.0.1";
const HOST_WAN = "10.100.0.254";
const C1 = "10.97.0.130";
const C2 = "10.97.0.131";

function run(ns: TestNetns, cmd: string[]): string {
  const r = ns.exec(cmd);
  assert.equal(r.status, 0, `${cmd.join(" ")} in ${ns.name}: ${r.stderr}`);
  return r.stdout;
}

describe("bridge network on an uplink (no NAT, external router)", () => {
  let d: TestDaemon;
  let sw: TestNetns;
  let machine2: TestNetns;
  let far: TestNetns;
  /** brnet as the user made it: its addresses, its ports other than containers', up or not. */
  let userBridge: string;

  const bridgeState = () => {
    const addresses = [...run(d.ns, ["ip", "-o", "addr", "show", "dev", "brnet"]).matchAll(/ (inet6? \S+)/g)]
      .map((m) => m[1])
      .sort();
    const ports = [...run(d.ns, ["ip", "-o", "link", "show", "master", "brnet"]).matchAll(/^\d+: ([^:@]+)/gm)]
      .map((m) => m[1])
      .filter((p) => !p?.startsWith("veth"));
    const flags = /<([^>]*)>/.exec(run(d.ns, ["ip", "-o", "link", "show", "brnet"]))?.[1];
    return `addresses ${addresses.join(", ")}; ports ${ports.join(", ")}; flags ${flags}`;
  };

  /** The first packets can race neighbour resolution on a port that just came up. */
  function pings(container: string, address: string): boolean {
    for (let i = 0; i < 3; i++)
      if (d.exec(container, ["ping", "-c1", "-W1", address]).status === 0) return true;
    return false;
  }

  /** The source address a TCP listener at `address` in `ns` sees when `container` connects to it. */
  async function sourceSeen(ns: TestNetns, address: string, container: string): Promise<string> {
    const listener = spawn("ip", [
      "netns",
      "exec",
      ns.name,
      "timeout",
      "10",
      "nc",
      "-n",
      "-l",
      "-v",
      address,
      "5000",
    ]);
    let err = "";
    const exited = new Promise((r) => listener.once("close", r));
    await new Promise<void>((resolve) => {
      listener.stderr.on("data", (b: Buffer) => {
        err += b.toString();
        if (err.includes("Listening on")) resolve();
      });
      listener.once("close", () => resolve());
    });
    const client = d.exec(container, ["nc", "-n", "-w", "2", "-N", address, "5000"]);
    await exited;
    assert.equal(client.status, 0, `${container} could not connect to ${address}: ${client.stderr}`);
    return /Connection received on (\S+)/.exec(err)?.[1] ?? `nothing (${err})`;
  }

  const networkNames = async () =>
    ((await d.api("GET", "/networks")).body as { Name: string }[]).map((n) => n.Name);

  before(async () => {
    d = await TestDaemon.start("brup");
    sw = makeTestNetns("brsw");
    machine2 = makeTestNetns("brm2");
    far = makeTestNetns("brfar");
    run(d.ns, ["ip", "link", "add", "uplink", "type", "veth", "peer", "name", "port0", "netns", sw.name]);
    run(sw, ["ip", "link", "set", "lo", "up"]);
    run(sw, ["ip", "addr", "add", `${BEYOND}/32`, "dev", "lo"]);
    run(sw, ["ip", "link", "add", "br0", "type", "bridge"]);
    run(sw, ["ip", "addr", "add", `${ROUTER}/24`, "dev", "br0"]);
    run(sw, ["ip", "link", "set", "br0", "up"]);
    run(sw, ["ip", "link", "set", "port0", "master", "br0", "up"]);
    run(sw, ["ip", "link", "add", "port1", "type", "veth", "peer", "name", "eth0", "netns", machine2.name]);
    run(sw, ["ip", "link", "set", "port1", "master", "br0", "up"]);
    run(machine2, ["ip", "link", "set", "lo", "up"]);
    run(machine2, ["ip", "addr", "add", `${MACHINE2}/24`, "dev", "eth0"]);
    run(machine2, ["ip", "link", "set", "eth0", "up"]);
    run(d.ns, ["ip", "link", "add", "wan", "type", "veth", "peer", "name", "eth0", "netns", far.name]);
    run(d.ns, ["ip", "addr", "add", `${HOST_WAN}/24`, "dev", "wan"]);
    run(d.ns, ["ip", "link", "set", "wan", "up"]);
    run(far, ["ip", "link", "set", "lo", "up"]);
    run(far, ["ip", "addr", "add", `${FAR}/24`, "dev", "eth0"]);
    run(far, ["ip", "link", "set", "eth0", "up"]);
    run(far, ["ip", "route", "add", SUBNET, "via", HOST_WAN]);
    // The user's part, as in Docker's guides: the bridge, the uplink on it, the host's address on it.
    run(d.ns, ["ip", "link", "add", "brnet", "type", "bridge"]);
    run(d.ns, ["ip", "link", "set", "uplink", "master", "brnet", "up"]);
    run(d.ns, ["ip", "addr", "add", `${HOST_IP}/24`, "dev", "brnet"]);
    run(d.ns, ["ip", "link", "set", "brnet", "up"]);
    userBridge = bridgeState();
  });

  after(async () => {
    try {
      await d?.destroy();
    } finally {
      far?.destroy();
      machine2?.destroy();
      sw?.destroy();
    }
  });

  it("adopts brnet: containers on the segment, routed by the external router, without NAT", async () => {
    const create = d.docker([
      "network",
      "create",
      "--subnet",
      SUBNET,
      "--ip-range",
      "10.97.0.128/25",
      "--gateway",
      HOST_IP,
      "--aux-address",
      `DefaultGatewayIPv4=${ROUTER}`,
      "-o",
      "com.docker.network.bridge.name=brnet",
      "-o",
      "com.docker.network.bridge.enable_ip_masquerade=false",
      "brnet",
    ]);
    assert.equal(create.status, 0, create.stderr);
    assert.equal(bridgeState(), userBridge, "creating the network changed the user's bridge");

    d.ok(["run", "-d", "--net", "brnet", "--ip", C1, "--name", "c1", "sleep", "1000"]);
    d.ok(["run", "-d", "--net", "brnet", "--ip", C2, "--name", "c2", "sleep", "1000"]);
    d.ok(["run", "-d", "--net", "brnet", "--name", "c3", "sleep", "1000"]);
    assert.equal(
      d.ok(["inspect", "-f", "{{.NetworkSettings.Networks.brnet.IPAddress}}", "c3"]),
      "10.97.0.128",
    );
    assert.match(run(d.ns, ["ip", "-o", "link", "show", "master", "brnet"]), /uplink/);

    for (const c of ["c1", "c2"]) {
      assert.match(
        d.exec(c, ["ip", "route", "show", "default"]).stdout,
        /^default via 10\.97\.0\.1 dev eth0/,
        `${c} does not route through the external router`,
      );
      assert.equal(d.ok(["inspect", "-f", `{{.NetworkSettings.Networks.brnet.Gateway}}`, c]), ROUTER);
    }
    assert.ok(pings("c1", C2), "c1 cannot reach c2");
    assert.ok(pings("c1", ROUTER), "c1 cannot reach the router");
    assert.ok(pings("c2", MACHINE2), "c2 cannot reach the second machine");
    assert.ok(pings("c2", BEYOND), "c2 cannot reach beyond the router");
    assert.equal(d.hostExec(["ping", "-c1", "-W1", C1]).status, 0, "the host cannot reach c1");

    assert.equal(await sourceSeen(machine2, MACHINE2, "c1"), C1, "the second machine saw another source");
    assert.equal(await sourceSeen(sw, BEYOND, "c2"), C2, "beyond the router, the source was translated");
    // Only traffic the host routes could be masqueraded: with enable_ip_masquerade=false it is not.
    const route = d.exec("c1", ["ip", "route", "add", "10.100.0.0/24", "via", HOST_IP]);
    assert.equal(route.status, 0, route.stderr);
    assert.equal(await sourceSeen(far, FAR, "c1"), C1, "traffic the host routed was masqueraded");
  });

  it("keeps brnet and the containers' network across a daemon restart", async () => {
    await d.kill();
    await d.spawnDaemon();
    assert.equal(bridgeState(), userBridge);
    assert.ok(pings("c1", MACHINE2), "c1 lost the segment after a restart");
    assert.ok(pings("c2", BEYOND), "c2 lost its route after a restart");
  });

  it("refuses bad input clearly and changes nothing", async () => {
    const links = () => run(d.ns, ["ip", "-o", "link"]).replace(/\\.*$/gm, "");
    const linksBefore = links();
    const base = {
      Name: "bad",
      Options: { "com.docker.network.bridge.name": "brnet2" },
      IPAM: { Config: [{ Subnet: "10.99.0.0/24", Gateway: "10.99.0.254" }] },
    };
    const cases: [string, Record<string, unknown>, number, RegExp][] = [
      [
        "DefaultGatewayIPv4 outside the subnet",
        {
          ...base,
          IPAM: {
            Config: [
              {
                Subnet: "10.99.0.0/24",
                Gateway: "10.99.0.254",
                AuxiliaryAddresses: { DefaultGatewayIPv4: ROUTER },
              },
            ],
          },
        },
        400,
        /DefaultGatewayIPv4.*10\.99\.0\.0\/24 doesn't contain/,
      ],
      [
        "DefaultGatewayIPv4 on the bridge's own address",
        {
          ...base,
          IPAM: {
            Config: [
              {
                Subnet: "10.99.0.0/24",
                Gateway: "10.99.0.254",
                AuxiliaryAddresses: { DefaultGatewayIPv4: "10.99.0.254" },
              },
            ],
          },
        },
        400,
        /DefaultGatewayIPv4.*already the gateway/,
      ],
      [
        "DefaultGatewayIPv4 in an IPv6 subnet",
        {
          ...base,
          EnableIPv6: true,
          IPAM: {
            Config: [
              { Subnet: "10.99.0.0/24" },
              { Subnet: "fd99::/64", AuxiliaryAddresses: { DefaultGatewayIPv4: "fd99::5" } },
            ],
          },
        },
        400,
        /DefaultGatewayIPv4: fd99::5 is in IPv6 subnet fd99::\/64; DefaultGatewayIPv4 must be an address of the network's IPv4 subnet/,
      ],
      [
        "a gateway outside the subnet",
        { ...base, IPAM: { Config: [{ Subnet: "10.99.0.0/24", Gateway: ROUTER }] } },
        400,
        /gateway 10\.97\.0\.1.*doesn't contain/,
      ],
      [
        "a bridge name that is another kind of interface",
        { ...base, Options: { "com.docker.network.bridge.name": "uplink" } },
        409,
        /uplink.*is not a bridge/,
      ],
      [
        "a bridge another network uses",
        { ...base, Options: { "com.docker.network.bridge.name": "brnet" } },
        409,
        /brnet is already used by network brnet/,
      ],
    ];
    for (const [what, body, status, message] of cases) {
      const r = await d.api("POST", "/networks/create", body);
      assert.equal(r.status, status, `${what}: ${r.text}`);
      assert.match((r.body as { message: string }).message, message, what);
      assert.ok(!(await networkNames()).includes("bad"), `${what}: the network was recorded`);
      assert.equal(bridgeState(), userBridge, `${what}: brnet changed`);
      assert.equal(links(), linksBefore, `${what}: links changed`);
    }
  });

  it("network rm leaves brnet, its uplink and its addresses in place", () => {
    d.ok(["rm", "-f", "c1", "c2", "c3"]);
    d.ok(["network", "rm", "brnet"]);
    assert.equal(bridgeState(), userBridge);
    assert.equal(d.hostExec(["ping", "-c1", "-W1", MACHINE2]).status, 0, "the host lost its segment");
  });

  it("adds a gateway address brnet lacks, and removes only that one", async () => {
    d.ok([
      "network",
      "create",
      "--subnet",
      SUBNET,
      "--ip-range",
      "10.97.0.128/25",
      "--gateway",
      "10.97.0.253",
      "-o",
      "com.docker.network.bridge.name=brnet",
      "brnet2",
    ]);
    const addresses = run(d.ns, ["ip", "-o", "-4", "addr", "show", "dev", "brnet"]);
    assert.match(addresses, /10\.97\.0\.254\/24/);
    assert.match(addresses, /10\.97\.0\.253\/24/);
    d.ok(["run", "-d", "--net", "brnet2", "--name", "c4", "sleep", "1000"]);
    assert.match(
      d.exec("c4", ["ip", "route", "show", "default"]).stdout,
      /^default via 10\.97\.0\.253 dev eth0/,
    );
    assert.ok(pings("c4", MACHINE2), "c4 cannot reach the second machine");
    assert.equal(
      await sourceSeen(far, FAR, "c4"),
      HOST_WAN,
      "with masquerading on (the default), c4 was not translated",
    );
    d.ok(["rm", "-f", "c4"]);
    d.ok(["network", "rm", "brnet2"]);
    assert.equal(bridgeState(), userBridge, "the address ctnet added is left, or the user's went");
  });

  it("routes IPv6 through DefaultGatewayIPv6", () => {
    run(sw, ["ip", "addr", "add", "fd97::1/64", "dev", "br0", "nodad"]);
    const create = d.docker([
      "network",
      "create",
      "--ipv6",
      "--subnet",
      SUBNET,
      "--gateway",
      HOST_IP,
      "--aux-address",
      `DefaultGatewayIPv4=${ROUTER}`,
      "--subnet",
      "fd97::/64",
      "--gateway",
      "fd97::fe",
      "--aux-address",
      "DefaultGatewayIPv6=fd97::1",
      "-o",
      "com.docker.network.bridge.name=brnet",
      "brnet6",
    ]);
    assert.equal(create.status, 0, create.stderr);
    assert.match(run(d.ns, ["ip", "-o", "-6", "addr", "show", "dev", "brnet"]), /fd97::fe\/64/);
    d.ok(["run", "-d", "--net", "brnet6", "--name", "c6", "sleep", "1000"]);
    assert.match(
      d.exec("c6", ["ip", "-6", "route", "show", "default"]).stdout,
      /^default via fd97::1 dev eth0/,
    );
    assert.equal(
      d.ok(["inspect", "-f", "{{.NetworkSettings.Networks.brnet6.IPv6Gateway}}", "c6"]),
      "fd97::1",
    );
    assert.ok(pings("c6", "fd97::1"), "c6 cannot reach the router over IPv6");
    d.ok(["rm", "-f", "c6"]);
    d.ok(["network", "rm", "brnet6"]);
    assert.equal(bridgeState(), userBridge, "the IPv6 address ctnet added is left, or the user's went");
  });
});
