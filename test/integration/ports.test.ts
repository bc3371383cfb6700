/**
 * The host port allocator for real. Its sockets live in the calling process's own namespace (as
 * in the daemon), so this file re-runs itself under `unshare --net`: the ports it takes and the
 * listeners it plants can never collide with the machine's, and the namespace dies with the child.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import dgram from "node:dgram";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { ConflictError, InvalidParameterError } from "../../src/errors.js";
import { PortAllocator, readEphemeralRange } from "../../src/ports/allocator.js";
import type { PortBindingRequest } from "../../src/ports/types.js";

const INSIDE = process.env.CTT_PORTS_NETNS === "1";

function req(hostIp: string, start: number, end = start, proto: "tcp" | "udp" = "tcp"): PortBindingRequest {
  return { proto, hostIp, hostPortStart: start, hostPortEnd: end, containerPort: 80 };
}

/** Whether some other socket can still take the port (closed again at once). */
async function canListen(host: string, port: number): Promise<boolean> {
  const server = net.createServer();
  return new Promise((resolve) => {
    server.once("error", () => resolve(false));
    server.listen({ host, port, ipv6Only: host.includes(":") }, () => server.close(() => resolve(true)));
  });
}

async function canBindUdp(host: string, port: number): Promise<boolean> {
  const v6 = host.includes(":");
  const sock = dgram.createSocket(v6 ? { type: "udp6", ipv6Only: true } : { type: "udp4" });
  return new Promise((resolve) => {
    sock.once("error", () => {
      sock.close();
      resolve(false);
    });
    sock.bind({ address: host, port }, () => sock.close(() => resolve(true)));
  });
}

/** The runner marks its children with NODE_TEST_CONTEXT; a nested run must not inherit it. */
function testRunnerFree(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { NODE_TEST_CONTEXT: _, ...rest } = env;
  return rest;
}

