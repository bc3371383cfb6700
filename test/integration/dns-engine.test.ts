/**
 * Issue 3's DNS scenario: names of containers resolve inside user-defined networks only, aliases
 * round robin, unknown names go to the upstream (a stub this test starts in the daemon's host
 * namespace), and the default bridge keeps Docker's behaviour (no embedded DNS).
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { TestDaemon } from "../helpers/daemon.js";
import { startDnsStub } from "../helpers/dns-stub.js";

describe("embedded DNS", () => {
  let d: TestDaemon;
  let stub: ChildProcess | undefined;
  before(async () => {
    d = await TestDaemon.start("dns");
    stub = await startDnsStub(d.ns.path, { "outside.example.test": "192.0.2.123" });
    d.ok(["network", "create", "-d", "bridge", "petsBridge"]);
    d.ok(["network", "create", "other_net"]);
    d.ok(["run", "-d", "--net", "petsBridge", "--name", "db", "sleep", "1000"]);
    d.ok(["run", "-d", "--net", "petsBridge", "--name", "web", "sleep", "1000"]);
  });
  after(async () => {
    stub?.kill();
    await d?.destroy();
  });

  const ipOf = (name: string, net: string) =>
    d.ok(["inspect", "-f", `{{.NetworkSettings.Networks.${net}.IPAddress}}`, name]);

  it("resolves container names on a shared network", () => {
    assert.match(d.exec("web", ["cat", "/etc/resolv.conf"]).stdout, /^nameserver 127\.0\.0\.11$/m);
    const r = d.exec("web", ["getent", "hosts", "db"]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim().split(/\s+/)[0], ipOf("db", "petsBridge"));
    const dotted = d.exec("web", ["getent", "hosts", "db.petsBridge"]);
    assert.equal(dotted.stdout.trim().split(/\s+/)[0], ipOf("db", "petsBridge"));
    assert.equal(d.exec("web", ["ping", "-c1", "-W2", "db"]).status, 0);
  });

  it("answers reverse lookups with container.network", () => {
    const r = d.exec("web", ["busybox", "nslookup", ipOf("db", "petsBridge"), "127.0.0.11"]);
    assert.match(r.stdout, /db\.petsBridge/);
  });

  it("does not resolve names from networks the container does not share", () => {
    d.ok(["run", "-d", "--net", "other_net", "--name", "stranger", "sleep", "1000"]);
    assert.notEqual(d.exec("stranger", ["getent", "hosts", "db"]).status, 0);
    // ...until it joins the network.
    d.ok(["network", "connect", "petsBridge", "stranger"]);
    assert.equal(
      d.exec("stranger", ["getent", "hosts", "db"]).stdout.trim().split(/\s+/)[0],
      ipOf("db", "petsBridge"),
    );
    d.ok(["network", "disconnect", "petsBridge", "stranger"]);
    assert.notEqual(d.exec("stranger", ["getent", "hosts", "db"]).status, 0);
  });

  it("forwards unknown names to the upstream and answers failures quickly", () => {
    const r = d.exec("web", ["busybox", "nslookup", "outside.example.test", "127.0.0.11"]);
    assert.match(r.stdout, /192\.0\.2\.123/);
    const started = Date.now();
    const missing = d.exec("web", ["getent", "hosts", "missing.example.test"]);
    assert.notEqual(missing.status, 0);
    assert.ok(Date.now() - started < 4000, "a failed lookup took as long as the client's own timeout");
  });

  it("returns every container with a shared alias", () => {
    d.ok(["run", "-d", "--net", "petsBridge", "--network-alias", "api", "--name", "api1", "sleep", "1000"]);
    d.ok(["run", "-d", "--net", "petsBridge", "--network-alias", "api", "--name", "api2", "sleep", "1000"]);
    const r = d.exec("web", ["busybox", "nslookup", "api", "127.0.0.11"]);
    const want = [ipOf("api1", "petsBridge"), ipOf("api2", "petsBridge")];
    for (const ip of want) assert.match(r.stdout, new RegExp(ip.replaceAll(".", "\\.")));
    // Records follow containers: a stopped one is gone from the answer.
    d.ok(["stop", "-t", "1", "api2"]);
    const after = d.exec("web", ["busybox", "nslookup", "api", "127.0.0.11"]).stdout;
    assert.doesNotMatch(after, new RegExp(`${(want[1] ?? "").replaceAll(".", "\\.")}\\b`));
  });

  it("follows a rename at once, reverse lookups too", () => {
    d.ok(["run", "-d", "--net", "petsBridge", "--name", "cache", "sleep", "1000"]);
    const ip = ipOf("cache", "petsBridge");
    assert.equal(d.exec("web", ["getent", "hosts", "cache"]).stdout.trim().split(/\s+/)[0], ip);
    d.ok(["rename", "cache", "memo"]);
    assert.notEqual(d.exec("web", ["getent", "hosts", "cache"]).status, 0);
    assert.equal(d.exec("web", ["getent", "hosts", "memo"]).stdout.trim().split(/\s+/)[0], ip);
    assert.match(d.exec("web", ["busybox", "nslookup", ip, "127.0.0.11"]).stdout, /memo\.petsBridge/);
  });

  it("keeps Docker's behaviour on the default bridge: no embedded DNS", () => {
    d.ok(["run", "-d", "--name", "plain", "sleep", "1000"]);
    assert.doesNotMatch(d.exec("plain", ["cat", "/etc/resolv.conf"]).stdout, /127\.0\.0\.11/);
  });

  it("keeps resolving after a daemon restart", async () => {
    await d.kill("SIGKILL");
    await d.spawnDaemon();
    assert.equal(
      d.exec("web", ["getent", "hosts", "db"]).stdout.trim().split(/\s+/)[0],
      ipOf("db", "petsBridge"),
    );
  });
});
