/**
 * Issue 3's port publishing scenario through the engine: a web container publishes 8000:5000; a
 * client namespace on the host's link, the host itself and another container reach it; the
 * server sees the outside client's real address; taken ports fail cleanly; ports follow the
 * container's life and a daemon restart.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { TestDaemon } from "../helpers/daemon.js";
import type { TestNetns } from "../helpers/netns.js";

const SERVER = `require("http").createServer((q, s) => s.end("hello from " + require("os").hostname() + " to " + q.socket.remoteAddress + "\\n")).listen(5000)`;
const HOST = "198.51.100.1";
const CLIENT = "198.51.100.2";

describe("published ports", () => {
  let d: TestDaemon;
  let client: TestNetns;

  const get = (where: TestNetns | string, url: string) => {
    const cmd = ["curl", "-s", "-m", "3", url];
    const r = typeof where === "string" ? d.exec(where, cmd) : where.exec(cmd);
    return r.status === 0 ? r.stdout.trim() : `failed (${r.status}): ${r.stderr.trim()}`;
  };
  /** The server needs a moment to listen after the container starts. */
  const waitFor = async (url: string) => {
    for (let i = 0; i < 50; i++) {
      if (get(client, url).startsWith("hello")) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  before(async () => {
    d = await TestDaemon.start("ports");
    client = d.addNeighbour("cli", "198.51.100.0/24").ns;
    d.ok(["network", "create", "-d", "bridge", "petsBridge"]);
    d.ok(["run", "-d", "--net", "petsBridge", "--name", "web", "-p", "8000:5000", "node", "-e", SERVER]);
    await waitFor(`http://${HOST}:8000/`);
  });
  after(async () => {
    client?.destroy();
    await d?.destroy();
  });

  it("reaches the container from another host, keeping the client's address", () => {
    assert.match(get(client, `http://${HOST}:8000/`), new RegExp(`^hello from \\w+ to (::ffff:)?${CLIENT}$`));
  });

  it("reaches the container from the host itself, on 127.0.0.1 and its own address", () => {
    const viaLoopback = d.hostExec(["curl", "-s", "-m", "3", "http://127.0.0.1:8000/"]);
    assert.match(viaLoopback.stdout, /^hello from/);
    const viaOwn = d.hostExec(["curl", "-s", "-m", "3", `http://${HOST}:8000/`]);
    assert.match(viaOwn.stdout, /^hello from/);
  });

  it("reaches the container from other containers through the host's address", () => {
    d.ok(["run", "-d", "--net", "petsBridge", "--name", "neighbour", "sleep", "1000"]);
    assert.match(get("neighbour", `http://${HOST}:8000/`), /^hello from/);
    d.ok(["network", "create", "elsewhere"]);
    d.ok(["run", "-d", "--net", "elsewhere", "--name", "stranger", "sleep", "1000"]);
    assert.match(get("stranger", `http://${HOST}:8000/`), /^hello from/);
    // The container reaches its own published port too (hairpin).
    assert.match(get("web", `http://${HOST}:8000/`), /^hello from/);
  });

  it("shows the binding as docker does", () => {
    assert.deepEqual(d.ok(["port", "web"]).split("\n"), ["5000/tcp -> 0.0.0.0:8000"]);
    assert.match(
      d.ok(["ps", "--filter", "name=web", "--format", "{{.Ports}}"]),
      /0\.0\.0\.0:8000->5000\/tcp/,
    );
    assert.equal(
      d.ok(["inspect", "-f", '{{(index (index .NetworkSettings.Ports "5000/tcp") 0).HostPort}}', "web"]),
      "8000",
    );
  });

  it("refuses a port that is already taken, changing nothing", () => {
    const before = d.hostExec(["nft", "list", "ruleset"]).stdout;
    const r = d.cli([
      "run",
      "-d",
      "--net",
      "petsBridge",
      "--name",
      "clash",
      "-p",
      "8000:80",
      "sleep",
      "1000",
    ]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /port is already allocated/);
    d.ok(["rm", "-f", "clash"]);
    assert.equal(d.hostExec(["nft", "list", "ruleset"]).stdout, before);
    assert.match(get(client, `http://${HOST}:8000/`), /^hello from/);
  });

  it("answers only on the bound address when a host IP is given", async () => {
    d.ok([
      "run",
      "-d",
      "--net",
      "petsBridge",
      "--name",
      "local",
      "-p",
      "127.0.0.1:8100:5000",
      "node",
      "-e",
      SERVER,
    ]);
    let viaLoopback = "";
    for (let i = 0; i < 50 && !viaLoopback.startsWith("hello"); i++) {
      viaLoopback = d.hostExec(["curl", "-s", "-m", "3", "http://127.0.0.1:8100/"]).stdout;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(viaLoopback, /^hello from/);
    assert.doesNotMatch(get(client, `http://${HOST}:8100/`), /^hello/);
  });

  it("gives ephemeral ports and publishes exposed ports with -P", () => {
    d.ok([
      "run",
      "-d",
      "--net",
      "petsBridge",
      "--name",
      "eph",
      "-p",
      "5000",
      "--expose",
      "6000",
      "-P",
      "sleep",
      "1000",
    ]);
    const lines = d.ok(["port", "eph"]).split("\n");
    assert.equal(lines.length, 2, lines.join("; "));
    for (const l of lines) assert.match(l, /^(5000|6000)\/tcp -> 0\.0\.0\.0:\d{4,5}$/);
  });

  it("releases ports when the container stops and restores them after a daemon restart", async () => {
    d.ok(["run", "-d", "--net", "petsBridge", "--name", "short", "-p", "8200:5000", "sleep", "1000"]);
    d.ok(["stop", "-t", "1", "short"]);
    assert.doesNotMatch(d.hostExec(["nft", "list", "table", "inet", "ctnet"]).stdout, /8200/);
    d.ok(["run", "-d", "--net", "petsBridge", "--name", "again", "-p", "8200:5000", "sleep", "1000"]);

    await d.kill("SIGKILL");
    await d.spawnDaemon();
    assert.match(get(client, `http://${HOST}:8000/`), /^hello from/);
    const r = d.cli([
      "run",
      "-d",
      "--net",
      "petsBridge",
      "--name",
      "clash2",
      "-p",
      "8000:80",
      "sleep",
      "1000",
    ]);
    assert.match(r.stderr, /port is already allocated/);
  });
});
