/**
 * Containers' standard streams with the real docker CLI: `run -i` and `-it`, `run -itd` then
 * `attach` and `exec -it`, detach keys, resize, logs of a TTY, and interactive containers that
 * outlive a daemon restart. The CLI gets a terminal from script(1) where it needs one; the API's
 * hijacked streams are driven directly where a test needs to see bytes (detach keys, sizes).
 */
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from "node:child_process";
import { request } from "node:http";
import type { Socket } from "node:net";
import type { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { TestDaemon } from "../helpers/daemon.js";

const hasDocker = spawnSync("docker", ["--version"]).status === 0;
const WAIT_MS = 20_000;

interface Run {
  stdout: string;
  stderr: string;
  status: number | null;
}

/** Splits a multiplexed stream into its stdout and stderr. */
function demux(data: Buffer): { stdout: string; stderr: string } {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let at = 0;
  while (at + 8 <= data.length) {
    const len = data.readUInt32BE(at + 4);
    (data[at] === 2 ? err : out).push(data.subarray(at + 8, at + 8 + len));
    at += 8 + len;
  }
  return { stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

/** Polls `check` until it holds; fails with `what` after WAIT_MS. */
async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function untilAsync(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A program on a terminal of its own (script(1) makes it), typed into as a user would: each
 * `type` waits for what the screen should show first.
 */
class Terminal {
  private readonly child: ChildProcessWithoutNullStreams;
  screen = "";
  readonly exited: Promise<number | null>;

  constructor(command: string, env: NodeJS.ProcessEnv) {
    this.child = spawn("script", ["-qfec", command, "/dev/null"], { env: { ...process.env, ...env } });
    this.child.stdout.on("data", (d: Buffer) => {
      this.screen += d.toString();
    });
    this.child.stderr.on("data", (d: Buffer) => {
      this.screen += d.toString();
    });
    this.exited = new Promise((resolve) => this.child.on("close", (code) => resolve(code)));
  }

  async waitFor(pattern: RegExp): Promise<void> {
    await until(`${pattern} on the terminal; it shows:\n${this.screen}`, () => pattern.test(this.screen));
  }

  type(text: string): void {
    this.child.stdin.write(text);
  }

  kill(): void {
    this.child.kill("SIGKILL");
  }
}

interface Hijacked {
  status: number;
  contentType: string | undefined;
  socket: Socket;
  /** everything received after the response head so far */
  received: Buffer[];
  /** settles when the server ends the stream */
  ended: Promise<Buffer>;
}

describe("container attach and stdin", {
  skip: hasDocker ? false : "the docker CLI is not installed",
}, () => {
  let d: TestDaemon;
  const env = () => ({ DOCKER_HOST: d.host });

  before(async () => {
    d = await TestDaemon.start("attach");
    d.ok(["image", "busybox"]);
  });
  after(async () => {
    await d?.destroy();
  });

  /** The docker CLI with its input from a pipe. */
  const docker = (args: string[], input = ""): Promise<Run> =>
    new Promise((resolve, reject) => {
      const child = spawn("docker", args, { env: { ...process.env, ...env() } });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (b) => {
        stdout += b;
      });
      child.stderr.on("data", (b) => {
        stderr += b;
      });
      child.on("error", reject);
      child.on("close", (status) => resolve({ stdout, stderr, status }));
      child.stdin.end(input);
    });

  const state = async (name: string) =>
    (await d.api("GET", `/containers/${name}/json`)).body as {
      State: { Status: string; ExitCode: number; Pid: number };
      Config: { Tty: boolean; OpenStdin: boolean; StdinOnce: boolean };
    };

  const hijack = (path: string) =>
    new Promise<Hijacked>((resolve, reject) => {
      const req = request({
        socketPath: d.socket,
        method: "POST",
        path,
        headers: { Connection: "Upgrade", Upgrade: "tcp" },
      });
      /** `from` yields the stream: the socket after a 101, the response's body otherwise (an error). */
      const open = (
        status: number,
        contentType: string | undefined,
        socket: Socket,
        from: Readable,
        head: Buffer,
      ) => {
        const received = head.length > 0 ? [head] : [];
        from.on("data", (b: Buffer) => received.push(b));
        const ended = new Promise<Buffer>((done) => from.on("end", () => done(Buffer.concat(received))));
        resolve({ status, contentType, socket, received, ended });
      };
      req.on("upgrade", (res, socket: Socket, head: Buffer) =>
        open(res.statusCode ?? 0, res.headers["content-type"], socket, socket, head),
      );
      req.on("response", (res) =>
        open(res.statusCode ?? 0, res.headers["content-type"], res.socket as Socket, res, Buffer.alloc(0)),
      );
      req.on("error", reject);
      req.end();
    });

  const text = (h: Hijacked) => Buffer.concat(h.received).toString();

  it("docker run -i: piped stdin, stdout and stderr apart, the exit status", async () => {
    const r = await docker(["run", "-i", "--rm", "busybox", "sh"], "echo hi; echo oops >&2; exit 3\n");
    assert.equal(r.stdout, "hi\n", r.stderr);
    assert.equal(r.stderr, "oops\n");
    assert.equal(r.status, 3);
    const fg = await docker(["run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 4"]);
    assert.deepEqual(fg, { stdout: "out\n", stderr: "err\n", status: 4 });
    assert.equal((await docker(["ps", "-aq"])).stdout, "", "--rm removed both");
  });

  it("docker run -it: a shell on the container's own terminal, its exit status", async () => {
    const t = new Terminal("docker run -it --rm --name it1 busybox sh", env());
    try {
      await t.waitFor(/# /);
      const info = await state("it1");
      assert.deepEqual([info.Config.Tty, info.Config.OpenStdin, info.Config.StdinOnce], [true, true, true]);
      t.type("tty; echo TERM=$TERM; echo $((6*7))\r");
      await t.waitFor(/\n42\r?\n/);
      assert.match(t.screen, /\/dev\/pts\/0\r\n/);
      assert.match(t.screen, /TERM=xterm/);
      // ^C reaches the shell's foreground job, not the shell.
      t.type("sleep 60\r");
      await untilAsync(
        "sleep to run",
        async () => (await docker(["exec", "it1", "pidof", "sleep"])).status === 0,
      );
      t.type("\x03");
      t.type("echo status=$?\r");
      await t.waitFor(/status=130/);
      t.type("exit 5\r");
      assert.equal(await t.exited, 5, t.screen);
    } finally {
      t.kill();
    }
  });

  it("docker run -itd, then docker attach (detached with ctrl-p ctrl-q), docker exec -it and docker logs", async () => {
    const run = await docker(["run", "-itd", "--name", "c1", "busybox", "sh"]);
    assert.equal(run.status, 0, run.stderr);
    assert.equal((await state("c1")).State.Status, "running", "the shell waits on its terminal");

    const attach = new Terminal("docker attach c1", env());
    try {
      // Typed before the CLI reads: the terminal keeps it until then.
      attach.type("\r");
      await attach.waitFor(/# /);
      attach.type("echo attached $((6*7))\r");
      await attach.waitFor(/attached 42/);
      attach.type("\x10\x11");
      await attach.exited;
    } finally {
      attach.kill();
    }
    assert.equal((await state("c1")).State.Status, "running", "detaching leaves it running");

    const exec = new Terminal("docker exec -it c1 sh -c 'tty; hostname; exit 2'", env());
    assert.equal(await exec.exited, 2, exec.screen);
    assert.match(exec.screen, /\/dev\/pts\/1\r\n[0-9a-f]{12}\r\n/);

    const logs = await docker(["logs", "c1"]);
    assert.match(logs.stdout, /attached 42\r\n/);
    // A frame header of stream 1 would start with these bytes.
    assert.ok(!logs.stdout.includes("\x01\x00\x00\x00"), "a TTY's log is raw, not multiplexed");
  });

  it("hijacked attach: resize, detach keys, and clear errors", async () => {
    assert.equal((await docker(["run", "-itd", "--name", "c2", "busybox", "sh"])).status, 0);
    const h = await hijack("/containers/c2/attach?stream=1&stdin=1&stdout=1&stderr=1&detachKeys=ctrl-a,x");
    assert.equal(h.status, 101);
    assert.equal(h.contentType, "application/vnd.docker.raw-stream");
    assert.equal((await d.api("POST", "/containers/c2/resize?h=40&w=120")).status, 200);
    h.socket.write("stty size\r");
    await until("the new size", () => /40 120/.test(text(h)));
    // A lone ctrl-a is passed on once the next key shows it does not start the sequence.
    h.socket.write('read line; echo "$line" | od -c\r');
    await until("read to wait", () => /od -c\r\n/.test(text(h)));
    h.socket.write("\x01y\r");
    await until("ctrl-a passed on", () => /001 {3}y/.test(text(h)));
    h.socket.write("\x01x");
    await h.ended;
    assert.equal((await state("c2")).State.Status, "running");

    const bad = await hijack("/containers/c2/attach?stream=1&stdin=1&stdout=1&detachKeys=ctrl-1");
    assert.equal(bad.status, 400);
    assert.match((await bad.ended).toString(), /Invalid detach keys/);
    const none = await hijack("/containers/c2/attach?stream=1");
    assert.equal(none.status, 400);
    assert.equal((await d.api("POST", "/containers/c2/resize?h=x&w=1")).status, 400);
    assert.equal((await d.api("POST", "/containers/nope/resize?h=1&w=1")).status, 404);
    assert.equal((await docker(["stop", "-t", "0", "c2"])).status, 0);
    const stopped = await d.api("POST", "/containers/c2/resize?h=1&w=1");
    assert.equal(stopped.status, 409, stopped.text);
  });

  it("docker start -ai runs a created container with the client's input", async () => {
    assert.equal((await docker(["create", "-i", "--name", "s1", "busybox", "sh"])).status, 0);
    const r = await docker(["start", "-ai", "s1"], "echo started; exit 6\n");
    assert.equal(r.stdout, "started\n", r.stderr);
    assert.equal(r.status, 6);
    const again = await docker(["start", "-ai", "s1"], "echo again\n");
    assert.equal(again.stdout, "again\n", again.stderr);
    assert.equal(again.status, 0);
  });

  it("a non-interactive container's output is followed from its log, its input ignored", async () => {
    const run = await docker(["run", "-d", "--name", "d1", "busybox", "sh", "-c", "echo first; sleep 60"]);
    assert.equal(run.status, 0, run.stderr);
    await untilAsync("the log", async () => (await docker(["logs", "d1"])).stdout === "first\n");
    const h = await hijack("/containers/d1/attach?logs=1&stream=0&stdin=1&stdout=1&stderr=1");
    assert.equal(h.status, 101);
    assert.equal(h.contentType, "application/vnd.docker.multiplexed-stream");
    h.socket.write("ignored\n");
    assert.equal(demux(await h.ended).stdout, "first\n");
  });

  it("interactive containers outlive a daemon restart, terminal and stdin included", async () => {
    assert.equal((await docker(["run", "-itd", "--name", "r1", "busybox", "sh"])).status, 0);
    assert.equal((await docker(["run", "-di", "--name", "r2", "busybox", "sh"])).status, 0);
    const before1 = (await state("r1")).State.Pid;
    await d.kill();
    await d.spawnDaemon();
    assert.equal((await state("r1")).State.Pid, before1);

    const tty = await hijack("/containers/r1/attach?stream=1&stdin=1&stdout=1");
    tty.socket.write("echo back $((1+1))\r");
    await until("the shell's answer", () => /back 2/.test(text(tty)));
    tty.socket.write("\x10\x11");
    await tty.ended;

    const pipe = await hijack("/containers/r2/attach?stream=1&stdin=1&stdout=1&stderr=1");
    pipe.socket.write("echo two; echo three >&2\n");
    await until("the shell's answer", () => demux(Buffer.concat(pipe.received)).stderr === "three\n");
    pipe.socket.write("exit 9\n");
    assert.deepEqual(demux(await pipe.ended), { stdout: "two\n", stderr: "three\n" });
    const wait = await d.api("POST", "/containers/r2/wait");
    assert.deepEqual(wait.body, { StatusCode: 9, Error: null });
  });
});
