import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import dgram from "node:dgram";
import { once } from "node:events";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { SystemError } from "../../src/errors.js";
import { checkConfig } from "../../src/kernel/features.js";
import { AF_INET, native, SOCK_STREAM } from "../../src/kernel/native.js";
import {
  boundSocketInNetns,
  createNetns,
  deleteNetns,
  isNetnsMounted,
  socketInNetns,
  withNetns,
} from "../../src/kernel/netns.js";
import { listNftTable, runNft } from "../../src/kernel/nft.js";
import { readSysctl, writeSysctl } from "../../src/kernel/sysctl.js";
import { makeTestNetns, type TestNetns } from "../helpers/netns.js";

const selfNetns = () => readlinkSync("/proc/thread-self/ns/net");
const mountsUnder = (prefix: string) =>
  readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((line) => line.split(" ")[4]?.startsWith(prefix));
const netnsNames = () =>
  spawnSync("ip", ["netns", "list"], { encoding: "utf8" })
    .stdout.split("\n")
    .map((line) => line.split(" ")[0]);

let dir: string;
let tn: TestNetns;
const host = selfNetns();

before(() => {
  dir = mkdtempSync(join(tmpdir(), "ctnet-kn-"));
  tn = makeTestNetns("kn");
  assert.equal(tn.exec(["ip", "link", "set", "lo", "up"]).status, 0);
});

after(() => {
  tn.destroy();
  tn.destroy();
  assert.ok(!netnsNames().includes(tn.name), "test namespace left behind");
  assert.deepEqual(mountsUnder(dir), []);
  rmSync(dir, { recursive: true, force: true });
  assert.equal(selfNetns(), host);
});

describe("netnsCreate / netnsDelete", () => {
  test("a namespace on an ordinary directory, removed without a trace", () => {
    mkdirSync(join(dir, "netns"));
    const path = join(dir, "netns", "abc");
    createNetns(path);
    assert.equal(selfNetns(), host, "the thread came back");
    assert.ok(isNetnsMounted(path));
    assert.equal(mountsUnder(path).length, 1);
    const inside = withNetns(path, selfNetns);
    assert.notEqual(inside, host);

    deleteNetns(path);
    assert.ok(!existsSync(path));
    assert.deepEqual(mountsUnder(path), []);
    assert.ok(!isNetnsMounted(path));
    deleteNetns(path);
  });

  test("an existing file is never taken over", () => {
    const path = join(dir, "taken");
    createNetns(path);
    try {
      assert.throws(() => createNetns(path), { code: "EEXIST" });
      assert.ok(isNetnsMounted(path), "the failed create left the existing namespace alone");
    } finally {
      deleteNetns(path);
    }
  });

  test("a missing parent directory fails with ENOENT and creates nothing", () => {
    const path = join(dir, "missing", "x");
    assert.throws(() => createNetns(path), { code: "ENOENT", syscall: "open" });
    assert.ok(!existsSync(join(dir, "missing")));
    assert.equal(selfNetns(), host);
  });

  test("deleting an unmounted file only unlinks it", () => {
    const path = join(dir, "plain");
    writeFileSync(path, "");
    assert.ok(!isNetnsMounted(path));
    deleteNetns(path);
    deleteNetns(join(dir, "never-existed"));
    assert.ok(!existsSync(path));
  });
});

