/**
 * Published ports for real, in namespaces made here: a "host" namespace with bridges brA and brB,
 * container namespaces a1 (the server), a2 (on brA too) and b1 (on brB), and an "outside" client
 * behind the host's uplink up0 (198.51.100.0/24, which also carries a second host address for
 * bindings to one address). Runs with br_netfilter off and on, as the isolation test does.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { Firewall } from "../../src/firewall/firewall.js";
import type { FirewallNetwork, FirewallPort, FirewallState } from "../../src/firewall/model.js";

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

// Answers every TCP connection and UDP datagram with the peer's address, so a test sees which
// source address the container saw.
const SERVER = `
const peer = (a) => a.replace(/^::ffff:/, "");
require("net").createServer((c) => c.end(peer(c.remoteAddress))).listen(80, "::");
const u = require("dgram").createSocket("udp6");
u.on("message", (m, r) => u.send(peer(r.address), r.port, r.address));
u.bind(5353, "::", () => process.stdout.write("ready\\n"));
`;

// Prints what the server answered, or nothing when no answer came within a second.
const CLIENT = `
const [proto, host, port] = process.argv.slice(1);
const done = (s) => { process.stdout.write(s); process.exit(0); };
setTimeout(() => done(""), 1000);
if (proto === "udp") {
  const s = require("dgram").createSocket(host.includes(":") ? "udp6" : "udp4");
  s.on("message", (m) => done(m.toString()));
  s.send("?", Number(port), host);
} else {
  let got = "";
  const c = require("net").connect(Number(port), host);
  c.on("data", (d) => { got += d; });
  c.on("end", () => done(got));
  c.on("error", () => done(""));
}
`;

for (const brNetfilter of [false, true]) {
  describe(`published ports in namespaces, br_netfilter ${brNetfilter ? "on" : "off"}`, () => {
    const id = randomBytes(3).toString("hex");
    const ns = {
      host: `ctt-pp-${id}-host`,
      out: `ctt-pp-${id}-out`,
      a1: `ctt-pp-${id}-a1`,
      a2: `ctt-pp-${id}-a2`,
      b1: `ctt-pp-${id}-b1`,
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
      subnets4: ["10.92.1.0/24"],
      subnets6: ["fd92:1::/64"],
      internal: false,
      masquerade: true,
      icc: true,
    };
    const netB: FirewallNetwork = {
      id: "b",
      bridge: "brB",
      subnets4: ["10.92.2.0/24"],
      subnets6: [],
      internal: false,
      masquerade: true,
      icc: true,
    };
    const web4: FirewallPort = {
      proto: "tcp",
      hostIp: "",
      hostPort: 8000,
      containerIp: "10.92.1.2",
      containerPort: 80,
      bridge: "brA",
    };
    const web6: FirewallPort = { ...web4, containerIp: "fd92:1::2" };
    const dns: FirewallPort = { ...web4, proto: "udp", hostPort: 8053, containerPort: 5353 };
    const onOne: FirewallPort = { ...web4, hostIp: "198.51.100.10", hostPort: 8001 };
    const allPorts = [web4, web6, dns, onOne];
    const state = (ports: FirewallPort[] = allPorts, b: Partial<FirewallNetwork> = {}): FirewallState => ({
      networks: [netA, { ...netB, ...b }],
      ports,
    });

    const ask = (from: string, proto: "tcp" | "udp", host: string, port: number) =>
      run(inNs(from, process.execPath, "-e", CLIENT, proto, host, String(port))).out.trim();

    before(async () => {
      for (const name of Object.values(ns)) must(["ip", "netns", "add", name]);
      const h = (...args: string[]) => must(["ip", "-n", ns.host, ...args]);
      const bridgeSysctl = brNetfilter ? "1" : "0";
      // The engine sets forwarding, and route_localnet on each bridge; here the test does.
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
        ["brA", "10.92.1.1/24", "fd92:1::1/64"],
        ["brB", "10.92.2.1/24", undefined],
      ] as const) {
        h("link", "add", br, "type", "bridge");
        h("addr", "add", v4, "dev", br);
        if (v6) h("addr", "add", v6, "dev", br, "nodad");
        h("link", "set", br, "up");
        must(inNs(ns.host, "sysctl", "-qw", `net.ipv4.conf.${br}.route_localnet=1`));
      }
      const containers = [
        [ns.a1, "vA1", "brA", "10.92.1.2/24", "10.92.1.1", "fd92:1::2/64", "fd92:1::1"],
        [ns.a2, "vA2", "brA", "10.92.1.3/24", "10.92.1.1", "fd92:1::3/64", "fd92:1::1"],
        [ns.b1, "vB1", "brB", "10.92.2.2/24", "10.92.2.1", undefined, undefined],
      ] as const;
      for (const [c, port, br, v4, gw4, v6, gw6] of containers) {
        h("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", c);
        h("link", "set", port, "master", br, "up");
        // What the engine does for every bridge port: with br_netfilter on, a container reaching
        // its own published port is bridged back out the port it came in through.
        must(["bridge", "-n", ns.host, "link", "set", "dev", port, "hairpin", "on"]);
        const ip = (...args: string[]) => must(["ip", "-n", c, ...args]);
        ip("link", "set", "lo", "up");
        ip("addr", "add", v4, "dev", "eth0");
        if (v6) ip("addr", "add", v6, "dev", "eth0", "nodad");
        ip("link", "set", "eth0", "up");
        ip("route", "add", "default", "via", gw4);
        if (gw6) ip("-6", "route", "add", "default", "via", gw6);
      }
      h("link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", ns.out);
      h("addr", "add", "198.51.100.1/24", "dev", "up0");
      h("addr", "add", "198.51.100.10/24", "dev", "up0");
      h("addr", "add", "fd92:9::1/64", "dev", "up0", "nodad");
      h("link", "set", "up0", "up");
      const o = (...args: string[]) => must(["ip", "-n", ns.out, ...args]);
      o("link", "set", "lo", "up");
      o("addr", "add", "198.51.100.2/24", "dev", "eth0");
      o("addr", "add", "fd92:9::2/64", "dev", "eth0", "nodad");
      o("link", "set", "eth0", "up");
      // The outside can route to the containers directly: only the firewall keeps that closed.
      o("route", "add", "10.92.0.0/16", "via", "198.51.100.1");
      o("-6", "route", "add", "fd92::/16", "via", "fd92:9::1");

      // Neighbours resolved up front, so the first connection of a test is not the one that waits.
      for (const [from, to] of [
        [ns.out, "fd92:9::1"],
        [ns.out, "198.51.100.1"],
        [ns.a1, "fd92:1::1"],
        [ns.a2, "fd92:1::1"],
        [ns.a1, "10.92.1.1"],
        [ns.a2, "10.92.1.1"],
        [ns.b1, "10.92.2.1"],
      ] as const) {
        must(inNs(from, "ping", "-n", "-c", "1", "-W", "2", to));
      }
      const server = spawn("ip", ["netns", "exec", ns.a1, process.execPath, "-e", SERVER]);
      children.push(server);
      await new Promise<void>((resolve, reject) => {
        server.stdout.on("data", (d: Buffer) => {
          if (d.toString().includes("ready")) resolve();
        });
        server.on("exit", (code) => reject(new Error(`server exited with ${code}`)));
      });
    });

    after(() => {
      for (const child of children) child.kill();
      for (const name of Object.values(ns)) run(["ip", "netns", "del", name]);
      for (const name of Object.values(ns))
        assert.ok(!existsSync(`/run/netns/${name}`), `${name} left behind`);
    });

    it("loads maps and NAT chains, and the outside reaches the container with its own address", () => {
      fw.load(state());
      const ruleset = must(inNs(ns.host, "nft", "list", "ruleset"));
      assert.match(
        ruleset,
        /map pub4_any \{[^}]*elements = \{ tcp \. 8000 : 10\.92\.1\.2 \. 80,\s+udp \. 8053 : 10\.92\.1\.2 \. 5353 \}/,
      );
      assert.match(
        ruleset,
        /map pub4_ip \{[^}]*elements = \{ tcp \. 198\.51\.100\.10 \. 8001 : 10\.92\.1\.2 \. 80 \}/,
      );
      assert.match(ruleset, /map pub6_any \{[^}]*elements = \{ tcp \. 8000 : fd92:1::2 \. 80 \}/);
      assert.equal(ask(ns.out, "tcp", "198.51.100.1", 8000), "198.51.100.2");
      assert.equal(ask(ns.out, "tcp", "fd92:9::1", 8000), "fd92:9::2");
      assert.equal(ask(ns.out, "udp", "198.51.100.1", 8053), "198.51.100.2");
    });

    it("keeps unpublished container ports closed to the outside", () => {
      assert.equal(ask(ns.out, "tcp", "10.92.1.2", 80), "");
      assert.equal(ask(ns.out, "udp", "10.92.1.2", 5353), "");
      assert.equal(ask(ns.out, "tcp", "198.51.100.1", 80), "");
    });

    it("answers a binding to one host address only on that address", () => {
      assert.equal(ask(ns.out, "tcp", "198.51.100.10", 8001), "198.51.100.2");
      assert.equal(ask(ns.out, "tcp", "198.51.100.1", 8001), "");
    });

    it("forwards the host's own connections, to 127.0.0.1 and to its own addresses", () => {
      assert.equal(ask(ns.host, "tcp", "127.0.0.1", 8000), "10.92.1.1", "127.0.0.1 masqueraded");
      assert.equal(ask(ns.host, "tcp", "198.51.100.1", 8000), "198.51.100.1");
      // The host's own bridge address is a ctnet subnet's, so it is masqueraded like a container's.
      assert.equal(ask(ns.host, "tcp", "10.92.2.1", 8000), "10.92.1.1");
      assert.equal(ask(ns.host, "udp", "127.0.0.1", 8053), "10.92.1.1");
      assert.equal(ask(ns.host, "tcp", "fd92:9::1", 8000), "fd92:9::1");
      assert.equal(ask(ns.host, "tcp", "127.0.0.1", 8001), "", "not on 127.0.0.1");
    });

    it("hairpins containers through the host's address: same network, itself, another network", () => {
      assert.equal(ask(ns.a2, "tcp", "198.51.100.1", 8000), "10.92.1.1");
      assert.equal(ask(ns.a1, "tcp", "198.51.100.1", 8000), "10.92.1.1");
      assert.equal(ask(ns.a2, "tcp", "fd92:9::1", 8000), "fd92:1::1");
      assert.equal(ask(ns.b1, "tcp", "198.51.100.1", 8000), "10.92.1.1");
      assert.equal(ask(ns.b1, "udp", "10.92.2.1", 8053), "10.92.1.1");
      // Only the DNATed path crosses networks.
      assert.equal(ask(ns.b1, "tcp", "10.92.1.2", 80), "");
    });

    it("keeps an internal network out of published ports, and never forwards into one", () => {
      fw.update(state(allPorts, { internal: true }));
      assert.equal(ask(ns.b1, "tcp", "198.51.100.1", 8000), "");
      const intoB: FirewallPort = { ...web4, hostPort: 8002, containerIp: "10.92.2.2", bridge: "brB" };
      const before = sent.length;
      fw.update(state([...allPorts, intoB], { internal: true }));
      assert.equal(sent.length, before, "an internal network's port is not rendered");
      fw.update(state());
      assert.equal(ask(ns.b1, "tcp", "198.51.100.1", 8000), "10.92.1.1");
    });

    it("publishes and unpublishes with one map element change each", () => {
      const before = sent.length;
      fw.update(state([web6, dns, onOne]));
      assert.equal(ask(ns.out, "tcp", "198.51.100.1", 8000), "");
      assert.equal(ask(ns.out, "tcp", "fd92:9::1", 8000), "fd92:9::2");
      fw.update(state());
      assert.equal(ask(ns.out, "tcp", "198.51.100.1", 8000), "198.51.100.2");
      fw.update(state(allPorts.map((p) => (p === web4 ? { ...p, hostPort: 8080 } : p))));
      assert.equal(ask(ns.out, "tcp", "198.51.100.1", 8080), "198.51.100.2");
      assert.equal(ask(ns.out, "tcp", "198.51.100.1", 8000), "");
      assert.deepEqual(sent.slice(before), [
        "delete element inet ctnet pub4_any { tcp . 8000 : 10.92.1.2 . 80 }\n",
        "add element inet ctnet pub4_any { tcp . 8000 : 10.92.1.2 . 80 }\n",
        "delete element inet ctnet pub4_any { tcp . 8000 : 10.92.1.2 . 80 }\n" +
          "add element inet ctnet pub4_any { tcp . 8080 : 10.92.1.2 . 80 }\n",
      ]);
    });

    it("tears down without a trace", () => {
      fw.teardown();
      assert.equal(must(inNs(ns.host, "nft", "list", "ruleset")).trim(), "");
      assert.equal(ask(ns.out, "tcp", "198.51.100.1", 8080), "");
    });
  });
}
