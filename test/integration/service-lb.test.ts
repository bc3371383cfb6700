/**
 * Services' load balancing in a lab of three hosts, end to end through `ctnet service`: the VIP
 * balanced by nftables in the client's sandbox, and the routing mesh answering the published port
 * on every host, also the one without a task. The tasks are a one-line HTTP server that answers
 * its host name (the task container's short id).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type LabMachine, TestLab } from "../helpers/lab.js";

/** busybox nc runs the script per connection: it reads the request's head, then answers. */
const SERVER = [
  "busybox",
  "nc",
  "-ll",
  "-p",
  "80",
  "-e",
  "sh",
  "-c",
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion, for sh
  'while read -r l && [ ${#l} -gt 1 ]; do :; done; printf "HTTP/1.0 200 OK\\r\\n\\r\\n%s\\n" "$(hostname)"',
];

/** Who answered: host name → count; a failed request counts as "FAILED<curl's exit code>". */
function tally(out: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of out.split("\n")) {
    const name = line.trim();
    if (name !== "") m.set(name, (m.get(name) ?? 0) + 1);
  }
  return m;
}

const loop = (n: number, url: string) =>
  `for i in $(seq ${n}); do curl -s -m 2 ${url} || echo FAILED$?; done`;

const names = (t: Map<string, number>) => [...t.keys()].sort();

async function waitFor(what: string, ms: number, check: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(100);
  }
}

