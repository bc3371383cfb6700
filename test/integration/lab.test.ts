/**
 * `ctnet lab`: hosts in namespaces on an underlay bridge, each with its own daemon; commands run
 * on a host through `lab exec`; a host failure and its return; a second lab beside the first;
 * `lab down` leaving nothing (checked by TestLab.destroy).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ctnet, labLeftovers, TestLab } from "../helpers/lab.js";

/** The first packet can race neighbour resolution on links that just came up. */
function pings(lab: TestLab, from: string, addr: string): boolean {
  for (let i = 0; i < 3; i++) if (lab.exec(from, ["ping", "-c1", "-W1", addr]).status === 0) return true;
  return false;
}

describe("lab of three hosts", () => {
  let lab: TestLab;

  before(() => {
    lab = TestLab.up({ hosts: 3, members: 2 });
  });
  after(() => lab?.destroy());

  it("gives each host its own namespace, uplink address and daemon", () => {
    const s = lab.state;
    assert.deepEqual(
      s.hosts.map((h) => h.name),
      ["host1", "host2", "host3"],
    );
    const base = s.subnet.replace(/\.0\/24$/, "");
    assert.match(s.subnet, /^100\.64\.\d+\.0\/24$/);
    for (const [i, h] of s.hosts.entries()) {
      assert.equal(h.addr, `${base}.${i + 1}`);
      const link = lab.exec(h.name, ["ip", "-o", "addr", "show", "dev", "eth0"]);
      assert.equal(link.status, 0, link.stderr);
      assert.match(link.stdout, new RegExp(`inet ${h.addr.replaceAll(".", "\\.")}/24`));
      assert.match(lab.exec(h.name, ["ip", "-o", "link", "show", "eth0"]).stdout, /mtu 1500/);
    }
  });

  it("connects the hosts over the underlay", () => {
    const [h1, h2, h3] = lab.state.hosts;
    assert.ok(pings(lab, "host1", h2.addr), "host1 → host2");
    assert.ok(pings(lab, "host1", h3.addr), "host1 → host3");
    assert.ok(pings(lab, "host3", h1.addr), "host3 → host1");
  });

  it("forms a cluster of the hosts, by their lab names", async () => {
    const r = await lab.api("host2", "GET", "/ctnet/cluster");
    assert.equal(r.status, 200, r.text);
    const info = r.body as {
      NodeName: string;
      Role: string;
      Hosts: { Name: string; Addr: string; State: string; Self: boolean }[];
    };
    assert.equal(info.NodeName, "host2");
    assert.equal(info.Role, "member", "--members 2: host2 runs an etcd member");
    assert.deepEqual(
      info.Hosts.map((h) => [h.Name, h.Addr, h.State, h.Self]).sort(),
      lab.state.hosts.map((h) => [h.name, h.addr, "ready", h.name === "host2"]),
    );
    assert.equal(((await lab.api("host3", "GET", "/ctnet/cluster")).body as { Role: string }).Role, "client");
    const ls = lab.ok("host1", ["cluster", "ls"]);
    for (const h of lab.state.hosts) assert.match(ls, new RegExp(`^${h.name}\\b.*\\bready\\b`, "m"));
  });

  it("runs ctnet and docker on a host against that host's daemon", () => {
    const id = lab.ok("host2", ["run", "-d", "--name", "web", "sleep", "300"]);
    assert.match(id, /^[0-9a-f]{64}$/);
    assert.equal(lab.ok("host2", ["ps", "--format", "{{.Names}}"]), "web");
    // Each host has a daemon of its own: host1 does not see host2's container.
    assert.equal(lab.ok("host1", ["ps", "-q"]), "");
    const docker = lab.docker("host2", ["ps", "--format", "{{.Names}}"]);
    assert.equal(docker.status, 0, docker.stderr);
    assert.equal(docker.stdout.trim(), "web");
  });

  it("passes the command's exit status through", () => {
    assert.equal(lab.exec("host1", ["sh", "-c", "exit 3"]).status, 3);
    const env = lab.exec("host3", ["sh", "-c", 'echo "$CTNET_HOST $DOCKER_HOST"']).stdout.trim();
    const url = `unix://${lab.host("host3").socket}`;
    assert.equal(env, `${url} ${url}`);
  });

  it("lists the lab and its hosts", () => {
    const out = ctnet(["lab", "ls"]).stdout;
    for (const h of lab.state.hosts) {
      const line = out.split("\n").find((l) => l.startsWith(`${lab.name} `) && l.includes(` ${h.name} `));
      assert.ok(line, `${h.name} in:\n${out}`);
      assert.match(line, new RegExp(`host\\s+${h.addr.replaceAll(".", "\\.")}\\s+running`));
    }
  });

  it("adds a plain machine on the underlay at the next free address", () => {
    const internet = lab.machine("internet");
    const base = lab.state.subnet.replace(/\.0\/24$/, "");
    assert.equal(internet.addr, `${base}.4`);
    assert.ok(pings(lab, "host1", internet.addr));
    // A machine has no daemon, and a command there is not pointed at one.
    assert.equal(internet.exec(["sh", "-c", 'echo "[$CTNET_HOST]"']).stdout.trim(), "[]");
    assert.match(lab.lab("machine", ["host7"]).stderr, /reserved/);
    assert.match(lab.lab("machine", ["internet"]).stderr, /already has a machine named internet/);
  });

  it("fails a host and brings it back with its containers", async () => {
    lab.ok("host3", ["network", "create", "appnet"]);
    lab.ok("host3", ["run", "-d", "--name", "app", "--net", "appnet", "sleep", "300"]);
    const pid = Number(lab.ok("host3", ["inspect", "-f", "{{.State.Pid}}", "app"]));
    lab.stop("host3");
    assert.match(ctnet(["lab", "ls"]).stdout, new RegExp(`${lab.name}\\s+host3\\s+host\\s+\\S+\\s+stopped`));
    assert.notEqual(lab.exec("host3", ["true"]).status, 0, "exec on a stopped host fails");
    assert.ok(!pings(lab, "host1", lab.host("host3").addr), "a stopped host does not answer");
    process.kill(pid, 0);
    lab.start("host3");
    assert.ok(pings(lab, "host1", lab.host("host3").addr));
    assert.equal(
      lab.ok("host3", ["inspect", "-f", "{{.State.Running}} {{.State.Pid}}", "app"]),
      `true ${pid}`,
    );
    // Reconcile put the container's interface back.
    assert.match(lab.ok("host3", ["exec", "app", "ip", "-o", "-4", "addr", "show", "eth0"]), /inet 172\./);
    assert.match(lab.lab("start", ["host3"]).stderr, /host3 of lab \S+ is running/);
    // It rejoined the cluster from its own configuration.
    const info = (await lab.api("host3", "GET", "/ctnet/cluster")).body as { Role: string; NodeName: string };
    assert.deepEqual([info.NodeName, info.Role], ["host3", "client"]);
  });

  it("keeps a second lab beside the first, on its own subnet and cluster", async () => {
    const second = TestLab.up({ hosts: 1 });
    try {
      // Its own cluster: host1 of one lab is not host1 of the other.
      const hosts = (await second.api("host1", "GET", "/ctnet/cluster")).body as {
        Hosts: { Addr: string }[];
      };
      assert.deepEqual(
        hosts.Hosts.map((h) => h.Addr),
        [second.host("host1").addr],
      );
      assert.notEqual(second.state.subnet, lab.state.subnet);
      assert.ok(pings(second, "host1", second.state.labAddr));
      assert.ok(!pings(second, "host1", lab.host("host1").addr), "labs do not reach each other");
      const out = ctnet(["lab", "ls"]).stdout;
      assert.match(out, new RegExp(`^${second.name}\\s+host1\\s`, "m"));
      assert.match(out, new RegExp(`^${lab.name}\\s+host1\\s`, "m"));
    } finally {
      second.destroy();
    }
    assert.match(ctnet(["lab", "ls"]).stdout, new RegExp(`^${lab.name}\\s+host2\\s`, "m"));
  });
});

describe("lab failures", () => {
  it("cleans up after an up that fails", () => {
    const name = `tf${process.pid}`;
    // The daemons refuse the log level and exit: up fails after the namespaces were made.
    const r = ctnet(["lab", "up", "--name", name, "--hosts", "2", "--no-cluster", "--log-level", "nonsense"]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /daemon of host\d exited/);
    assert.deepEqual(labLeftovers(name, ["host1", "host2"]), []);
  });

  it("refuses bad names and an unknown lab, changing nothing", () => {
    assert.match(ctnet(["lab", "up", "--name", "Bad-Name", "--hosts", "1"]).stderr, /invalid lab name/);
    assert.match(ctnet(["lab", "up", "--name", "ok", "--hosts", "0"]).stderr, /--hosts must be/);
    const missing = ctnet(["lab", "down", "--name", `none${process.pid}`]);
    assert.notEqual(missing.status, 0);
    assert.match(missing.stderr, /no lab named/);
  });
});