describe("withNetns", () => {
  test("switches the thread and always switches back", () => {
    assert.equal(withNetns(tn.path, selfNetns), tn.exec(["readlink", "/proc/self/ns/net"]).stdout.trim());
    assert.equal(selfNetns(), host);
    assert.throws(
      () =>
        withNetns(tn.path, () => {
          throw new Error("boom");
        }),
      /boom/,
    );
    assert.equal(selfNetns(), host);
  });

  test("nests", () => {
    const path = join(dir, "nested");
    createNetns(path);
    try {
      const seen = withNetns(tn.path, () => {
        const outer = selfNetns();
        const inner = withNetns(path, selfNetns);
        return [outer, inner, selfNetns()];
      });
      assert.equal(seen[0], seen[2], "inner switch returned to the outer namespace");
      assert.notEqual(seen[0], seen[1]);
      assert.equal(selfNetns(), host);
    } finally {
      deleteNetns(path);
    }
  });

  test("refuses async functions and promises", () => {
    let ran = false;
    assert.throws(
      () =>
        withNetns(tn.path, async () => {
          ran = true;
        }),
      TypeError,
    );
    assert.ok(!ran, "an async function is refused before it runs");
    assert.throws(() => withNetns(tn.path, () => Promise.resolve(1)), TypeError);
    assert.equal(selfNetns(), host);
  });

  test("a path that is not a namespace fails without switching", () => {
    assert.throws(() => withNetns("/etc/hostname", () => 1), /not a network namespace/);
    assert.throws(() => withNetns(join(dir, "nope"), () => 1), { code: "ENOENT" });
    assert.equal(selfNetns(), host);
  });

  test("a child spawned while switched starts in the namespace", () => {
    const child = withNetns(tn.path, () =>
      spawnSync("readlink", ["/proc/self/ns/net"], { encoding: "utf8" }),
    );
    assert.equal(child.stdout.trim(), withNetns(tn.path, selfNetns));
  });
});

describe("sockets in a namespace", { timeout: 10_000 }, () => {
  // 127.0.0.11:53 is where the embedded DNS listens in every sandbox.
  const dnsAddr = "127.0.0.11";

  test("udp4: a bound fd adopted by dgram answers inside the namespace", async () => {
    const server = dgram.createSocket("udp4");
    const client = dgram.createSocket("udp4");
    try {
      server.bind({ fd: boundSocketInNetns(tn.path, "udp4", dnsAddr, 53) });
      server.on("message", (msg, rinfo) => server.send(Buffer.from(`re:${msg}`), rinfo.port, rinfo.address));
      const listed = tn.exec(["ss", "-Hlun", "src", `${dnsAddr}:53`]).stdout;
      assert.match(listed, /127\.0\.0\.11:53/);

      // Adopting an fd emits "listening" synchronously, inside bind(): nothing to wait for.
      client.bind({ fd: boundSocketInNetns(tn.path, "udp4", "127.0.0.1", 0) });
      client.send("ping", 53, dnsAddr);
      const [reply] = await once(client, "message");
      assert.equal(String(reply), "re:ping");
    } finally {
      server.close();
      client.close();
    }
  });

  test("tcp4: a listening fd adopted by net.Server; socketInNetns gives a client in the namespace", async () => {
    const server = net.createServer((conn) => conn.end("hello"));
    try {
      server.listen({ fd: boundSocketInNetns(tn.path, "tcp4", dnsAddr, 53) });
      await once(server, "listening");
      assert.match(tn.exec(["ss", "-Hltn", "src", `${dnsAddr}:53`]).stdout, /127\.0\.0\.11:53/);

      // Nothing listens on 127.0.0.11:53 on the host, so only a socket made in the namespace gets through.
      const client = new net.Socket({ fd: socketInNetns(tn.path, AF_INET, SOCK_STREAM) });
      client.connect(53, dnsAddr);
      const chunks: Buffer[] = [];
      client.on("data", (c) => chunks.push(c));
      await once(client, "end");
      client.destroy();
      assert.equal(Buffer.concat(chunks).toString(), "hello");
    } finally {
      server.close();
    }
  });

  test("errors carry errno codes", () => {
    assert.throws(() => boundSocketInNetns(tn.path, "udp4", "10.99.0.1", 53), { code: "EADDRNOTAVAIL" });
    assert.throws(() => socketInNetns(join(dir, "nope"), AF_INET, SOCK_STREAM), { code: "ENOENT" });
    assert.throws(() => boundSocketInNetns(tn.path, "udp4", "not-an-ip", 53), TypeError);
    assert.equal(selfNetns(), host);
  });
});

