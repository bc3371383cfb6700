/** The real docker CLI drives ctnet's networks through DOCKER_HOST. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { TestDaemon } from "../helpers/daemon.js";

const hasDocker = spawnSync("docker", ["--version"]).status === 0;

describe("docker CLI against ctnet", { skip: hasDocker ? false : "the docker CLI is not installed" }, () => {
  let d: TestDaemon;
  before(async () => {
    d = await TestDaemon.start("docker");
  });
  after(async () => {
    await d?.destroy();
  });

  const docker = (args: string[]) => d.docker(args);

  it("lists, creates, inspects and removes networks", () => {
    const ls = docker(["network", "ls"]);
    assert.equal(ls.status, 0, ls.stderr);
    assert.match(ls.stdout, /NETWORK ID\s+NAME\s+DRIVER\s+SCOPE/);
    assert.match(ls.stdout, /bridge\s+bridge\s+local/);
    assert.match(ls.stdout, /host\s+host\s+local/);
    assert.match(ls.stdout, /none\s+null\s+local/);

    const create = docker([
      "network",
      "create",
      "--subnet",
      "10.80.0.0/24",
      "--gateway",
      "10.80.0.254",
      "-o",
      "com.docker.network.bridge.name=dk0",
      "dnet",
    ]);
    assert.equal(create.status, 0, create.stderr);
    assert.match(d.hostExec(["ip", "-o", "addr", "show", "dk0"]).stdout, /10\.80\.0\.254\/24/);

    const inspect = docker(["network", "inspect", "dnet"]);
    assert.equal(inspect.status, 0, inspect.stderr);
    const [net] = JSON.parse(inspect.stdout) as {
      Name: string;
      IPAM: { Config: { Subnet: string; Gateway: string }[] };
    }[];
    assert.equal(net?.Name, "dnet");
    assert.deepEqual(net?.IPAM.Config[0], { Subnet: "10.80.0.0/24", Gateway: "10.80.0.254" });
    assert.equal(docker(["network", "inspect", "-f", "{{.Driver}}", "dnet"]).stdout.trim(), "bridge");
    assert.match(docker(["network", "ls", "--filter", "name=dnet", "-q"]).stdout, /^[0-9a-f]{12}\s*$/);

    const dup = docker(["network", "create", "dnet"]);
    assert.notEqual(dup.status, 0);
    assert.match(dup.stderr, /already exists/);

    const rm = docker(["network", "rm", "dnet"]);
    assert.equal(rm.status, 0, rm.stderr);
    assert.equal(d.hostExec(["ip", "link", "show", "dk0"]).status, 1);
    assert.match(docker(["network", "rm", "bridge"]).stderr, /pre-defined network/);
  });

  it("connects and disconnects running containers", () => {
    assert.equal(docker(["network", "create", "--subnet", "10.81.0.0/24", "cnet"]).status, 0);
    d.ok(["run", "-d", "--name", "dc1", "sleep", "1000"]);
    const connect = docker(["network", "connect", "--ip", "10.81.0.50", "cnet", "dc1"]);
    assert.equal(connect.status, 0, connect.stderr);
    assert.equal(d.exec("dc1", ["ping", "-c1", "-W2", "10.81.0.1"]).status, 0);
    const members = docker([
      "network",
      "inspect",
      "-f",
      "{{range .Containers}}{{.Name}} {{.IPv4Address}}{{end}}",
      "cnet",
    ]);
    assert.equal(members.stdout.trim(), "dc1 10.81.0.50/24");
    const disconnect = docker(["network", "disconnect", "cnet", "dc1"]);
    assert.equal(disconnect.status, 0, disconnect.stderr);
    assert.doesNotMatch(d.exec("dc1", ["ip", "-o", "addr"]).stdout, /10\.81\.0\.50/);
  });

  it("shows ctnet in docker version", () => {
    const v = docker(["version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"]);
    assert.equal(v.status, 0, v.stderr);
    assert.match(v.stdout, /^\d+\.\d+\.\d+ 1\.50/);
  });
});