if (!INSIDE) {
  describe("port allocator", () => {
    it("passes its tests in a network namespace of its own", () => {
      const self = fileURLToPath(import.meta.url);
      const child = spawnSync(
        "unshare",
        ["--net", "--", process.execPath, "--import", "tsx", "--test", "--test-reporter=spec", self],
        { encoding: "utf8", env: { ...testRunnerFree(process.env), CTT_PORTS_NETNS: "1" }, timeout: 120_000 },
      );
      assert.equal(child.status, 0, `${child.stdout}\n${child.stderr}`);
    });
  });
} else {
  describe("port allocator, in a namespace of its own", () => {
    const foreign: ChildProcess[] = [];

    before(() => {
      const ip = (...args: string[]) => {
        const r = spawnSync("ip", args, { encoding: "utf8" });
        if (r.status !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr}`);
      };
      ip("link", "set", "lo", "up");
      // A second interface so the namespace has addresses besides loopback.
      ip("link", "add", "pa", "type", "veth", "peer", "name", "pb");
      ip("addr", "add", "10.77.0.1/24", "dev", "pa");
      ip("addr", "add", "fd77::1/64", "dev", "pa", "nodad");
      ip("link", "set", "pa", "up");
      ip("link", "set", "pb", "up");
    });

    after(() => {
      for (const c of foreign) c.kill();
    });

    /** Another process holding a port; resolves once it is bound. */
    async function foreignListener(port: number, proto: "tcp" | "udp"): Promise<void> {
      const script =
        proto === "udp"
          ? `require("dgram").createSocket("udp4").bind(${port})`
          : `require("net").createServer().listen(${port}, "0.0.0.0")`;
      const child = spawn(process.execPath, ["-e", script], { stdio: "ignore" });
      foreign.push(child);
      for (let i = 0; i < 100; i++) {
        const free = proto === "udp" ? await canBindUdp("0.0.0.0", port) : await canListen("0.0.0.0", port);
        if (!free) return;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(`the foreign listener never bound ${port}/${proto}`);
    }

    it("reads the namespace's ephemeral range", () => {
      assert.deepEqual(readEphemeralRange(), [32768, 60999]);
      assert.deepEqual(new PortAllocator().ephemeralRange, [32768, 60999]);
      assert.deepEqual(readEphemeralRange("/nonexistent"), [32768, 60999]);
    });

    it("holds fixed ports with real sockets and refuses overlapping ones", async () => {
      const pa = new PortAllocator();
      const [all] = await pa.reserve([req("", 8000)]);
      assert.deepEqual(all, { proto: "tcp", hostIp: "", hostPort: 8000, containerPort: 80 });
      assert.equal(await canListen("0.0.0.0", 8000), false, "IPv4 port held");
      assert.equal(await canListen("::", 8000), false, "IPv6 port held");
      for (const ip of ["", "127.0.0.1", "0.0.0.0", "::1", "::", "10.77.0.1"]) {
        await assert.rejects(
          pa.reserve([req(ip, 8000)]),
          (e: Error) => e instanceof ConflictError && /already allocated/.test(e.message),
          ip,
        );
      }
      await assert.rejects(
        pa.reserve([req("::1", 8000)]),
        /Bind for \[::1\]:8000 failed: port is already allocated/,
      );
      // Another protocol, or another port, is another binding.
      await pa.reserve([req("", 8000, 8000, "udp")]);
      assert.equal(await canBindUdp("0.0.0.0", 8000), false, "UDP port held");

      // Specific addresses: equal ones conflict, different ones and different families do not.
      await pa.reserve([req("127.0.0.1", 9000), req("10.77.0.1", 9000), req("::1", 9000)]);
      assert.equal(await canListen("127.0.0.1", 9000), false);
      await assert.rejects(pa.reserve([req("127.0.0.1", 9000)]), ConflictError);
      await assert.rejects(pa.reserve([req("0.0.0.0", 9000)]), ConflictError);
      await assert.rejects(pa.reserve([req("::", 9000)]), ConflictError);
      await assert.rejects(pa.reserve([req("", 9000)]), ConflictError);
      await pa.reserve([req("fd77::1", 9000)]);

      // 0.0.0.0 and :: hold one family each.
      await pa.reserve([req("0.0.0.0", 9100)]);
      await pa.reserve([req("::", 9100)]);
      await assert.rejects(pa.reserve([req("", 9100)]), ConflictError);

      await pa.release(pa.held());
      assert.deepEqual(pa.held(), []);
      assert.equal(await canListen("0.0.0.0", 8000), true, "released");
      assert.equal(await canListen("::", 9100), true, "released");
    });

    it("refuses a port another process listens on, and keeps others off a published one", async () => {
      const pa = new PortAllocator();
      await foreignListener(8100, "tcp");
      await assert.rejects(
        pa.reserve([req("", 8100)]),
        (e: Error) =>
          e instanceof ConflictError &&
          e.message === "Bind for 0.0.0.0:8100 failed: address already in use by another process on the host",
      );
      await foreignListener(8101, "udp");
      await assert.rejects(
        pa.reserve([req("", 8101, 8101, "udp")]),
        /0\.0\.0\.0:8101\/udp failed: address already in use/,
      );
      await pa.reserve([req("", 8101)]);
      assert.equal(await canListen("0.0.0.0", 8101), false);
      // The reservation socket answers stray TCP connections with a reset, not a hang.
      const conn = net.connect({ host: "127.0.0.1", port: 8101 });
      await new Promise<void>((resolve) => {
        conn.on("error", () => resolve());
        conn.on("close", () => resolve());
      });
      await pa.release(pa.held());
    });

    it("refuses an address the host does not have", async () => {
      const pa = new PortAllocator();
      await assert.rejects(
        pa.reserve([req("192.0.2.1", 8200)]),
        (e: Error) => e instanceof InvalidParameterError && /not an address of this host/.test(e.message),
      );
      assert.deepEqual(pa.held(), []);
    });

    it("picks the first free port of a range, skipping ours and other processes'", async () => {
      const pa = new PortAllocator();
      const got = await pa.reserve([req("", 8300, 8302), req("", 8300, 8302)]);
      assert.deepEqual(
        got.map((b) => b.hostPort),
        [8300, 8301],
      );
      await foreignListener(8302, "tcp");
      await assert.rejects(
        pa.reserve([req("", 8300, 8302)]),
        /Bind for 0\.0\.0\.0:8300-8302 failed: no free tcp port/,
      );
      // A specific address in the range does not collide with another specific address.
      const [specific] = await pa.reserve([req("10.77.0.1", 8303, 8305)]);
      assert.equal(specific?.hostPort, 8303);
      await pa.release(pa.held());
    });

    it("gives out ephemeral ports round-robin from the range", async () => {
      const pa = new PortAllocator({ ephemeralRange: [40000, 40002] });
      const first = await pa.reserve([req("", 0), req("", 0)]);
      assert.deepEqual(
        first.map((b) => b.hostPort),
        [40000, 40001],
      );
      await pa.release([first[0] ?? assert.fail()]);
      const [third] = await pa.reserve([req("", 0)]);
      assert.equal(third?.hostPort, 40002, "a just-released port is not reused at once");
      const [wrapped] = await pa.reserve([req("", 0)]);
      assert.equal(wrapped?.hostPort, 40000);
      await assert.rejects(pa.reserve([req("", 0)]), /no free tcp port/);
      // UDP has its own pool and cursor.
      const [udp] = await pa.reserve([req("", 0, 0, "udp")]);
      assert.equal(udp?.hostPort, 40000);
      await pa.release(pa.held());
    });

    it("is all-or-nothing, and restores exactly what it is given", async () => {
      const pa = new PortAllocator();
      const kept = await pa.reserve([req("", 8400)]);
      await assert.rejects(
        pa.reserve([req("", 8401), req("127.0.0.1", 8402, 8402, "udp"), req("", 8400)]),
        ConflictError,
      );
      assert.deepEqual(pa.held(), kept);
      assert.equal(await canListen("0.0.0.0", 8401), true, "8401 given back");
      assert.equal(await canBindUdp("127.0.0.1", 8402), true, "8402/udp given back");

      // A restarted daemon: a fresh allocator takes the recorded bindings again.
      await pa.release(kept);
      const recorded = [
        { proto: "tcp" as const, hostIp: "", hostPort: 8400, containerPort: 80 },
        { proto: "udp" as const, hostIp: "::1", hostPort: 8403, containerPort: 53 },
      ];
      const fresh = new PortAllocator();
      assert.deepEqual(await fresh.restore(recorded), recorded);
      assert.equal(await canBindUdp("::1", 8403), false);
      await assert.rejects(fresh.restore(recorded), ConflictError);
      assert.deepEqual(fresh.held(), recorded);
      await fresh.release(recorded);
    });

    it("never gives one port to two concurrent callers", async () => {
      const pa = new PortAllocator();
      const results = await Promise.allSettled([pa.reserve([req("", 8500)]), pa.reserve([req("", 8500)])]);
      assert.deepEqual(results.map((r) => r.status).sort(), ["fulfilled", "rejected"]);
      const eph = await Promise.all([pa.reserve([req("", 0)]), pa.reserve([req("", 0)])]);
      assert.notEqual(eph[0][0]?.hostPort, eph[1][0]?.hostPort);
      await pa.release(pa.held());
    });
  });
}