describe("nftables", () => {
  const table = "ctnet_kn_test";
  const hostTables = () => spawnSync("nft", ["list", "tables"], { encoding: "utf8" }).stdout;

  test("runNft applies in the namespace only, and reports nft's error", () => {
    runNft(`add table inet ${table}\nadd set inet ${table} s { type ipv4_addr; }\n`, tn.path);
    withNetns(tn.path, () => runNft(`add element inet ${table} s { 10.1.0.1 }`));
    runNft(`add element inet ${table} s { 10.1.0.2 }`, tn.path);
    const listed = listNftTable("inet", table, tn.path);
    assert.match(listed, /10\.1\.0\.1, 10\.1\.0\.2/);
    assert.ok(!hostTables().includes(table), "nothing reached the host's ruleset");

    assert.throws(
      () => runNft(`add element inet ${table} nosuch { 10.1.0.3 }`, tn.path),
      (err: Error) => err instanceof SystemError && /No such file or directory/.test(err.message),
    );
    runNft(`add element inet ${table} s { 10.1.0.4 }`, tn.path);
    assert.match(listNftTable("inet", table, tn.path), /10\.1\.0\.4/);
    assert.throws(() => listNftTable("inet", "no_such_table", tn.path), SystemError);
  });

  test("falls back to spawning nft when the addon has no libnftables", () => {
    const { nftRun } = native;
    native.nftRun = undefined;
    try {
      runNft(`add element inet ${table} s { 10.1.0.5 }`, tn.path);
      assert.throws(() => runNft("add element inet nosuch s { 10.1.0.6 }", tn.path), SystemError);
    } finally {
      native.nftRun = nftRun;
    }
    assert.match(listNftTable("inet", table, tn.path), /10\.1\.0\.5/);
    runNft(`delete table inet ${table}`, tn.path);
  });
});

describe("sysctl", () => {
  test("reads and writes the namespace's value, not the host's", () => {
    const hostBefore = readSysctl("net.ipv4.ip_forward");
    assert.equal(readSysctl("net.ipv4.ip_forward", tn.path), "0");
    writeSysctl("net.ipv4.ip_forward", "1", tn.path);
    assert.equal(readSysctl("net/ipv4/ip_forward", tn.path), "1");
    assert.equal(tn.exec(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.trim(), "1");
    assert.equal(readSysctl("net.ipv4.ip_forward"), hostBefore);

    writeSysctl("net/ipv6/conf/lo/disable_ipv6", "1", tn.path);
    assert.equal(readSysctl("net.ipv6.conf.lo.disable_ipv6", tn.path), "1");
    assert.throws(() => readSysctl("net/../../etc/passwd"), /invalid sysctl key/);
  });
});

describe("checkConfig", () => {
  test("finds what this machine's kernel has and lacks, and leaves nothing behind", async () => {
    const probesBefore = readdirSync(tmpdir()).filter((f) => f.startsWith("ctnet-probe-"));
    const features = await checkConfig();
    const present = (name: string) => {
      const f = features.find((x) => x.name === name);
      assert.ok(f, `feature ${name} reported`);
      return f.present;
    };
    for (const name of ["veth", "bridge", "vxlan", "macvlan", "tun", "nf_tables", "nft_nat", "nft_masq"]) {
      assert.ok(present(name), `${name} should be present`);
    }
    for (const name of ["nft_numgen", "nft_hash", "nft_ct", "xfrm"]) assert.ok(present(name), name);
    for (const name of ["ipvlan", "8021q", "dummy", "geneve", "wireguard", "ipvs", "esp"]) {
      assert.ok(!present(name), `${name} should be missing`);
    }
    const ipvlan = features.find((f) => f.name === "ipvlan");
    assert.match(ipvlan?.detail ?? "", /CONFIG_IPVLAN/);
    for (const tool of ["ip", "nsenter", "unshare", "nft"]) assert.ok(present(tool), tool);

    const probesAfter = readdirSync(tmpdir()).filter((f) => f.startsWith("ctnet-probe-"));
    assert.deepEqual(probesAfter, probesBefore);
    assert.deepEqual(mountsUnder(join(tmpdir(), "ctnet-probe-")), []);
    assert.equal(selfNetns(), host);
  });
});
