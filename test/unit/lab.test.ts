import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BIN_DIR } from "../../src/lab/daemons.js";
import { execEnv } from "../../src/lab/lab.js";
import {
  checkLabName,
  checkMachineName,
  hostState,
  type LabState,
  nextFreeOctet,
} from "../../src/lab/state.js";

function lab(): LabState {
  return {
    name: "demo",
    index: 7,
    subnet: "100.64.7.0/24",
    netns: "ctlab-demo",
    labAddr: "100.64.7.254",
    runDir: "/run/ctnet-lab/demo",
    dataDir: "/var/lib/ctnet-lab/demo",
    logLevel: "info",
    hosts: [],
    machines: [],
  };
}

describe("lab state", () => {
  it("lays out a host's namespace, address and directories", () => {
    assert.deepEqual(hostState(lab(), 3), {
      name: "host3",
      netns: "ctlab-demo-host3",
      addr: "100.64.7.3",
      dataRoot: "/var/lib/ctnet-lab/demo/host3",
      execRoot: "/run/ctnet-lab/demo/host3",
      socket: "/run/ctnet-lab/demo/host3/ctnet.sock",
      log: "/var/lib/ctnet-lab/demo/host3.log",
    });
  });

  it("gives a machine the lowest free address, never the lab's own", () => {
    const l = lab();
    l.hosts = [hostState(l, 1), hostState(l, 2)];
    assert.equal(nextFreeOctet(l), 3);
    l.machines = [{ name: "a", netns: "ctlab-demo-a", addr: "100.64.7.3" }];
    l.hosts.splice(0, 1);
    assert.equal(nextFreeOctet(l), 1);
    l.machines = Array.from({ length: 253 }, (_, i) => ({
      name: `m${i}`,
      netns: "",
      addr: `100.64.7.${i + 1}`,
    }));
    assert.throws(() => nextFreeOctet(l), /no free underlay address/);
  });

  it("refuses names that would not read back as one lab's namespace", () => {
    for (const bad of ["", "a-b", "Lab", "x".repeat(33), ".hidden"])
      assert.throws(() => checkLabName(bad), /invalid lab name/);
    checkLabName("lab_2");
    const l = lab();
    l.hosts = [hostState(l, 1)];
    for (const bad of ["my-srv", "1st", "averyveryverylongname"])
      assert.throws(() => checkMachineName(l, bad), /invalid machine name/);
    for (const reserved of ["host1", "host42", "underlay", "lo"])
      assert.throws(() => checkMachineName(l, reserved), /reserved/);
    l.machines = [{ name: "internet", netns: "ctlab-demo-internet", addr: "100.64.7.2" }];
    assert.throws(() => checkMachineName(l, "internet"), /already has a machine named internet/);
    checkMachineName(l, "client");
  });
});

describe("lab exec environment", () => {
  it("points ctnet and docker at a host's daemon, ctnet first on PATH", () => {
    const env = execEnv(hostState(lab(), 2), { PATH: "/usr/bin", CTNET_HOST: "unix:///elsewhere" });
    assert.equal(env.CTNET_HOST, "unix:///run/ctnet-lab/demo/host2/ctnet.sock");
    assert.equal(env.DOCKER_HOST, env.CTNET_HOST);
    assert.equal(env.PATH, `${BIN_DIR}:/usr/bin`);
  });

  it("points a machine's commands at no daemon", () => {
    const env = execEnv(
      { name: "internet", netns: "ctlab-demo-internet", addr: "100.64.7.4" },
      { PATH: "/usr/bin", CTNET_HOST: "unix:///x", DOCKER_HOST: "unix:///y" },
    );
    assert.equal(env.CTNET_HOST, undefined);
    assert.equal(env.DOCKER_HOST, undefined);
  });
});
