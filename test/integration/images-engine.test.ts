/**
 * Containers on an imported image's root filesystem (overlayfs), driven by ctnet's API and by the
 * real docker CLI: `docker import`, `docker run -d IMAGE`, names resolving between them.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { TestDaemon } from "../helpers/daemon.js";

const BUSYBOX_SCRIPT = fileURLToPath(new URL("../../scripts/busybox-image.sh", import.meta.url));
const hasDocker = spawnSync("docker", ["--version"]).status === 0;

describe("containers from images", () => {
  let d: TestDaemon;
  const docker = (args: string[]) => d.docker(args);

  before(async () => {
    d = await TestDaemon.start("images");
    const tar = join(d.dir, "busybox.tar");
    assert.equal(spawnSync("bash", [BUSYBOX_SCRIPT, tar]).status, 0);
    const r = await fetchUpload(
      d,
      "/images/create?fromSrc=-&repo=busybox&tag=latest&changes=CMD%20%5B%22sh%22%5D",
      readFileSync(tar),
    );
    assert.match(r, /sha256:[0-9a-f]{64}/);
  });
  after(async () => {
    await d?.destroy();
    // Images are not removed by destroy(): their trees are plain directories under the test's root.
  });

  it("runs a container on the image's root filesystem, on a user-defined network", async () => {
    d.ok(["network", "create", "imgnet"]);
    const created = await d.api("POST", "/containers/create?name=b1", {
      Image: "busybox",
      Cmd: ["sleep", "1000"],
      HostConfig: { NetworkMode: "imgnet" },
    });
    assert.equal(created.status, 201, created.text);
    assert.equal((await d.api("POST", "/containers/b1/start")).status, 204);
    const pid = d.ok(["inspect", "-f", "{{.State.Pid}}", "b1"]);
    const inside = spawnSync(
      "nsenter",
      [
        "-t",
        pid,
        "-n",
        "-m",
        "-u",
        "-p",
        "-r",
        "-w",
        "sh",
        "-c",
        "ls /bin/busybox && cat /etc/resolv.conf && ls /dev/null",
      ],
      { encoding: "utf8" },
    );
    assert.equal(inside.status, 0, inside.stderr);
    assert.match(inside.stdout, /nameserver 127\.0\.0\.11/);
    assert.equal(d.ok(["inspect", "-f", "{{.Config.Image}}", "b1"]), "busybox");
  });

  it("builds, lists and runs images with the ctnet CLI", () => {
    d.ok(["image", "busybox", "bb2"]);
    assert.match(d.ok(["images"]), /^bb2\s+latest\s+[0-9a-f]{12}/m);
    d.ok(["run", "-d", "--net", "imgnet", "--name", "c1", "bb2", "sleep", "1000"]);
    assert.equal(d.ok(["inspect", "-f", "{{.Config.Image}}", "c1"]), "bb2");
    assert.equal(d.exec("c1", ["ls", "/linuxrc"]).status, 0, "exec does not run in the image's root");
    assert.match(d.cli(["rmi", "bb2"]).stderr, /must force/);
    d.ok(["rm", "-f", "c1"]);
    assert.match(d.ok(["rmi", "bb2"]), /Untagged: bb2:latest/);
  });

  it("applies the image's CMD when the request has none", async () => {
    const created = await d.api("POST", "/containers/create?name=b2", {
      Image: "busybox",
      OpenStdin: false,
      HostConfig: { NetworkMode: "none" },
    });
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(JSON.parse(d.ok(["inspect", "-f", "{{json .Config.Cmd}}", "b2"])), ["sh"]);
  });

  it("answers a clear error for an unknown image or a pull", async () => {
    const missing = await d.api("POST", "/containers/create", { Image: "nosuch", Cmd: ["true"] });
    assert.equal(missing.status, 404);
    assert.match((missing.body as { message: string }).message, /No such image: nosuch/);
    const pull = await d.api("POST", "/images/create?fromImage=alpine&tag=latest");
    assert.ok(pull.status >= 400 && /registry/i.test(pull.text), pull.text);
  });

  it("runs detached containers from the real docker CLI", {
    skip: hasDocker ? false : "no docker CLI",
  }, () => {
    const run = docker(["run", "-d", "--net", "imgnet", "--name", "d1", "busybox", "sleep", "1000"]);
    assert.equal(run.status, 0, run.stderr);
    assert.match(docker(["ps"]).stdout, /busybox\s+"sleep 1000".*d1/);
    const ip = docker([
      "inspect",
      "--format",
      "{{.NetworkSettings.Networks.imgnet.IPAddress}}",
      "d1",
    ]).stdout.trim();
    assert.match(ip, /^172\.\d+\.0\.\d+$/);
    const pid = d.ok(["inspect", "-f", "{{.State.Pid}}", "d1"]);
    const ping = spawnSync(
      "nsenter",
      ["-t", pid, "-n", "-m", "-u", "-p", "-r", "-w", "ping", "-c1", "-W2", "b1"],
      { encoding: "utf8" },
    );
    assert.equal(ping.status, 0, ping.stdout + ping.stderr);
    const exec = docker(["exec", "d1", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert.equal(exec.status, 3);
    assert.equal(exec.stdout, "out\n");
    assert.equal(exec.stderr, "err\n");
    assert.equal(
      docker(["exec", "d1", "hostname"]).stdout.trim(),
      docker(["inspect", "-f", "{{.Config.Hostname}}", "d1"]).stdout.trim(),
    );
    assert.equal(docker(["rm", "-f", "d1"]).status, 0);
  });

  it("shows logs and events to the real docker CLI", {
    skip: hasDocker ? false : "no docker CLI",
  }, async () => {
    const events = spawn("docker", ["events", "--format", "{{.Type}} {{.Action}}"], {
      env: { ...process.env, DOCKER_HOST: d.host },
    });
    let seen = "";
    events.stdout.on("data", (b: Buffer) => {
      seen += b.toString();
    });
    try {
      await new Promise((r) => setTimeout(r, 300));
      // No --net: the docker CLI names the default network "default".
      const run = docker([
        "run",
        "-d",
        "--name",
        "talk",
        "busybox",
        "sh",
        "-c",
        "echo one; echo two; echo three; sleep 100",
      ]);
      assert.equal(run.status, 0, run.stderr);
      let logs = "";
      for (let i = 0; i < 50 && !logs.includes("three"); i++) {
        logs = docker(["logs", "talk"]).stdout;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(logs, "one\ntwo\nthree\n");
      assert.equal(docker(["logs", "--tail", "2", "talk"]).stdout, "two\nthree\n");
      assert.equal(docker(["rm", "-f", "talk"]).status, 0);
      for (let i = 0; i < 50 && !seen.includes("container destroy"); i++)
        await new Promise((r) => setTimeout(r, 50));
      for (const e of [
        "container create",
        "network connect",
        "container start",
        "container die",
        "container destroy",
      ]) {
        assert.match(seen, new RegExp(e));
      }
    } finally {
      events.kill();
    }
  });

  it("runs foreground containers from the real docker CLI", {
    skip: hasDocker ? false : "no docker CLI",
  }, () => {
    const run = docker([
      "run",
      "--rm",
      "--net",
      "imgnet",
      "busybox",
      "sh",
      "-c",
      "echo hello from $(hostname); exit 4",
    ]);
    assert.equal(run.status, 4, run.stderr);
    assert.match(run.stdout, /^hello from [0-9a-f]{12}$/m);
    assert.doesNotMatch(docker(["ps", "-a"]).stdout, /hello from/);
    assert.match(docker(["images"]).stdout, /busybox\s+latest/);
  });
});

/** POSTs a raw body (the image tarball) and returns the answer's text. */
async function fetchUpload(d: TestDaemon, path: string, body: Buffer): Promise<string> {
  const { request } = await import("node:http");
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath: d.socket, method: "POST", path, headers: { "Content-Type": "application/x-tar" } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve(Buffer.concat(chunks).toString()));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}
