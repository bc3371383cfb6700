/**
 * Exec endpoints with hijacked connections, served by a small server of their own on a unix socket
 * (the routes plus stubs of what the docker CLI asks before an exec). The "container" is a process
 * started here in new namespaces. Attach is tested against a daemon in attach.test.ts.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { UpgradeRoutes } from "../../src/api/hijack.js";
import { Router, sendJson } from "../../src/api/router.js";
import { execRoutes } from "../../src/api/routes/exec.js";
import { handler } from "../../src/api/server.js";
import { ConflictError, NotFoundError } from "../../src/errors.js";

const hasDocker = spawnSync("docker", ["--version"]).status === 0;
const CONTAINER_ID = "c".repeat(64);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Run {
  stdout: string;
  stderr: string;
  status: number | null;
}

/** Asynchronous: the server under test runs on this process's event loop. */
function run(
  cmd: string,
  args: string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...opts.env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("error", reject);
    child.on("close", (status) => resolve({ stdout, stderr, status }));
    child.stdin.end(opts.input ?? "");
  });
}

/** Splits a multiplexed stream into its stdout and stderr. */
function demux(data: Buffer): { stdout: string; stderr: string } {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let at = 0;
  while (at + 8 <= data.length) {
    const len = data.readUInt32BE(at + 4);
    const payload = data.subarray(at + 8, at + 8 + len);
    (data[at] === 2 ? err : out).push(payload);
    at += 8 + len;
  }
  assert.equal(at, data.length, "the stream ends on a frame boundary");
  return { stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

interface Hijacked {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  socket: Socket;
  /** everything the server sent after the response head, until it ended the stream */
  received: Promise<Buffer>;
}

describe("exec", () => {
  let dir: string;
  let socketPath: string;
  let server: Server;
  let container: ChildProcess;
  let containerPid = 0;
  let running = true;

  const api = async (method: string, path: string, body?: unknown) =>
    new Promise<{ status: number; json: unknown; text: string }>((resolve, reject) => {
      const req = request(
        { socketPath, method, path, headers: { "Content-Type": "application/json" } },
        (res) => {
          let text = "";
          res.on("data", (d) => {
            text += d;
          });
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, text, json: text.trim() ? JSON.parse(text) : undefined }),
          );
        },
      );
      req.on("error", reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });

  const hijack = (path: string, body: unknown, upgradeHeaders = true) =>
    new Promise<Hijacked>((resolve, reject) => {
      const headers: Record<string, string> = { "Content-Type": "application/json" };
      if (upgradeHeaders) Object.assign(headers, { Connection: "Upgrade", Upgrade: "tcp" });
      const req = request({ socketPath, method: "POST", path, headers });
      const collect = (socket: Socket, head: Buffer) =>
        new Promise<Buffer>((done) => {
          const chunks = [head];
          socket.on("data", (d: Buffer) => chunks.push(d));
          socket.on("end", () => done(Buffer.concat(chunks)));
        });
      req.on("upgrade", (res, socket: Socket, head: Buffer) =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          socket,
          received: collect(socket, head),
        }),
      );
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (d: Buffer) => chunks.push(d));
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          socket: res.socket as Socket,
          received: new Promise((done) => res.on("end", () => done(Buffer.concat(chunks)))),
        });
      });
      req.on("error", reject);
      req.end(JSON.stringify(body));
    });

  const createExec = async (config: Record<string, unknown>) => {
    const r = await api("POST", "/v1.50/containers/ct1/exec", {
      AttachStdout: true,
      AttachStderr: true,
      ...config,
    });
    assert.equal(r.status, 201, r.text);
    return (r.json as { Id: string }).Id;
  };

  const inspectExec = async (id: string) =>
    (await api("GET", `/exec/${id}/json`)).json as { Running: boolean; ExitCode: number | null; Pid: number };

  const docker = (args: string[], input?: string) =>
    run("docker", args, { input, env: { DOCKER_HOST: `unix://${socketPath}` } });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "ctnet-exec-"));
    socketPath = join(dir, "api.sock");
    container = spawn(
      "unshare",
      ["--fork", "--pid", "--mount-proc", "--net", "--uts", "--ipc", "--kill-child", "--"].concat([
        "sh",
        "-c",
        "hostname exectest && exec sleep 300",
      ]),
      { stdio: "ignore" },
    );
    for (let i = 0; i < 200 && !containerPid; i++) {
      await sleep(10);
      try {
        const pid = container.pid;
        containerPid = Number(readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(" ")[0]);
        if (readFileSync(`/proc/${containerPid}/comm`, "utf8").trim() !== "sleep") containerPid = 0;
      } catch {
        containerPid = 0;
      }
    }
    assert.ok(containerPid > 0, "the test container started");

    const router = new Router();
    const upgrades = new UpgradeRoutes();
    const known = (ref: string) => {
      if (ref !== "ct1" && !CONTAINER_ID.startsWith(ref))
        throw new NotFoundError(`No such container: ${ref}`);
    };
    execRoutes(router, upgrades, {
      containerPid: (ref) => {
        known(ref);
        if (!running) throw new ConflictError(`container ${CONTAINER_ID} is not running`);
        return { id: CONTAINER_ID, pid: containerPid };
      },
    });
    // What the docker CLI reads before it execs: the daemon's real routes live elsewhere.
    router.on("GET", "/_ping", (_req, res) => {
      res.writeHead(200, { "Content-Type": "text/plain" });
      res.end("OK");
    });
    router.on("GET", "/containers/:id/json", (req, res) => {
      known(req.params.id ?? "");
      sendJson(res, 200, {
        Id: CONTAINER_ID,
        Name: "/ct1",
        State: { Status: "running", Running: true, Pid: containerPid },
        Config: { Tty: false, OpenStdin: false, AttachStdin: false },
      });
    });
    server = createServer(handler(router));
    server.on("upgrade", upgrades.listener);
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  });

  after(async () => {
    container?.kill("SIGKILL");
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  it("runs a command in the container's namespaces, stdout and stderr apart, with its exit code", async () => {
    const id = await createExec({ Cmd: ["sh", "-c", "hostname; echo oops >&2; exit 3"] });
    const h = await hijack(`/v1.50/exec/${id}/start`, { Detach: false, Tty: false });
    assert.equal(h.status, 101);
    assert.equal(h.headers["content-type"], "application/vnd.docker.multiplexed-stream");
    assert.equal(h.headers.upgrade, "tcp");
    const { stdout, stderr } = demux(await h.received);
    assert.equal(stdout, "exectest\n");
    assert.equal(stderr, "oops\n");
    const info = await inspectExec(id);
    assert.equal(info.Running, false);
    assert.equal(info.ExitCode, 3);
    assert.ok(info.Pid > 0);
    const again = await hijack(`/exec/${id}/start`, {});
    assert.equal(again.status, 409);
  });

  it("streams without an upgrade too", async () => {
    const id = await createExec({ Cmd: ["echo", "plain"] });
    const h = await hijack(`/exec/${id}/start`, {}, false);
    assert.equal(h.status, 200);
    assert.equal(demux(await h.received).stdout, "plain\n");
  });

  it("passes stdin, and closes it when the client half-closes", async () => {
    const id = await createExec({ AttachStdin: true, Cmd: ["sh", "-c", "cat; echo done"] });
    const h = await hijack(`/exec/${id}/start`, {});
    assert.equal(h.status, 101);
    h.socket.write("hello ");
    await sleep(50);
    h.socket.end("world\n");
    assert.equal(demux(await h.received).stdout, "hello world\ndone\n");
    assert.equal((await inspectExec(id)).ExitCode, 0);
  });

  it("gives a TTY a terminal of its own, resizable", async () => {
    const id = await createExec({
      AttachStdin: true,
      Tty: true,
      ConsoleSize: [24, 80],
      Cmd: ["sh", "-c", "tty; stty size; read line; stty size; echo got $line; exit 5"],
    });
    const h = await hijack(`/exec/${id}/start`, { Tty: true });
    assert.equal(h.status, 101);
    assert.equal(h.headers["content-type"], "application/vnd.docker.raw-stream");
    let seen = "";
    h.socket.on("data", (d) => {
      seen += d;
    });
    for (let i = 0; i < 100 && !seen.includes("24 80"); i++) await sleep(20);
    assert.equal((await api("POST", `/exec/${id}/resize?h=40&w=120`)).status, 200);
    h.socket.write("ping\r");
    const out = (await h.received).toString();
    assert.match(out, /^\/dev\/pts\/\d+\r\n24 80\r\n/);
    assert.match(out, /40 120\r\ngot ping\r\n$/);
    assert.equal((await inspectExec(id)).ExitCode, 5);
  });

  it("answers clear errors", async () => {
    assert.equal((await api("POST", "/containers/nope/exec", { Cmd: ["true"] })).status, 404);
    assert.equal((await api("POST", "/containers/ct1/exec", { Cmd: [] })).status, 400);
    const user = await api("POST", "/containers/ct1/exec", { Cmd: ["id"], User: "nobody" });
    assert.equal(user.status, 400);
    assert.match(user.text, /not supported/);
    assert.equal((await api("GET", "/exec/nope/json")).status, 404);
    const missing = await hijack("/exec/nope/start", {});
    assert.equal(missing.status, 404);
    assert.match((await missing.received).toString(), /No such exec instance/);
    assert.equal((await hijack("/containers/ct1/nothing", {})).status, 404);
  });

  describe("with the docker CLI", { skip: hasDocker ? false : "the docker CLI is not installed" }, () => {
    it("docker exec", async () => {
      const r = await docker(["exec", "ct1", "sh", "-c", "hostname; echo err >&2; exit 4"]);
      assert.equal(r.stdout, "exectest\n");
      assert.equal(r.stderr, "err\n");
      assert.equal(r.status, 4);
      const env = await docker(["exec", "-e", "FOO=bar", "-w", "/tmp", "ct1", "sh", "-c", "echo $FOO $PWD"]);
      assert.equal(env.stdout, "bar /tmp\n", env.stderr);
    });

    it("docker exec -i", async () => {
      const r = await docker(["exec", "-i", "ct1", "cat"], "from stdin\n");
      assert.equal(r.stdout, "from stdin\n", r.stderr);
      assert.equal(r.status, 0);
    });

    it("docker exec -it", async () => {
      const r = await run("script", ["-qec", "docker exec -it ct1 sh -c 'tty; exit 7'", "/dev/null"], {
        env: { DOCKER_HOST: `unix://${socketPath}` },
      });
      assert.match(r.stdout, /\/dev\/pts\/\d+/, r.stderr);
      assert.equal(r.status, 7);
    });

    it("docker exec -d", async () => {
      const marker = join(dir, "detached");
      const r = await docker(["exec", "-d", "ct1", "sh", "-c", `sleep 0.2; echo detached > ${marker}`]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(existsSync(marker), false, "docker exec -d returns before the command ends");
      for (let i = 0; i < 100 && !existsSync(marker); i++) await sleep(20);
      assert.equal(readFileSync(marker, "utf8"), "detached\n");
    });

    it("docker exec on a stopped container", async () => {
      running = false;
      try {
        const r = await docker(["exec", "ct1", "true"]);
        assert.notEqual(r.status, 0);
        assert.match(r.stderr, /is not running/);
      } finally {
        running = true;
      }
    });
  });
});
