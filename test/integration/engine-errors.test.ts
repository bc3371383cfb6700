/**
 * Bad input gets Docker's status code and a clear message, and changes nothing: no link,
 * address, rule or record is left behind.
 */
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { TestDaemon } from "../helpers/daemon.js";

describe("bad input changes nothing", () => {
  let d: TestDaemon;
  before(async () => {
    d = await TestDaemon.start("errors");
    d.ok([
      "network",
      "create",
      "--subnet",
      "10.10.0.0/24",
      "--ip-range",
      "10.10.0.0/25",
      "--gateway",
      "10.10.0.1",
      "--aux-address",
      "printer=10.10.0.5",
      "net1",
    ]);
    d.ok(["run", "-d", "--name", "busy", "--net", "net1", "--ip", "10.10.0.20", "sleep", "1000"]);
  });
  after(async () => {
    await d?.destroy();
  });

  const snapshot = () => {
    const storeDirs = ["networks", "containers", "endpoints"].map((k) => {
      try {
        return readdirSync(join(d.dataRoot, "store", k))
          .sort()
          .join(",");
      } catch {
        return "";
      }
    });
    // Names, masters and aliases of links, and global addresses: what ctnet makes. (Link states
    // and IPv6 link-local flags change by themselves.)
    const links = d
      .hostExec(["ip", "-o", "link"])
      .stdout.split("\n")
      .map((l) =>
        [/^\d+: ([^:@]+)/.exec(l)?.[1], /master (\S+)/.exec(l)?.[1], /alias (\S+)/.exec(l)?.[1]].join(" "),
      )
      .join("\n");
    return [
      links,
      d.hostExec(["ip", "-o", "addr", "show", "scope", "global"]).stdout,
      d.hostExec(["nft", "list", "ruleset"]).stdout,
      ...storeDirs,
    ].join("\n---\n");
  };

  const networkCases: [string, unknown, number, RegExp][] = [
    ["invalid CIDR", { Name: "bad", IPAM: { Config: [{ Subnet: "10.0.0.0/33" }] } }, 400, /invalid/i],
    ["not a CIDR", { Name: "bad", IPAM: { Config: [{ Subnet: "banana" }] } }, 400, /invalid/i],
    [
      "overlapping subnet",
      { Name: "bad", IPAM: { Config: [{ Subnet: "10.10.0.128/25" }] } },
      403,
      /overlaps/,
    ],
    [
      "gateway outside subnet",
      { Name: "bad", IPAM: { Config: [{ Subnet: "10.20.0.0/24", Gateway: "10.21.0.1" }] } },
      400,
      /gateway/,
    ],
    [
      "ip-range outside subnet",
      { Name: "bad", IPAM: { Config: [{ Subnet: "10.20.0.0/24", IPRange: "10.30.0.0/25" }] } },
      400,
      /ip-range|range/i,
    ],
    ["duplicate name", { Name: "net1" }, 409, /already exists/],
    ["unknown driver", { Name: "bad", Driver: "nosuch" }, 404, /not found/],
    [
      "unknown option",
      { Name: "bad", Options: { "com.docker.network.bridge.enable_icx": "true" } },
      400,
      /unknown option/,
    ],
    ["bad option value", { Name: "bad", Options: { "com.docker.network.driver.mtu": "huge" } }, 400, /MTU/],
    ["second host network", { Name: "bad", Driver: "host" }, 403, /only one instance/],
    [
      "bridge name in use",
      { Name: "bad", Options: { "com.docker.network.bridge.name": "ctnet0" } },
      409,
      /already used/,
    ],
  ];
  for (const [what, body, status, message] of networkCases) {
    it(`network create: ${what} → ${status}`, async () => {
      const before = snapshot();
      const r = await d.api("POST", "/networks/create", body);
      assert.equal(r.status, status, r.text);
      assert.match((r.body as { message: string }).message, message);
      assert.equal(snapshot(), before);
    });
  }

  const runCases: [string, string[], RegExp][] = [
    ["--ip outside the subnet", ["--net", "net1", "--ip", "10.99.0.2"], /does not belong|subnet/],
    ["--ip outside the ip-range", ["--net", "net1", "--ip", "10.10.0.200"], /ip-range/],
    ["--ip already taken", ["--net", "net1", "--ip", "10.10.0.20"], /already in use/i],
    ["--ip is the gateway", ["--net", "net1", "--ip", "10.10.0.1"], /gateway|in use/i],
    ["--ip on the default bridge", ["--ip", "172.17.0.9"], /user defined networks/],
    ["missing network", ["--net", "nosuch"], /not found/],
    ["duplicate container name", ["--name", "busy", "--net", "net1"], /already in use/],
  ];
  for (const [what, args, message] of runCases) {
    it(`run: ${what}`, () => {
      const before = snapshot();
      const ps = d.ok(["ps", "-a", "-q"]);
      const r = d.cli(["run", "-d", "--rm", ...args, "sleep", "1000"]);
      assert.notEqual(r.status, 0, r.stdout);
      assert.match(r.stderr, message);
      // A container whose start failed may remain "created" (as with Docker), but no kernel object may.
      const leftovers = d
        .cli(["ps", "-a", "-q"])
        .stdout.trim()
        .split("\n")
        .filter((id) => id && !ps.includes(id));
      for (const id of leftovers) d.ok(["rm", "-f", id]);
      assert.equal(snapshot(), before);
    });
  }

  it("connect to a missing network or container → 404", async () => {
    const before = snapshot();
    assert.equal((await d.api("POST", "/networks/nosuch/connect", { Container: "busy" })).status, 404);
    assert.equal((await d.api("POST", "/networks/net1/connect", { Container: "nosuch" })).status, 404);
    assert.equal((await d.api("POST", "/networks/net1/connect", { Container: "busy" })).status, 403);
    assert.equal((await d.api("DELETE", "/networks/bridge")).status, 403);
    assert.equal((await d.api("DELETE", "/networks/nosuch")).status, 404);
    assert.equal((await d.api("POST", "/networks/create", { Name: "" })).status, 400);
    assert.equal((await d.api("POST", "/networks/create", "not json")).status, 400);
    assert.equal(snapshot(), before);
  });

  it("static addresses and aux addresses are honoured; the pool runs out cleanly", async () => {
    d.ok(["network", "create", "--subnet", "10.40.0.0/29", "tiny"]);
    // 10.40.0.0/29: .1 gateway, .2–.6 usable, .7 broadcast
    const ips: string[] = [];
    for (let i = 0; i < 5; i++) {
      d.ok(["run", "-d", "--name", `t${i}`, "--net", "tiny", "sleep", "1000"]);
      ips.push(d.ok(["inspect", "-f", "{{.NetworkSettings.Networks.tiny.IPAddress}}", `t${i}`]));
    }
    assert.deepEqual(ips.sort(), ["10.40.0.2", "10.40.0.3", "10.40.0.4", "10.40.0.5", "10.40.0.6"]);
    const before = snapshot();
    const r = d.cli(["run", "-d", "--name", "t5", "--net", "tiny", "sleep", "1000"]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /no available IPv4 address/);
    d.ok(["rm", "-f", "t5"]);
    assert.equal(snapshot(), before);
    for (let i = 0; i < 5; i++) d.ok(["rm", "-f", `t${i}`]);
    d.ok(["network", "rm", "tiny"]);
  });

  it("never hands out one address twice under concurrent requests", async () => {
    d.ok(["network", "create", "--subnet", "10.50.0.0/24", "busy_net"]);
    const n = 16;
    const created = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        d.api("POST", `/containers/create?name=p${i}`, {
          Cmd: ["sleep", "1000"],
          HostConfig: { NetworkMode: "busy_net" },
        }),
      ),
    );
    assert.ok(created.every((r) => r.status === 201));
    const started = await Promise.all(
      Array.from({ length: n }, (_, i) => d.api("POST", `/containers/p${i}/start`)),
    );
    assert.ok(
      started.every((r) => r.status === 204),
      started.map((r) => r.text).join(" "),
    );
    const net = (await d.api("GET", "/networks/busy_net")).body as {
      Containers: Record<string, { IPv4Address: string }>;
    };
    const addresses = Object.values(net.Containers).map((c) => c.IPv4Address);
    assert.equal(addresses.length, n);
    assert.equal(new Set(addresses).size, n);
    await Promise.all(Array.from({ length: n }, (_, i) => d.api("DELETE", `/containers/p${i}?force=1`)));
  });
});
