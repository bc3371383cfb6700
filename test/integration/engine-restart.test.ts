/**
 * A daemon killed with SIGKILL in the middle of work leaves nothing behind after its next start,
 * and running containers keep their connectivity across the restart.
 */
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { TestDaemon } from "../helpers/daemon.js";

describe("crash and restart", () => {
  let d: TestDaemon;
  before(async () => {
    d = await TestDaemon.start("restart");
  });
  after(async () => {
    await d?.destroy();
  });

  /** Host-side veths must all belong to endpoints the daemon knows about. */
  async function assertNoLeakedLinks(): Promise<void> {
    const nets = (await d.api("GET", "/networks")).body as { Containers: Record<string, unknown> }[];
    const endpoints = nets.reduce((n, net) => n + Object.keys(net.Containers).length, 0);
    // Veths of removed sandboxes disappear in the kernel's background cleanup: give it a moment.
    let veths = 0;
    for (let i = 0; i < 50; i++) {
      veths = d
        .hostExec(["ip", "-o", "link", "show", "type", "veth"])
        .stdout.trim()
        .split("\n")
        .filter(Boolean).length;
      if (veths === endpoints) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(veths, endpoints, "host veths vs endpoints");
    const running = (
      (await d.api("GET", "/containers/json")).body as { HostConfig: { NetworkMode: string } }[]
    ).filter(
      (c) =>
        !["host"].includes(c.HostConfig.NetworkMode) && !c.HostConfig.NetworkMode.startsWith("container:"),
    ).length;
    assert.equal(
      readdirSync(join(d.execRoot, "netns")).length,
      running,
      "sandbox namespaces vs running containers",
    );
  }

  it("keeps running containers connected across a daemon restart", async () => {
    d.ok(["network", "create", "--subnet", "10.60.0.0/24", "net_a"]);
    d.ok(["run", "-d", "--name", "a1", "--net", "net_a", "sleep", "1000"]);
    d.ok(["run", "-d", "--name", "a2", "--net", "net_a", "--ip", "10.60.0.200", "sleep", "1000"]);
    await d.kill("SIGKILL");
    await d.spawnDaemon();
    assert.equal(d.exec("a1", ["ping", "-c1", "-W2", "10.60.0.200"]).status, 0);
    assert.equal(d.ok(["inspect", "-f", "{{.State.Status}}", "a1"]), "running");
    await assertNoLeakedLinks();
  });

  it("repairs whatever a SIGKILL in the middle of connects left", async () => {
    const nets = ["net_b", "net_c", "net_d"];
    for (const [i, n] of nets.entries()) d.ok(["network", "create", "--subnet", `10.6${i + 1}.0.0/24`, n]);
    const names = Array.from({ length: 6 }, (_, i) => `w${i}`);
    for (const name of names) d.ok(["run", "-d", "--name", name, "--net", "net_a", "sleep", "1000"]);
    // Fire connects and kill the daemon while they are in flight.
    const inflight = names.flatMap((name) =>
      nets.map((n) => d.api("POST", `/networks/${n}/connect`, { Container: name }).catch(() => undefined)),
    );
    await new Promise((r) => setTimeout(r, 30));
    await d.kill("SIGKILL");
    await Promise.all(inflight);
    await d.spawnDaemon();
    await assertNoLeakedLinks();
    // Every container still reaches the others over net_a.
    const a2 = "10.60.0.200";
    for (const name of names)
      assert.equal(d.exec(name, ["ping", "-c1", "-W2", a2]).status, 0, `${name} lost connectivity`);
    // And every endpoint the daemon reports works.
    for (const name of names) {
      const ips = d
        .ok(["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name])
        .split(" ")
        .filter(Boolean);
      const inner = d.exec(name, ["ip", "-o", "-4", "addr"]).stdout;
      for (const ip of ips)
        assert.match(inner, new RegExp(`${ip.replaceAll(".", "\\.")}/24`), `${name} lacks ${ip}`);
    }
  });

  it("marks containers that died while the daemon was down as exited and frees their resources", async () => {
    d.ok(["run", "-d", "--name", "dies", "--net", "net_a", "sleep", "1000"]);
    const pid = Number(d.ok(["inspect", "-f", "{{.State.Pid}}", "dies"]));
    await d.kill("SIGKILL");
    process.kill(pid, "SIGKILL");
    await new Promise((r) => setTimeout(r, 200));
    await d.spawnDaemon();
    assert.equal(d.ok(["inspect", "-f", "{{.State.Status}}", "dies"]), "exited");
    await assertNoLeakedLinks();
  });
});