describe("service load balancing across three hosts", () => {
  let lab: TestLab;
  let client: LabMachine;
  /** the host the scheduler gave no task, where the client container runs */
  let idle = "";

  /** Host names of the running tasks, from their hosts' container lists. */
  const taskNames = (): string[] =>
    ["host1", "host2", "host3"]
      .flatMap((h) =>
        lab
          .ok(h, ["ps", "--filter", "label=com.docker.swarm.service.name=myservice", "--format", "{{.ID}}"])
          .split("\n"),
      )
      .filter((x) => x !== "")
      .map((id) => id.slice(0, 12))
      .sort();
  const viaVip = (n: number) =>
    tally(lab.ok(idle, ["exec", "client", "sh", "-c", loop(n, "http://myservice/")]));
  const viaMesh = (n: number, host = idle) =>
    tally(client.exec(["sh", "-c", loop(n, `http://${lab.host(host).addr}:8080/`)]).stdout);
  const ingressSbox = (host: string) => `${lab.host(host).execRoot}/ingress_sbox`;
  const nsNft = (path: string, args: string[]) =>
    spawnSync("nsenter", [`--net=${path}`, "nft", ...args], { encoding: "utf8" });

  before(async () => {
    lab = TestLab.up({ hosts: 3 });
    client = lab.machine("client");
    lab.ok("host1", ["network", "create", "-d", "overlay", "mynet"]);
    lab.ok("host1", [
      "service",
      "create",
      "--name",
      "myservice",
      "--replicas",
      "2",
      "--network",
      "mynet",
      "--publish",
      "8080:80",
      "--",
      ...SERVER,
    ]);
    await waitFor("two tasks running", 20_000, () => taskNames().length === 2);
    const busy = lab
      .ok("host1", ["service", "ps", "--format", "{{.Node}}", "myservice"])
      .split("\n")
      .map((l) => l.trim());
    idle = ["host1", "host2", "host3"].find((h) => !busy.includes(h)) ?? "";
    assert.ok(idle, `every host runs a task: ${busy.join(", ")}`);
  });
  after(() => lab?.destroy());

  it("a client container started after the service reaches it by name from its first connection", () => {
    const first = lab.ok(idle, [
      "run",
      "--rm",
      "--net",
      "mynet",
      "curl",
      "-s",
      "-m",
      "2",
      "http://myservice/",
    ]);
    assert.ok(taskNames().includes(first), `${first} is not one of ${taskNames().join(", ")}`);
    lab.ok(idle, ["run", "-d", "--name", "client", "--net", "mynet", "sleep", "1000"]);
  });

  it("100 requests to myservice:80 from a client container are answered by both tasks", () => {
    const t = viaVip(100);
    assert.deepEqual(names(t), taskNames(), JSON.stringify([...t]));
    const table = lab.ok(idle, ["exec", "client", "nft", "list", "table", "ip", "ctnet_lb"]);
    assert.match(table, /numgen random mod 1024/);
  });

  it("100 requests to port 8080 of the host without a task are answered by both tasks", async () => {
    await waitFor("the mesh answers", 10_000, () => viaMesh(4).size === 2);
    const t = viaMesh(100);
    assert.deepEqual(names(t), taskNames(), JSON.stringify([...t]));
    for (const host of ["host1", "host2", "host3"])
      assert.ok(
        nsNft(ingressSbox(host), ["list", "table", "ip", "ctnet_lb"]).stdout.includes("tcp . 8080"),
        host,
      );
  });

  it("the published port is taken on every host: a container cannot publish it", () => {
    const r = lab.ctnet(idle, ["run", "-d", "--name", "squatter", "-p", "8080:80", "sleep", "100"]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /8080.*(already allocated|in use)/);
    lab.ctnet(idle, ["rm", "-f", "squatter"]);
  });

  it("scaling to 3 and back to 1 changes the answering set", async () => {
    lab.ok("host1", ["service", "scale", "myservice=3"]);
    await waitFor("three tasks answer the VIP", 10_000, () => viaVip(20).size === 3);
    await waitFor("three tasks answer the mesh", 5000, () => viaMesh(20).size === 3);
    lab.ok("host1", ["service", "scale", "myservice=1"]);
    await waitFor("one task answers the VIP", 5000, () => viaVip(10).size === 1);
    await waitFor("one task answers the mesh", 5000, () => viaMesh(10).size === 1);
    assert.deepEqual(names(viaMesh(10)), names(viaVip(10)));
  });

  it("a task whose process is killed leaves the VIP and the mesh, and its replacement joins them", async () => {
    lab.ok("host1", ["service", "scale", "myservice=2"]);
    await waitFor("two tasks answer", 10_000, () => viaVip(20).size === 2 && viaMesh(20).size === 2);
    const [victim = ""] = names(viaVip(20));
    const host =
      ["host1", "host2", "host3"].find((h) => lab.ctnet(h, ["inspect", victim]).status === 0) ?? "";
    process.kill(Number(lab.ok(host, ["inspect", "-f", "{{.State.Pid}}", victim])), "SIGKILL");
    await waitFor("the killed task leaves", 5000, () => !viaVip(10).has(victim) && !viaMesh(10).has(victim));
    await waitFor("a replacement answers", 20_000, () => viaVip(20).size === 2 && viaMesh(20).size === 2);
    assert.ok(!viaVip(20).has(victim));
  });

  it("a service without running tasks refuses connections at once", async () => {
    lab.ok("host1", ["service", "scale", "myservice=0"]);
    await waitFor("the VIP refuses", 10_000, () => names(viaVip(1)).join() === "FAILED7");
    await waitFor("the mesh refuses", 5000, () => names(viaMesh(1)).join() === "FAILED7");
    lab.ok("host1", ["service", "scale", "myservice=1"]);
  });

  it("the ingress sandbox is made again after its host crashes", async () => {
    lab.stop(idle);
    lab.start(idle);
    await waitFor("the mesh answers there again", 20_000, () => viaMesh(4).size === 1);
  });

  it("removing the service frees its port and takes down the tables and the ingress sandboxes", async () => {
    lab.ok("host1", ["service", "rm", "myservice"]);
    await waitFor(
      "the client's table is gone",
      10_000,
      () => lab.ctnet(idle, ["exec", "client", "nft", "list", "tables"]).stdout.trim() === "",
    );
    for (const host of ["host1", "host2", "host3"])
      await waitFor(
        `${host}'s ingress sandbox is gone`,
        5000,
        () => nsNft(ingressSbox(host), ["list", "tables"]).status !== 0,
      );
    lab.ok(idle, ["run", "-d", "--name", "publisher", "-p", "8080:80", "sleep", "100"]);
    lab.ok(idle, ["rm", "-f", "publisher"]);
  });
});
