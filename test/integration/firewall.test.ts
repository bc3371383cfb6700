/**
 * The firewall for real, in namespaces made here: a "host" namespace with bridges brA and brB, a
 * container namespace per endpoint, and an "outside" namespace standing in for the internet behind
 * the host's uplink. Runs once with br_netfilter handing bridged frames to the inet hooks and once
 * without (its sysctls are per namespace, so only our host namespace is changed).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { Firewall } from "../../src/firewall/firewall.js";
import type { FirewallNetwork, FirewallState } from "../../src/firewall/model.js";

function run(args: string[], input?: string): { ok: boolean; out: string } {
  const r = spawnSync(args[0] as string, args.slice(1), { input, encoding: "utf8", timeout: 15_000 });
  return { ok: r.status === 0, out: `${r.stdout ?? ""}${r.stderr ?? ""}` };
}

function must(args: string[], input?: string): string {
  const r = run(args, input);
  if (!r.ok) throw new Error(`${args.join(" ")}: ${r.out}`);
  return r.out;
}

const inNs = (ns: string, ...args: string[]) => ["ip", "netns", "exec", ns, ...args];
const pings = (ns: string, addr: string) => run(inNs(ns, "ping", "-n", "-c", "1", "-W", "0.5", addr)).ok;

for (const brNetfilter of [false, true]) {
  describe(`firewall in namespaces, br_netfilter ${brNetfilter ? "on" : "off"}`, () => {
    const id = randomBytes(3).toString("hex");
    const ns = {
      host: `ctt-fw-${id}-host`,
      out: `ctt-fw-${id}-out`,
      a1: `ctt-fw-${id}-a1`,
      a2: `ctt-fw-${id}-a2`,
      b1: `ctt-fw-${id}-b1`,
    };
    const children: ChildProcess[] = [];
    const sent: string[] = [];
    const fw = new Firewall((text) => {
      sent.push(text);
      must(inNs(ns.host, "nft", "-f", "-"), text);
    });

    const netA: FirewallNetwork = {
      id: "a",
      bridge: "brA",
      subnets4: ["10.91.1.0/24"],
      subnets6: ["fd91:1::/64"],
      internal: false,
      masquerade: true,
      icc: true,
      ports: ["vA1", "vA2"],
    };
    const netB: FirewallNetwork = {
      id: "b",
      bridge: "brB",
      subnets4: ["10.91.2.0/24"],
      subnets6: [],
      internal: false,
      masquerade: true,
      icc: true,
      ports: ["vB1"],
    };
    const state = (a: Partial<FirewallNetwork> = {}, b: Partial<FirewallNetwork> = {}): FirewallState => ({
      networks: [
        { ...netA, ...a },
        { ...netB, ...b },
      ],
    });

    before(() => {
      for (const name of Object.values(ns)) must(["ip", "netns", "add", name]);
      const h = (...args: string[]) => must(["ip", "-n", ns.host, ...args]);
      const bridgeSysctl = brNetfilter ? "1" : "0";
      must(
        inNs(
          ns.host,
          "sysctl",
          "-qw",
          "net.ipv4.ip_forward=1",
          "net.ipv6.conf.all.forwarding=1",
          `net.bridge.bridge-nf-call-iptables=${bridgeSysctl}`,
          `net.bridge.bridge-nf-call-ip6tables=${bridgeSysctl}`,
        ),
      );
      h("link", "set", "lo", "up");
      for (const [br, v4, v6] of [
        ["brA", "10.91.1.1/24", "fd91:1::1/64"],
        ["brB", "10.91.2.1/24", undefined],
      ] as const) {
        h("link", "add", br, "type", "bridge");
        h("addr", "add", v4, "dev", br);
        if (v6) h("addr", "add", v6, "dev", br, "nodad");
        h("link", "set", br, "up");
      }
      const containers = [
        [ns.a1, "vA1", "brA", "10.91.1.2/24", "10.91.1.1", "fd91:1::2/64", "fd91:1::1"],
        [ns.a2, "vA2", "brA", "10.91.1.3/24", "10.91.1.1", "fd91:1::3/64", "fd91:1::1"],
        [ns.b1, "vB1", "brB", "10.91.2.2/24", "10.91.2.1", undefined, undefined],
      ] as const;
      for (const [c, port, br, v4, gw4, v6, gw6] of containers) {
        h("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", c);
        h("link", "set", port, "master", br, "up");
        const ip = (...args: string[]) => must(["ip", "-n", c, ...args]);
        ip("link", "set", "lo", "up");
        ip("addr", "add", v4, "dev", "eth0");
        if (v6) ip("addr", "add", v6, "dev", "eth0", "nodad");
        ip("link", "set", "eth0", "up");
        ip("route", "add", "default", "via", gw4);
        if (gw6) ip("-6", "route", "add", "default", "via", gw6);
      }
      h("link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", ns.out);
      h("addr", "add", "10.91.9.1/24", "dev", "up0");
      h("addr", "add", "fd91:9::1/64", "dev", "up0", "nodad");
      h("link", "set", "up0", "up");
      const o = (...args: string[]) => must(["ip", "-n", ns.out, ...args]);
      o("link", "set", "lo", "up");
      o("addr", "add", "10.91.9.2/24", "dev", "eth0");
      o("addr", "add", "fd91:9::2/64", "dev", "eth0", "nodad");
      o("link", "set", "eth0", "up");
      // The outside knows a way back to the containers, so it is the firewall, not routing, that
      // keeps unsolicited connections out and makes masquerading visible.
      o("route", "add", "10.91.0.0/16", "via", "10.91.9.1");
      o("-6", "route", "add", "fd91::/16", "via", "fd91:9::1");
      // Counts what arrives outside by source address: masqueraded traffic shows the host's uplink.
      must(
        inNs(ns.out, "nft", "-f", "-"),
        `table inet probe {
          counter from_host4 {}
          counter from_host6 {}
          counter from_containers {}
          chain input {
            type filter hook input priority filter; policy accept;
            ip saddr 10.91.9.1 counter name from_host4
            ip6 saddr fd91:9::1 counter name from_host6
            ip saddr 10.91.0.0/16 ip saddr != 10.91.9.0/24 counter name from_containers
            ip6 saddr fd91::/16 ip6 saddr != fd91:9::/64 counter name from_containers
          }
        }
        `,
      );
      // Someone else's table in our host namespace: ctnet must leave it alone.
      must(inNs(ns.host, "nft", "add", "table", "inet", "other"));
    });

    after(() => {
      for (const child of children) child.kill();
      for (const name of Object.values(ns)) run(["ip", "netns", "del", name]);
      for (const name of Object.values(ns))
        assert.ok(!existsSync(`/run/netns/${name}`), `${name} left behind`);
    });

    function counter(name: string): number {
      const text = must(inNs(ns.out, "nft", "list", "counter", "inet", "probe", name));
      return Number(/packets (\d+)/.exec(text)?.[1]);
    }

    async function tcpToOutside(from: string, port: number): Promise<string> {
      const server = spawn("ip", ["netns", "exec", ns.out, "busybox", "nc", "-l", "-p", String(port)]);
      children.push(server);
      let received = "";
      server.stdout.on("data", (d: Buffer) => {
        received += d.toString();
      });
      const exited = once(server, "exit");
      // nc -l binds asynchronously; retry until the listener answers.
      for (let i = 0; i < 50 && received === ""; i++) {
        run(inNs(from, "sh", "-c", `echo hello-from-${from} | busybox nc -w 1 10.91.9.2 ${port}`));
        if (received === "") await new Promise((r) => setTimeout(r, 50));
      }
      server.kill();
      await exited;
      return received.trim();
    }

    function isolationHolds(): void {
      assert.ok(!pings(ns.a1, "10.91.2.2"), "A -> B must be blocked");
      assert.ok(!pings(ns.b1, "10.91.1.2"), "B -> A must be blocked");
      assert.ok(!pings(ns.out, "10.91.1.2"), "outside -> A (new) must be blocked");
      assert.ok(!pings(ns.out, "fd91:1::2"), "outside -> A over IPv6 (new) must be blocked");
    }

    it("loads the full ruleset (twice, idempotently) beside someone else's table", () => {
      fw.load(state());
      fw.load(state());
      const tables = must(inNs(ns.host, "nft", "list", "tables"))
        .trim()
        .split("\n")
        .sort();
      assert.deepEqual(tables, ["table bridge ctnet", "table inet ctnet", "table inet other"]);
    });

    it("lets a network's containers talk, reach the host, and keeps networks apart", () => {
      assert.ok(pings(ns.a1, "10.91.1.3"), "A1 -> A2");
      assert.ok(pings(ns.a1, "fd91:1::3"), "A1 -> A2 over IPv6");
      assert.ok(pings(ns.b1, "10.91.2.1"), "B1 -> its gateway");
      isolationHolds();
    });

    it("lets containers reach outside, masqueraded as the host's uplink (IPv4 and IPv6)", async () => {
      const fromHost4 = counter("from_host4");
      assert.equal(await tcpToOutside(ns.a1, 18080), `hello-from-${ns.a1}`);
      assert.ok(pings(ns.b1, "10.91.9.2"), "B1 -> outside");
      assert.ok(counter("from_host4") > fromHost4);
      const fromHost6 = counter("from_host6");
      assert.ok(pings(ns.a1, "fd91:9::2"), "A1 -> outside over IPv6");
      assert.ok(counter("from_host6") > fromHost6);
      assert.equal(counter("from_containers"), 0);
    });

    it("cuts an internal network off from outside with one element add", () => {
      const before = sent.length;
      fw.update(state({}, { internal: true }));
      assert.deepEqual(sent.slice(before), [
        'delete element inet ctnet masq4 { 10.91.2.0/24 }\nadd element inet ctnet internal_bridges { "brB" }\n',
      ]);
      assert.ok(!pings(ns.b1, "10.91.9.2"), "internal B1 -> outside must be blocked");
      assert.ok(!pings(ns.b1, "10.91.1.2"), "internal B1 -> A must be blocked");
      assert.ok(!pings(ns.out, "10.91.2.2"), "outside -> internal B1 must be blocked");
      assert.ok(pings(ns.b1, "10.91.2.1"), "internal B1 -> its gateway");
      assert.ok(pings(ns.a1, "10.91.9.2"), "A1 -> outside unaffected");
    });

    it("with icc=false blocks IP between a network's containers but lets ARP through", () => {
      fw.update(state({ icc: false }, { internal: true }));
      assert.ok(!pings(ns.a1, "10.91.1.3"), "A1 -> A2 must be blocked");
      assert.ok(!pings(ns.a1, "fd91:1::3"), "A1 -> A2 over IPv6 must be blocked");
      must(["ip", "-n", ns.a1, "neigh", "flush", "dev", "eth0"]);
      must(inNs(ns.a1, "busybox", "arping", "-c", "1", "-w", "2", "-I", "eth0", "10.91.1.3"));
      assert.ok(pings(ns.a1, "10.91.1.1"), "A1 -> its gateway");
      assert.ok(pings(ns.a1, "10.91.9.2"), "A1 -> outside");
      isolationHolds();
    });

    it("an endpoint joining an icc=false network is one element add", () => {
      fw.update(state({ icc: false, ports: [] }, { internal: true }));
      // Without its ports listed, only br_netfilter (where on) still stops the bridged frames.
      assert.equal(pings(ns.a1, "10.91.1.3"), !brNetfilter, "A1 -> A2 with no port listed");
      const before = sent.length;
      fw.update(state({ icc: false, ports: ["vA1"] }, { internal: true }));
      fw.update(state({ icc: false }, { internal: true }));
      assert.deepEqual(sent.slice(before), [
        'add element bridge ctnet noicc_ports { "vA1" }\n',
        'add element bridge ctnet noicc_ports { "vA2" }\n',
      ]);
      assert.ok(!pings(ns.a1, "10.91.1.3"), "A1 -> A2 blocked again");
      assert.ok(!pings(ns.a2, "10.91.1.2"), "A2 -> A1 blocked again");
    });

    it("switches back and forth with diffs only", () => {
      const before = sent.length;
      fw.update(state());
      assert.ok(pings(ns.a1, "10.91.1.3"), "A1 -> A2 again");
      assert.ok(pings(ns.b1, "10.91.9.2"), "B1 -> outside again");
      isolationHolds();
      fw.update(state({}, { internal: true }));
      assert.ok(!pings(ns.b1, "10.91.9.2"), "B1 internal again");
      fw.update(state());
      assert.ok(pings(ns.b1, "10.91.9.2"), "B1 -> outside again");
      for (const text of sent.slice(before)) assert.match(text, /^((add|delete) element [^\n]+\n)+$/);
    });

    it("removing a network drops its elements; traffic between bridges is then not ours to block", () => {
      fw.update({ networks: [netA] });
      assert.ok(pings(ns.a1, "10.91.2.2"), "A -> former network B is routed");
      fw.update(state());
      assert.ok(!pings(ns.a1, "10.91.2.2"), "A -> B blocked again");
    });

    it("tears down our tables only, and tolerates a second teardown", () => {
      fw.teardown();
      fw.teardown();
      assert.equal(must(inNs(ns.host, "nft", "list", "tables")).trim(), "table inet other");
      assert.ok(pings(ns.a1, "10.91.2.2"), "A -> B without ctnet's tables");
      assert.ok(pings(ns.out, "10.91.1.2"), "outside -> A without ctnet's tables");
      assert.ok(pings(ns.out, "fd91:1::2"), "outside -> A over IPv6 without ctnet's tables");
    });
  });
}
